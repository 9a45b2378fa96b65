//! Talking to Civitai: what the user asked for ([`target`]), the JSON Civitai answers with
//! ([`wire`], parsed leniently), the client that sends requests and the failure states it
//! recognises ([`ApiError`]), and the lookups that tell what a local file is ([`identify`]). What this relies on about the real API is written down in
//! `docs/civitai-api.md`.

mod client;
mod error;
pub mod identify;
pub mod target;
pub mod wire;

pub use client::{ApiClient, ApiOptions, MIN_PAGE_LIMIT, ModelsPage, PAGE_LIMIT, WithRaw};
pub use error::{ApiError, classify_failure};
