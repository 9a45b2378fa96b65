//! civitai-dl: a resumable, verified downloader for Civitai models, previews and metadata.
//!
//! The pipeline, in the order data flows through it:
//!
//! ```text
//! target (ids, URLs, AIR, creators, lists) -> api (metadata, cursors) -> plan (files and paths)
//!   -> scheduler (drivers) -> download (resolve, range, validate, stream + hash, verify, rename)
//!   -> state (what is done)        limiter + retry stand in front of every request
//! ```

pub mod cli;
pub mod config;

pub mod api;
pub mod download;
pub mod limiter;
pub mod models;
pub mod naming;
pub mod plan;
pub mod progress;
pub mod report;
pub mod retry;
pub mod scheduler;
pub mod state;
pub mod target;

pub mod app;
pub mod fake_server;
