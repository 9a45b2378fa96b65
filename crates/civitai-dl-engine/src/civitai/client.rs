//! The Civitai API client: every request goes through the shared rate limiter and the one retry
//! policy, and every failure state Civitai really produces becomes its own [`ApiError`].
//!
//! Rules learnt from the real API (see `docs/civitai-api.md`): the key travels only in the
//! `Authorization` header and only to API hosts (the by-hash batch POSTs included); the User-Agent is honest (a browser-like one turns
//! errors into HTML redirects); bodies are checked before they are parsed, because maintenance and
//! Cloudflare pages arrive as HTML even under status 200; listings use cursors, never deep page
//! numbers; the download route is resolved without following its redirect, so the signed storage
//! URL can be reused within a run and the key can never reach the storage host.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::civitai::wire::{Me, Model, ModelVersion, Page};
use crate::civitai::{ApiError, classify_failure};
use crate::http::limiter::RateLimiter;
use crate::http::retry::{RetryPolicy, Tried, retry_after};
use crate::http::{POOL_IDLE_TIMEOUT, SignedUrl, client_builder, header, host_of, snippet};
use crate::lock;
use crate::observe::{Attempt, Operation, Reporter, announce, requests};

/// Page size for listings: the API's maximum.
pub const PAGE_LIMIT: u32 = 100;
/// The smallest page a listing shrinks to when pages keep failing.
pub const MIN_PAGE_LIMIT: u32 = 10;
/// Error bodies are small; an HTML page is read no further than this.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// A page of 100 models with their versions runs to a few MB; anything past this is not an API
/// answer.
const MAX_JSON_BODY_BYTES: usize = 256 * 1024 * 1024;

/// A decoded object plus the JSON it came from (written verbatim into `.civitai.info`).
#[derive(Clone, Debug)]
pub struct WithRaw<T> {
    /// The typed view.
    pub value: T,
    /// The JSON as Civitai sent it.
    pub raw: Value,
}

/// One page of a model listing.
#[derive(Debug)]
pub struct ModelsPage {
    /// The models on it that could be read.
    pub models: Vec<WithRaw<Model>>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
    /// The page size that worked (smaller than asked when bigger pages kept failing).
    pub limit: u32,
    /// `nextPage` said more follow, without a cursor to get there.
    more_without_cursor: bool,
}

/// The client. Cheap to share behind an `Arc`.
pub struct ApiClient {
    http: reqwest::Client,
    hosts: Vec<String>,
    current_host: AtomicUsize,
    api_key: Option<String>,
    limiter: Arc<RateLimiter>,
    retry: RetryPolicy,
    cancel: CancellationToken,
    served: Mutex<BTreeMap<String, u64>>,
    reporter: Arc<dyn Reporter>,
    /// Bounds API calls in flight (metadata and download resolves alike) to the configured
    /// concurrency; 1 on sequential runs.
    in_flight: tokio::sync::Semaphore,
    /// The host refused `POST /by-hash` as an unknown route once, so lookups go through
    /// `/by-hash/ids` from then on (see `identify`).
    pub(super) by_hash_batch_refused: AtomicBool,
}

/// What [`ApiClient::new`] needs.
pub struct ApiOptions {
    /// Primary base URL, then fallbacks.
    pub hosts: Vec<String>,
    /// API key, if any.
    pub api_key: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout for API calls.
    pub request_timeout: Duration,
    /// API calls that can be in flight at once (the keep-alive pool is sized to it too).
    pub connections: usize,
}

impl ApiClient {
    /// Build a client sharing `limiter`, using `retry`, stopping retries when `cancel` fires and
    /// reporting every attempt to `reporter`.
    pub fn new(
        options: ApiOptions,
        limiter: Arc<RateLimiter>,
        retry: RetryPolicy,
        cancel: CancellationToken,
        reporter: Arc<dyn Reporter>,
    ) -> Result<ApiClient, reqwest::Error> {
        let http = client_builder()
            // The download route's redirect is read, not followed: see `resolve_download`.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_max_idle_per_host(options.connections.max(1))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()?;
        Ok(ApiClient {
            http,
            hosts: options.hosts,
            current_host: AtomicUsize::new(0),
            api_key: options.api_key,
            limiter,
            retry,
            cancel,
            served: Mutex::new(BTreeMap::new()),
            reporter,
            in_flight: tokio::sync::Semaphore::new(options.connections.max(1)),
            by_hash_batch_refused: AtomicBool::new(false),
        })
    }

