//! civitai-dl's view of a local model library: which model files are where, what their hashes
//! are, and whether they still hold what Civitai published. Libraries are large (a terabyte,
//! tens of thousands of files, renamed and moved by other tools), so every hash is read once and
//! remembered, and a rescan reads only what changed.
//!
//! The pipeline, in the order data flows through it:
//!
//! ```text
//! comfy (roots from extra_model_paths.yaml) -> walk (roots -> model files, loops cut)
//!   -> index (cached hash still valid?) -> digest (one read pass: SHA-256 + AutoV3)
//!   -> index (committed per file; vanished rows pruned) -> scan (the driver, hashing pool)
//!   -> sidecars (unsettled rows a sidecar proves -> index)
//!   -> identify (the rest -> batched Civitai lookups -> index) -> verify (verdict against
//!   the sidecar or the API, quarantine)
//! ```
//!
//! Like the engine it prints nothing and parses no command line: the binary passes option structs
//! and renders the events of [`scan::ScanReporter`].

#![deny(clippy::print_stdout, clippy::print_stderr)]

/// Scan roots from ComfyUI's `extra_model_paths.yaml`.
pub mod comfy;

/// Roots to model files: symlink loops cut, hidden and own files skipped, sorted.
pub mod walk;

/// One read pass per file: SHA-256 and AutoV3, with page-cache hints.
pub mod digest;

/// The persistent hash cache (SQLite).
pub mod index;

/// The scan driver: walk, cache, hashing pool, prune, events.
pub mod scan;

/// Identification from the sidecars other tools wrote, checked against the file's hash.
pub mod sidecars;

/// Civitai lookups of unsettled rows, recorded per batch.
pub mod identify;

/// Verdicts against the published hashes, and quarantine.
pub mod verify;
