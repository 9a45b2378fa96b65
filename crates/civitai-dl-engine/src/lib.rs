//! The engine of civitai-dl: everything that decides what to fetch and fetches it, resumable and
//! verified. It prints nothing and parses no command line: the `civitai-dl` binary hands it plain
//! option structs and subscribes to its events ([`observe::Reporter`]).
//!
//! The pipeline, in the order data flows through it, one folder a step:
//!
//! ```text
//! civitai::target (ids, URLs, AIR, creators, lists) -> civitai (client, wire types, error states)
//!   -> plan (versions and files to fetch, safe names, folder layouts)
//!   -> run (the unit of work per file; sequential | concurrent driver; failsafe hand-over)
//!   -> fetch (resolve, range, validate, stream + hash, verify, rename) -> state (what is done)
//!   -> sidecar (what other apps read beside a verified file: .civitai.info, .json, previews)
//! http (client builder, signed URLs, limiter, retry) stands in front of every request;
//! observe (metrics, monitor, rates, summary data) hears every step; fs holds the atomic writes.
//! ```
//!
//! What the engine relies on about the real Civitai is written down in `docs/civitai-api.md`;
//! why it is built stability-first, in `docs/design.md`.

/// Every environment variable civitai-dl reads.
pub mod env;

/// Transport shared by every request: client builder, signed URLs, rate limiter, retry policy.
pub mod http;

/// Talking to Civitai: targets, wire types, the API client and its failure states.
pub mod civitai;

/// From targets to files and paths: selection, safe names, folder layouts.
pub mod plan;

/// The unit of work per file and its two drivers, with the failsafe hand-over between them.
pub mod run;

/// One file, complete and verified, or a resumable `.part`: one stream or segments.
pub mod fetch;

/// The state file that lets an interrupted run continue.
pub mod state;

/// The metadata files and previews other apps read beside a verified model file.
pub mod sidecar;

/// What a run reports and who listens: the reporter trait, metrics, rates, monitor, summary data.
pub mod observe;

/// Atomic writes with their durability stated, and the small path helpers beside them.
pub mod fs;

/// Lock a mutex, recovering it if a task panicked while holding it: counters, the state and the
/// report stay meaningful, and one failed task must not wedge the whole run.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The case counts of the property tests.
#[cfg(test)]
mod props_config;
