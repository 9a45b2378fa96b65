//! End-to-end tests: the real `civitai-dl` binary against the offline fake Civitai.
//!
//! One integration-test binary (rather than one per file) so the crate and the helpers are built
//! once. Every test starts its own fake server and works in its own temporary folder, so the tests
//! run in parallel without seeing each other.

// `civitai-dl bench` exists only with the default `dev-tools` feature.
#[cfg(feature = "dev-tools")]
mod bench;
mod cli;
mod download;
mod errors;
mod identify;
mod monitor;
mod performance;
mod probes;
mod regressions;
mod reporting;
mod resume;
mod safety;
mod scan;
mod sidecars;
mod state;
mod strategy;
mod support;
mod terminal;
mod tls;