    /// Whether a key was given.
    pub fn has_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// How many requests each host answered, for the summary.
    pub fn served_by_host(&self) -> BTreeMap<String, u64> {
        lock(&self.served).clone()
    }

    /// `GET /api/v1/models/{id}`.
    pub async fn model(&self, id: u64) -> Result<WithRaw<Model>, ApiError> {
        self.get_json(&format!("/api/v1/models/{id}")).await
    }

    /// `GET /api/v1/model-versions/{id}`.
    pub async fn version(&self, id: u64) -> Result<WithRaw<ModelVersion>, ApiError> {
        self.get_json(&format!("/api/v1/model-versions/{id}")).await
    }

    /// One page of a creator's models, starting at `cursor` (the first page without one).
    /// Without `include_nsfw` the API's default SFW-only filter applies.
    pub async fn creator_page(
        &self,
        username: &str,
        include_nsfw: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ModelsPage, ApiError> {
        let mut filter = format!("username={}", encode(username));
        if include_nsfw {
            filter.push_str("&nsfw=true");
        }
        let page = self.models_page(&filter, cursor, limit).await?;
        if page.next.is_none() && page.more_without_cursor {
            tracing::warn!(
                "creator {username}: Civitai says more pages follow but gives no cursor; the \
                 listing may be incomplete"
            );
        }
        Ok(page)
    }

    /// The models with these ids (at most [`PAGE_LIMIT`]), in one request instead of one each:
    /// `GET /api/v1/models?ids=…&nsfw=true`. Ids the answer leaves out (unknown, hidden) are
    /// simply missing; the caller asks for them alone to learn why.
    pub async fn models_by_ids(&self, ids: &[u64]) -> Result<Vec<WithRaw<Model>>, ApiError> {
        let joined: Vec<String> = ids.iter().map(u64::to_string).collect();
        // nsfw=true: without it the listing drops every model and version that is not PG.
        let filter = format!("ids={}&nsfw=true", joined.join(","));
        let mut models = Vec::new();
        let mut cursor: Option<String> = None;
        // Never more pages than ids: a cursor that keeps coming back cannot loop here.
        for _ in 0..=ids.len() {
            let page = self
                .models_page(&filter, cursor.as_deref(), PAGE_LIMIT)
                .await?;
            models.extend(page.models);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(models)
    }

    /// One page of `GET /api/v1/models?<filter>`. Each retry asks for half as many models as
    /// the attempt before, down to [`MIN_PAGE_LIMIT`]: a page of 100 models with all their
    /// versions is the request most likely to outlast a gateway's timeout.
    async fn models_page(
        &self,
        filter: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ModelsPage, ApiError> {
        let asked = std::sync::atomic::AtomicU32::new(limit);
        let path = |attempt: usize| {
            let shrunk =
                (limit >> attempt.saturating_sub(1).min(31)).max(MIN_PAGE_LIMIT.min(limit));
            asked.store(shrunk, Ordering::Relaxed);
            let mut query = format!("/api/v1/models?{filter}&limit={shrunk}");
            if let Some(cursor) = cursor {
                query.push_str(&format!("&cursor={}", encode(cursor)));
            }
            query
        };
        let page: WithRaw<Page<Value>> = self.get_json_at(&path).await?;
        let mut models = Vec::new();
        for raw in page.value.items {
            // One odd model must not sink the whole listing; it is reported, not dropped
            // silently.
            match Model::deserialize(&raw) {
                Ok(value) => models.push(WithRaw { value, raw }),
                Err(error) => tracing::warn!(
                    "skipped model {} that could not be read: {error}",
                    raw.get("id").cloned().unwrap_or_default()
                ),
            }
        }
        // Short pages that still carry a cursor are normal on Civitai and do not end the walk.
        let metadata = page.value.metadata;
        let next_page = metadata.next_page.as_deref();
        let next = metadata
            .next_cursor
            .clone()
            .filter(|c| !c.is_empty())
            .or_else(|| next_page.and_then(cursor_of_next_page));
        Ok(ModelsPage {
            models,
            more_without_cursor: next.is_none() && next_page.is_some(),
            next,
            limit: asked.into_inner(),
        })
    }

    /// `GET /api/v1/me`: whether the key is valid. Civitai silently treats a bad key as
    /// anonymous everywhere else, so this is the only place a typo shows.
    pub async fn me(&self) -> Result<Me, ApiError> {
        match self.get_json::<Me>("/api/v1/me").await {
            Ok(me) => Ok(me.value),
            Err(ApiError::LoginRequired | ApiError::Rejected { status: 401, .. }) => {
                Err(ApiError::KeyRejected)
            }
            Err(other) => Err(other),
        }
    }

    /// Ask the download route for a signed storage URL. Every call counts against Civitai's
    /// download quota, so callers reuse the URL while the storage host accepts it.
    pub async fn resolve_download(
        &self,
        version_id: u64,
        file_id: Option<u64>,
    ) -> Result<SignedUrl, ApiError> {
        let mut path = format!("/api/download/models/{version_id}");
        if let Some(file_id) = file_id {
            path.push_str(&format!("?fileId={file_id}"));
        }
        match self.send(&path, None, Expect::Redirect).await? {
            Reply::Redirect(location) => {
                self.reporter.on_resolve();
                Ok(SignedUrl::direct(location))
            }
            Reply::Json(_) => unreachable!("send honours Expect::Redirect"),
        }
    }

    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<WithRaw<T>, ApiError> {
        self.get_json_at(&|_| path.to_string()).await
    }

    /// [`Self::get_json`] at a path that may change from one attempt to the next.
    async fn get_json_at<T: DeserializeOwned>(
        &self,
        path: &(dyn Fn(usize) -> String + Sync),
    ) -> Result<WithRaw<T>, ApiError> {
        self.json_at(path, None).await
    }

    /// POST `body` (JSON text) to `path` and decode the JSON answer: the by-hash batch routes,
    /// which only read, so they are retried like any GET.
    pub(super) async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &str,
    ) -> Result<WithRaw<T>, ApiError> {
        self.json_at(&|_| path.to_string(), Some(body)).await
    }

    /// A GET, or a POST of `body`, whose answer is JSON to decode as `T`.
    async fn json_at<T: DeserializeOwned>(
        &self,
        path: &(dyn Fn(usize) -> String + Sync),
        body: Option<&str>,
    ) -> Result<WithRaw<T>, ApiError> {
        let Reply::Json(text) = self.send_at(path, body, Expect::Json).await? else {
            unreachable!("send honours Expect::Json");
        };
        let raw: Value = serde_json::from_str(&text).map_err(|e| ApiError::Decode {
            message: e.to_string(),
        })?;
        let value = T::deserialize(&raw).map_err(|e| ApiError::Decode {
            message: e.to_string(),
        })?;
        Ok(WithRaw { value, raw })
    }

    /// Send a GET (or, with a `body`, a POST of that JSON) to the current host with retries,
    /// moving on to the next host when one keeps failing with connection errors or 5xx. The
    /// answer is read and checked inside each attempt, so a maintenance page under status 200 is
    /// retried like any other transient failure.
    async fn send(
        &self,
        path: &str,
        body: Option<&str>,
        expect: Expect,
    ) -> Result<Reply, ApiError> {
        self.send_at(&|_| path.to_string(), body, expect).await
    }

    /// [`Self::send`] where attempt `n` (1-based) asks for `path(n)`.
    async fn send_at(
        &self,
        path: &(dyn Fn(usize) -> String + Sync),
        body: Option<&str>,
        expect: Expect,
    ) -> Result<Reply, ApiError> {
        loop {
            let index = self.current_host.load(Ordering::Relaxed);
            let host = &self.hosts[index.min(self.hosts.len() - 1)];
            let url_of = |attempt: usize| {
                let path = path(attempt);
                Url::parse(&format!("{host}{path}")).map_err(|e| ApiError::Rejected {
                    status: 0,
                    message: format!("bad URL {host}{path}: {e}"),
                })
            };
            let url = url_of(1)?;
            let Tried { result, attempts } = self
                .retry
                .run(
                    &self.cancel,
                    |attempt| async move { self.attempt(url_of(attempt)?, body, expect).await },
                    announce(
                        self.reporter.as_ref(),
                        format!(
                            "{} {}{}",
                            if body.is_some() { "POST" } else { "GET" },
                            host_of(&url),
                            url.path()
                        ),
                    ),
                )
                .await;
            self.reporter.on_operation_done(result.is_ok(), attempts);
            match result.map_err(|error| quota_in_other_words(error, expect, attempts)) {
                Ok(reply) => {
                    *lock(&self.served).entry(host_of(&url)).or_default() += 1;
                    return Ok(reply);
                }
                Err(error)
                    if error.warrants_failover()
                        && index + 1 < self.hosts.len()
                        && !self.cancel.is_cancelled() =>
                {
                    let _ = self.current_host.compare_exchange(
                        index,
                        index + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tracing::warn!(
                        "{} keeps failing ({error}); switching to fallback {}",
                        host_of(&url),
                        self.hosts[index + 1]
                    );
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One attempt: wait for the limiter, exchange, and report how it went.
    async fn attempt(
        &self,
        url: Url,
        body: Option<&str>,
        expect: Expect,
    ) -> Result<Reply, ApiError> {
        let permit = tokio::select! {
            () = self.cancel.cancelled() => None,
            permit = self.in_flight.acquire() => permit.ok(),
        };
        if permit.is_none() || !self.limiter.acquire(&self.cancel).await {
            return Err(ApiError::Cancelled);
        }
        let started = Instant::now();
        // An answer can take up to the read timeout to arrive; Ctrl-C does not wait for it.
        let result = tokio::select! {
            () = self.cancel.cancelled() => return Err(ApiError::Cancelled),
            result = self.exchange(url, body, expect) => result,
        };
        let latency = started.elapsed();
        let answered = !matches!(result, Err(ApiError::Network { .. }));
        if answered {
            let throttled = matches!(result, Err(ApiError::RateLimited { .. }));
            self.limiter.observe(latency, throttled);
        }
        // A 429 is the server pacing us, which the limiter handles; it says nothing about
        // whether concurrency is failing, so the failsafe does not count it.
        let attempt = match &result {
            Err(ApiError::RateLimited { .. }) => None,
            other => Attempt::judge(other, ApiError::is_timeout),
        };
        self.reporter
            .on_attempt(Operation::Api, answered.then_some(latency), attempt);
        result
    }

    /// Send, read the answer, and turn anything but the expected kind of success into an
    /// [`ApiError`].
    async fn exchange(
        &self,
        url: Url,
        body: Option<&str>,
        expect: Expect,
    ) -> Result<Reply, ApiError> {
        let mut request = match body {
            Some(body) => self
                .http
                .post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_owned()),
            None => self.http.get(url.clone()),
        };
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let method = if body.is_some() { "POST" } else { "GET" };
        let started = Instant::now();
        let response = request.send().await.map_err(|error| {
            let error = network_error(error);
            requests::no_answer(method, &requests::api_url(&url), &error, started.elapsed());
            error
        })?;
        let status = response.status();
        requests::headers(&requests::api_url(&url), response.headers());
        if status.is_success() || status.is_redirection() {
            let reply = read_reply(&url, response, expect).await;
            let (body, redirect) = match &reply {
                Ok(Reply::Json(text)) => (Some(text.len()), None),
                Ok(Reply::Redirect(to)) => (None, Some(to)),
                Err(_) => (None, None),
            };
            requests::api_answer(
                method,
                &url,
                status.as_u16(),
                body,
                redirect,
                started.elapsed(),
            );
            return reply;
        }
        let retry_after = retry_after(response.headers());
        // The status already says what failed; a body lost on the way only costs the details.
        let body = read_limited(response, MAX_ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
        requests::api_answer(
            method,
            &url,
            status.as_u16(),
            Some(body.len()),
            None,
            started.elapsed(),
        );
        let error = classify_failure(status, retry_after, &body);
        if let ApiError::RateLimited {
            retry_after: Some(wait),
        }
        | ApiError::Server {
            retry_after: Some(wait),
            ..
        } = &error
        {
            self.limiter.pause_for(*wait);
        }
        Err(error)
    }
}

/// What kind of success a request expects.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A JSON body.
    Json,
    /// A redirect (the download route).
    Redirect,
}

/// A successful answer, read.
enum Reply {
    /// The body, checked to look like JSON.
    Json(String),
    /// The absolute redirect target.
    Redirect(Url),
}

/// Read a 2xx/3xx answer as `expect` says. An HTML body (maintenance, Cloudflare challenge, login
/// page) is [`ApiError::NotJson`], which is retried.
async fn read_reply(
    url: &Url,
    response: reqwest::Response,
    expect: Expect,
) -> Result<Reply, ApiError> {
    let status = response.status();
    let content_type = content_type(&response);
    if let Expect::Redirect = expect
        && status.is_redirection()
    {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|loc| url.join(loc).ok());
        if let Some(location) = location {
            return Ok(Reply::Redirect(location));
        }
    }
    let text = read_limited(response, MAX_JSON_BODY_BYTES).await?;
    if status.is_success() && looks_like_json(&content_type, &text) {
        if let Expect::Json = expect {
            return Ok(Reply::Json(text));
        }
    } else if content_type.contains("html") || text.trim_start().starts_with('<') {
        return Err(ApiError::NotJson {
            status: status.as_u16(),
            content_type,
            snippet: snippet(&text),
        });
    }
    Err(ApiError::Rejected {
        status: status.as_u16(),
        message: match expect {
            Expect::Json => format!("unexpected answer: {}", snippet(&text)),
            Expect::Redirect => "the download route answered without a redirect to the file".into(),
        },
    })
}

/// The download route's quota 429 is recognised by Civitai's wording; a proxy in front of it
/// words it otherwise. A 429 on the download route without `Retry-After` that every retry met
/// again behaves like the quota whatever it says, and retrying it file after file would only keep
/// a stopped run busy: it is taken for the quota (`docs/civitai-api.md#telling-the-429s-apart`).
fn quota_in_other_words(error: ApiError, expect: Expect, attempts: u32) -> ApiError {
    match error {
        ApiError::RateLimited { retry_after: None }
            if matches!(expect, Expect::Redirect) && attempts > 1 =>
        {
            ApiError::QuotaExhausted {
                message: format!(
                    "the download route answered 429 without Retry-After {attempts} times in a row"
                ),
            }
        }
        other => other,
    }
}

/// The `cursor` of a `nextPage` URL, for pages that give only that (the API doc says to follow
/// either).
fn cursor_of_next_page(next_page: &str) -> Option<String> {
    let url = Url::parse(next_page).ok()?;
    url.query_pairs()
        .find(|(key, _)| key == "cursor")
        .map(|(_, value)| value.into_owned())
        .filter(|c| !c.is_empty())
}

fn network_error(error: reqwest::Error) -> ApiError {
    let host = error.url().map(host_of).unwrap_or_else(|| "?".into());
    // reqwest's Display prints the whole URL, query included: keep only the host.
    ApiError::Network {
        host,
        source: error.without_url(),
    }
}

fn content_type(response: &reqwest::Response) -> String {
    header(response, CONTENT_TYPE).unwrap_or_else(|| "no content type".into())
}

fn looks_like_json(content_type: &str, body: &str) -> bool {
    let first = body.trim_start().chars().next();
    !content_type.contains("html") && matches!(first, Some('{') | Some('['))
}

/// Read a body up to `limit` bytes; a body cut off mid-way is a (retryable) network error.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<String, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(network_error)? {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

pub(super) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_of_a_next_page_url() {
        assert_eq!(
            cursor_of_next_page(
                "https://civitai.com/api/v1/models?limit=100&cursor=75363%7C932023%7C257749"
            )
            .as_deref(),
            Some("75363|932023|257749")
        );
        assert_eq!(
            cursor_of_next_page("https://civitai.com/api/v1/models?page=2"),
            None
        );
        assert_eq!(cursor_of_next_page("not a url"), None);
    }

    #[test]
    fn json_sniffing_and_snippets() {
        assert!(looks_like_json("application/json", " {\"a\":1}"));
        assert!(!looks_like_json("text/html", "{}"));
        assert!(!looks_like_json("application/json", "<!DOCTYPE html>"));
    }
}
