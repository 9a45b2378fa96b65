//! HTTP plumbing shared by the API client and the storage transfers: one place sets TLS, the
//! User-Agent and keep-alive, and holds the request discipline (the rate limiter and the retry
//! policy) that stands in front of every request.
//!
//! The User-Agent is honest on purpose: Civitai answers browser-like agents with HTML challenge
//! pages instead of JSON errors (see `docs/civitai-api.md`).

use std::time::Duration;

use reqwest::Url;

mod cause;
pub mod limiter;
pub mod retry;
mod signed_url;

pub use cause::Cause;
pub use signed_url::SignedUrl;

/// The honest User-Agent every request carries.
pub const USER_AGENT: &str = concat!("civitai-dl/", env!("CARGO_PKG_VERSION"));

/// How much of an unexpected body an error message quotes.
const SNIPPET_CHARS: usize = 120;

/// A client builder with what every civitai-dl connection needs: the TLS provider (ring, chosen
/// for its short build; installed once per process) and the honest User-Agent.
pub fn client_builder() -> reqwest::ClientBuilder {
    static TLS: std::sync::Once = std::sync::Once::new();
    TLS.call_once(|| {
        // Fails only when another provider was installed first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder().user_agent(USER_AGENT)
}

/// The host (and port) of a URL: what error messages may show.
pub fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => "?".to_string(),
    }
}

/// A header of an answer, as text.
pub(crate) fn header(
    response: &reqwest::Response,
    name: reqwest::header::HeaderName,
) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The first characters of a body, on one line.
pub fn snippet(body: &str) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = flat.chars().take(SNIPPET_CHARS).collect();
    if flat.chars().count() > SNIPPET_CHARS {
        cut.push('…');
    }
    cut
}

/// Idle keep-alive connections are closed after this long.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_one_line_and_cut() {
        let long = "x ".repeat(200);
        assert!(snippet(&long).ends_with('…'));
        assert_eq!(snippet("a\n  b"), "a b");
    }
}
