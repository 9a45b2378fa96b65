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
//!   -> download (resolve, range, validate, stream + hash, verify, rename) -> state (what is done)
//! http (client builder, signed URLs, limiter, retry) stands in front of every request;
//! observe (metrics, monitor, rates, summary data) hears every step.
//! ```
//!
//! What the engine relies on about the real Civitai is written down in `docs/civitai-api.md`;
//! why it is built stability-first, in `docs/design.md`.

pub mod civitai;
pub mod download;
pub mod env;
pub mod http;
pub mod observe;
pub mod plan;
pub mod run;
pub mod segmented;
pub mod state;

/// Lock a mutex, recovering it if a task panicked while holding it: counters, the state and the
/// report stay meaningful, and one failed task must not wedge the whole run.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
