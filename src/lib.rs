//! civitai-dl: a resumable, verified downloader for Civitai models, previews and metadata.
//!
//! The pipeline, in the order data flows through it:
//!
//! ```text
//! target (ids, URLs, AIR, creators, lists) -> api (metadata, cursors) -> plan (files and paths)
//!   -> scheduler (sequential | concurrent driver; failsafe between them)
//!   -> download (resolve, range, validate, stream + hash, verify, rename) -> state (what is done)
//! limiter + retry stand in front of every request; metrics and progress observe every step.
//! ```
//!
//! The offline fake Civitai that tests, `demo`, `fake-server` and `bench` run against is the
//! `civitai-dl-fake` crate (`crates/civitai-dl-fake`): a dev-dependency, and behind the default
//! `dev-tools` feature for those three commands, so `--no-default-features` builds without them.

/// Command-line definition (clap types only).
pub mod cli;

/// Settings: defaults < config file < environment < command line.
pub mod config;

/// What the user asked for: ids, URLs, AIR URNs, creators, list files.
pub mod target;

/// Lenient serde models of Civitai's JSON.
pub mod models;

/// The Civitai API client: auth, error states, cursors, download resolves.
pub mod api;

/// The shared requests-per-second limit.
pub mod limiter;

/// The one retry policy for every request.
pub mod retry;

/// Safe file names and folder layouts.
pub mod naming;

/// From targets to files and paths.
pub mod plan;

/// The drivers: sequential and concurrent, running one unit of work.
pub mod scheduler;

/// Falls back from concurrent to sequential when requests go badly.
pub mod failsafe;

/// The unit of work: one file, complete and verified, or a resumable `.part`.
pub mod download;

/// Large files over several connections (experimental).
pub mod segmented;

/// The state file that lets an interrupted run continue.
pub mod state;

/// What a run measures.
pub mod metrics;

/// Samples memory and CPU, prints per-interval lines, raises alerts, writes the metrics file.
pub mod monitor;

/// Progress bars and the log writer that keeps them intact.
pub mod progress;

/// The final summary.
pub mod report;

/// `civitai-dl bench`: sequential against experimental on the fake server, A/B, soak.
#[cfg(feature = "dev-tools")]
pub mod bench;

/// The commands, from parsed arguments to an exit code.
pub mod app;

/// Lock a mutex, recovering it if a task panicked while holding it: counters, the state and the
/// report stay meaningful, and one failed task must not wedge the whole run.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
