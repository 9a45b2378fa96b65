//! Request-level log lines, for `-v` (one line per answer: method, host, path, status, bytes,
//! time; for a storage answer also one when its body ends) and `-vv` (the headers that explain a decision: content type and range, `Retry-After`).
//!
//! They go to their own tracing target, [`TARGET`], so the binary can turn them on with `-v`
//! without also turning on every other debug line, and leave them off by default: a 10,000-file
//! run makes 20,000 requests, which nobody wants in an ordinary log.
//!
//! What a line shows is chosen so it can never leak a credential: the API key travels in a
//! header and no header that carries it is logged; a signed storage URL is shown through
//! [`SignedUrl`]'s display (host and path, never its query); an API URL keeps only the query
//! parameters civitai-dl itself sets for listings, any other value is hidden.

use std::fmt::Display;
use std::time::Duration;

use reqwest::Url;

use crate::http::{SignedUrl, host_of};

/// The tracing target of every request line.
pub const TARGET: &str = "civitai_dl_engine::requests";

/// Query parameters of API calls whose values are shown: the ones civitai-dl sets to list and
/// batch models and to pick a file. Anything else (a `token` someone put in a base URL) is shown
/// as `name=…`.
const SHOWN_QUERY_KEYS: [&str; 9] = [
    "ids", "limit", "cursor", "nsfw", "page", "username", "types", "sort", "fileId",
];

/// An API URL as a request line shows it: host, path, and the listing parameters.
pub fn api_url(url: &Url) -> String {
    let mut shown = format!("{}{}", host_of(url), url.path());
    let mut pairs = url.query_pairs().peekable();
    if pairs.peek().is_some() {
        let query: Vec<String> = pairs
            .map(|(key, value)| {
                if SHOWN_QUERY_KEYS.contains(&key.as_ref()) {
                    format!("{key}={value}")
                } else {
                    format!("{key}=…")
                }
            })
            .collect();
        shown.push('?');
        shown.push_str(&query.join("&"));
    }
    shown
}

/// A storage URL as a request line shows it: host and path only.
pub fn storage_url(url: &SignedUrl) -> String {
    host_and_path(url.as_url())
}

/// Host and path, never the query: what a line may show of a URL that may be signed.
fn host_and_path(url: &Url) -> String {
    format!("{}{}", host_of(url), url.path())
}

/// An API answer to `method` arrived and was read: `body` bytes in `elapsed`; `redirect` is
/// where a redirect pointed (shown as host and path).
pub fn api_answer(
    method: &str,
    url: &Url,
    status: u16,
    body: Option<usize>,
    redirect: Option<&Url>,
    elapsed: Duration,
) {
    let body = body.map(|b| format!(", {b} B")).unwrap_or_default();
    let redirect = redirect
        .map(|to| format!(" to {}{}", host_of(to), to.path()))
        .unwrap_or_default();
    tracing::info!(
        target: TARGET,
        "{method} {} -> {status}{redirect}{body} in {}",
        api_url(url),
        millis(elapsed)
    );
}

/// A storage answer's head arrived: the status, the bytes it announces, and the time to it
/// ([`body_received`] tells what then arrived).
pub fn storage_answer(
    url: &SignedUrl,
    range: Option<&str>,
    status: u16,
    length: Option<u64>,
    elapsed: Duration,
) {
    let range = range.map(|r| format!(" (bytes={r})")).unwrap_or_default();
    let length = length
        .map(|l| format!(", {l} B to come"))
        .unwrap_or_default();
    tracing::info!(
        target: TARGET,
        "GET {}{range} -> {status}{length}, answered in {}",
        storage_url(url),
        millis(elapsed)
    );
}

/// A storage answer's body ended: `bytes` received in `elapsed`, and why it stopped early, if
/// it did. `url` is the answer's (signed) URL, shown as host and path.
pub fn body_received(url: &Url, bytes: u64, elapsed: Duration, broke: Option<&dyn Display>) {
    let secs = elapsed.as_secs_f64().max(0.001);
    let broke = broke.map(|why| format!("; then {why}")).unwrap_or_default();
    tracing::info!(
        target: TARGET,
        "GET {}: body {bytes} B in {} ({:.1} MB/s){broke}",
        host_and_path(url),
        millis(elapsed),
        bytes as f64 / 1e6 / secs
    );
}

/// A `method` request got no answer: what it was and why, in words.
pub fn no_answer(method: &str, shown: &str, cause: &dyn Display, elapsed: Duration) {
    tracing::info!(
        target: TARGET,
        "{method} {shown} -> no answer after {}: {cause}",
        millis(elapsed)
    );
}

/// The headers of an answer that explain what civitai-dl did with it (`-vv`). Only these are
/// shown: cookies and anything carrying a credential stay out of the log.
pub fn headers(shown: &str, headers: &reqwest::header::HeaderMap) {
    use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RETRY_AFTER};
    if !tracing::enabled!(target: TARGET, tracing::Level::DEBUG) {
        return;
    }
    let named: Vec<String> = [
        CONTENT_TYPE,
        CONTENT_LENGTH,
        CONTENT_RANGE,
        ETAG,
        RETRY_AFTER,
    ]
    .into_iter()
    .filter_map(|name| {
        let value = headers.get(&name)?.to_str().ok()?;
        Some(format!("{name}: {value}"))
    })
    .collect();
    tracing::debug!(target: TARGET, "  {shown}: {}", named.join("; "));
}

fn millis(elapsed: Duration) -> String {
    format!("{} ms", elapsed.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_keep_listing_parameters_and_hide_the_rest() {
        let url = Url::parse(
            "https://civitai.com/api/v1/models?ids=1,2&nsfw=true&token=SECRET&cursor=abc",
        )
        .unwrap();
        assert_eq!(
            api_url(&url),
            "civitai.com/api/v1/models?ids=1,2&nsfw=true&token=…&cursor=abc"
        );
        let plain = Url::parse("http://127.0.0.1:8080/api/v1/models/1").unwrap();
        assert_eq!(api_url(&plain), "127.0.0.1:8080/api/v1/models/1");
    }

    #[test]
    fn storage_urls_never_show_their_query() {
        let url = SignedUrl::direct(
            Url::parse("https://b2.civitai.com/file/x/y.safetensors?sig=SECRET&expires=1").unwrap(),
        );
        assert_eq!(storage_url(&url), "b2.civitai.com/file/x/y.safetensors");
        assert_eq!(
            host_and_path(url.as_url()),
            "b2.civitai.com/file/x/y.safetensors"
        );
    }
}
