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

/// Transport shared by every request: client builder, signed URLs, rate limiter, retry policy.
pub mod http;

/// Talking to Civitai: targets, wire types, the API client and its failure states.
pub mod civitai;

/// From targets to files and paths: selection, safe names, folder layouts.
pub mod plan;

/// The unit of work for one file and its two drivers, with the failsafe hand-over between them.
pub mod run;

/// The unit of work: one file, complete and verified, or a resumable `.part`.
pub mod download;

/// Large files over several connections (experimental).
pub mod segmented;

/// The state file that lets an interrupted run continue.
pub mod state;

/// What a run reports and who listens: the reporter trait, metrics, rates, monitor, summary data.
pub mod observe;

/// Progress bars, log lines and the final summary, for people.
pub mod ui;

/// `civitai-dl bench`: sequential against experimental on the fake server, A/B, soak.
#[cfg(feature = "dev-tools")]
pub mod bench;

/// The commands, from parsed arguments to an exit code.
pub mod commands;

/// Lock a mutex, recovering it if a task panicked while holding it: counters, the state and the
/// report stay meaningful, and one failed task must not wedge the whole run.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
