//! civitai-dl: a resumable, verified downloader for Civitai.
pub mod fake_server;
pub mod models;
pub mod naming;
pub mod state;
pub mod target;
