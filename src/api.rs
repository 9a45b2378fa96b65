//! The Civitai API client: every request goes through the shared rate limiter and the one retry
//! policy, and every failure state Civitai really produces becomes its own [`ApiError`].
//!
//! Rules learnt from the real API (see `shared/civitai-api.md`): the key travels only in the
//! `Authorization` header and only to API hosts; the User-Agent is honest (a browser-like one turns
//! errors into HTML redirects); bodies are checked before they are parsed, because maintenance and
//! Cloudflare pages arrive as HTML even under status 200; listings use cursors, never deep page
//! numbers; the download route is resolved without following its redirect, so the signed storage
//! URL can be reused within a run and the key can never reach the storage host.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::failsafe::Attempt;
use crate::limiter::RateLimiter;
use crate::lock;
use crate::metrics::Metrics;
use crate::models::{Me, Model, ModelVersion, Page, parse_error_body};
use crate::retry::{RetryClass, RetryPolicy, Retryable, announce, retry_after};

/// The honest User-Agent every request carries.
pub const USER_AGENT: &str = concat!("civitai-dl/", env!("CARGO_PKG_VERSION"));
/// Page size for listings: the API's maximum.
const PAGE_LIMIT: u32 = 100;
/// How much of an unexpected body an error message quotes.
const SNIPPET_CHARS: usize = 120;
/// Error bodies are small; an HTML page is read no further than this.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// A page of 100 models with their versions runs to a few MB; anything past this is not an API
/// answer.
const MAX_JSON_BODY_BYTES: usize = 256 * 1024 * 1024;

/// A failed API request, one variant per failure state Civitai really produces.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404.
    #[error("not found on Civitai ({message})")]
    NotFound {
        /// Civitai's message.
        message: String,
    },
    /// 401 on the download route: a login (API key) is required.
    #[error(
        "Civitai requires you to be logged in to download this: pass an API key with --api-key or \
         CIVITAI_API_KEY (create one at https://civitai.com/user/account)"
    )]
    LoginRequired,
    /// 401 from `/api/v1/me`: the key is invalid (Civitai would otherwise treat it as anonymous).
    #[error(
        "API key rejected by Civitai: check --api-key / CIVITAI_API_KEY, or create a new key at \
         https://civitai.com/user/account"
    )]
    KeyRejected,
    /// 403 "Early Access".
    #[error("in Early Access{}: it can be downloaded for free after that, or bought on civitai.com", deadline.as_ref().map(|d| format!(" until {d}")).unwrap_or_default())]
    EarlyAccess {
        /// When early access ends, as Civitai sent it.
        deadline: Option<String>,
    },
    /// 401 "disabled downloads".
    #[error("the creator has disabled downloads of this file (it can only be used on-site)")]
    DownloadsDisabled,
    /// Other 403s.
    #[error("access denied by Civitai: {message}")]
    Forbidden {
        /// Civitai's message.
        message: String,
    },
    /// 410.
    #[error("the model is archived and can no longer be downloaded")]
    Archived,
    /// 429 that is not the download quota: wait and retry.
    #[error("rate limited by Civitai (429)")]
    RateLimited {
        /// `Retry-After`, if sent.
        retry_after: Option<Duration>,
    },
    /// 429 "unusual amount of downloading": the rolling 24-hour download quota.
    #[error(
        "Civitai's 24-hour download quota is exhausted ({message}); progress is saved: rerun the \
         same command in a few hours to continue"
    )]
    QuotaExhausted {
        /// Civitai's message.
        message: String,
    },
    /// 429 for deep page numbers (never retried: it is deterministic).
    #[error("Civitai refused a deep page number: {message}")]
    TooManyPages {
        /// Civitai's message.
        message: String,
    },
    /// A body that is not JSON where JSON was expected (maintenance or challenge pages).
    #[error("Civitai answered {status} with {content_type} instead of JSON: \"{snippet}\"")]
    NotJson {
        /// HTTP status.
        status: u16,
        /// The `Content-Type` sent.
        content_type: String,
        /// The start of the body.
        snippet: String,
    },
    /// 5xx.
    #[error("Civitai server error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Civitai's message or the start of the body.
        message: String,
        /// `Retry-After`, if sent.
        retry_after: Option<Duration>,
    },
    /// 400 and other statuses with no meaning of their own.
    #[error("Civitai answered {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Civitai's message.
        message: String,
    },
    /// Connection, TLS, timeout or body errors.
    #[error("network error talking to {host}: {source}")]
    Network {
        /// The host (never a full URL: it could hold secrets).
        host: String,
        /// The underlying error, with its URL removed.
        source: reqwest::Error,
    },
    /// JSON that does not fit even our lenient models.
    #[error("could not understand Civitai's answer: {message}")]
    Decode {
        /// serde's message.
        message: String,
    },
    /// Ctrl-C or an emergency stop while waiting.
    #[error("interrupted")]
    Cancelled,
    /// A listing whose cursor went round in a circle.
    #[error("Civitai's listing repeated cursor {cursor}; stopped paging to avoid a loop")]
    CursorLoop {
        /// The repeated cursor.
        cursor: String,
    },
}

impl ApiError {
    /// Whether this failure came from a timeout (for metrics and the failsafe).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ApiError::Network { source, .. } if source.is_timeout())
    }

    /// Whether another API host might answer where this one failed.
    fn warrants_failover(&self) -> bool {
        matches!(self, ApiError::Network { .. } | ApiError::Server { .. })
    }
}

impl Retryable for ApiError {
    fn retry_class(&self) -> RetryClass {
        match self {
            // A request that could not even be built (a key with control characters, a bad
            // URL) will not build next time either.
            ApiError::Network { source, .. } if source.is_builder() => RetryClass::Fatal,
            ApiError::Network { .. } | ApiError::NotJson { .. } => {
                RetryClass::Transient { retry_after: None }
            }
            ApiError::RateLimited { retry_after } | ApiError::Server { retry_after, .. } => {
                RetryClass::Transient {
                    retry_after: *retry_after,
                }
            }
            _ => RetryClass::Fatal,
        }
    }
}

/// A pre-signed storage URL from the download route. It is a credential of its own: only its
/// host and path are ever displayed, and it is never persisted (a later run resolves afresh).
#[derive(Clone)]
pub struct SignedUrl {
    url: Url,
}

impl SignedUrl {
    /// The full URL, to send a request to. Never print it.
    pub fn as_url(&self) -> &Url {
        &self.url
    }

    /// A URL accepted as-is (previews on the image CDN need no resolve).
    pub fn direct(url: Url) -> Self {
        SignedUrl { url }
    }
}

impl fmt::Display for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.url.scheme(),
            self.url.host_str().unwrap_or("?"),
            self.url.path()
        )
    }
}

impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedUrl({self})")
    }
}

/// A decoded object plus the JSON it came from (written verbatim into `.civitai.info`).
#[derive(Clone, Debug)]
pub struct WithRaw<T> {
    /// The typed view.
    pub value: T,
    /// The JSON as Civitai sent it.
    pub raw: Value,
}

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
    metrics: Arc<Metrics>,
    /// Bounds API calls in flight (metadata and download resolves alike) to the configured
    /// concurrency; 1 on sequential runs.
    in_flight: tokio::sync::Semaphore,
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
    /// reporting every attempt to `metrics`.
    pub fn new(
        options: ApiOptions,
        limiter: Arc<RateLimiter>,
        retry: RetryPolicy,
        cancel: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<ApiClient, reqwest::Error> {
        let http = client_builder()
            // The download route's redirect is read, not followed: see `resolve_download`.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_max_idle_per_host(options.connections.max(1))
            .pool_idle_timeout(crate::download::POOL_IDLE_TIMEOUT)
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
            metrics,
            in_flight: tokio::sync::Semaphore::new(options.connections.max(1)),
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

    /// Every model of a creator, following cursors until the last page. Short pages that still
    /// carry a cursor are normal on Civitai and do not end the walk. Without `include_nsfw` the
    /// API's default SFW-only filter applies.
    pub async fn models_by_user(
        &self,
        username: &str,
        include_nsfw: bool,
    ) -> Result<Vec<WithRaw<Model>>, ApiError> {
        let mut models = Vec::new();
        let mut seen_cursors = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = format!(
                "/api/v1/models?username={}&limit={PAGE_LIMIT}",
                encode(username)
            );
            if include_nsfw {
                query.push_str("&nsfw=true");
            }
            if let Some(cursor) = &cursor {
                query.push_str(&format!("&cursor={}", encode(cursor)));
            }
            let page: WithRaw<Page<Value>> = self.get_json(&query).await?;
            for raw in page.value.items {
                // One odd model must not sink the whole listing; it is reported, not dropped
                // silently.
                match Model::deserialize(&raw) {
                    Ok(value) => models.push(WithRaw { value, raw }),
                    Err(error) => tracing::warn!(
                        "creator {username}: skipped model {} that could not be read: {error}",
                        raw.get("id").cloned().unwrap_or_default()
                    ),
                }
            }
            let metadata = page.value.metadata;
            let next_page = metadata.next_page.as_deref();
            let next = metadata
                .next_cursor
                .clone()
                .filter(|c| !c.is_empty())
                .or_else(|| next_page.and_then(cursor_of_next_page));
            if next.is_none() && next_page.is_some() {
                tracing::warn!(
                    "creator {username}: Civitai says more pages follow but gives no cursor; \
                     the listing may be incomplete"
                );
            }
            match next {
                Some(next) => {
                    if !seen_cursors.insert(next.clone()) {
                        return Err(ApiError::CursorLoop { cursor: next });
                    }
                    cursor = Some(next);
                }
                None => return Ok(models),
            }
        }
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
        match self.send(&path, Expect::Redirect).await? {
            Reply::Redirect(location) => {
                self.metrics.record_resolve();
                Ok(SignedUrl::direct(location))
            }
            Reply::Json(_) => unreachable!("send honours Expect::Redirect"),
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<WithRaw<T>, ApiError> {
        let Reply::Json(text) = self.send(path, Expect::Json).await? else {
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

    /// Send a GET to the current host with retries, moving on to the next host when one keeps
    /// failing with connection errors or 5xx. The answer is read and checked inside each attempt,
    /// so a maintenance page under status 200 is retried like any other transient failure.
    async fn send(&self, path: &str, expect: Expect) -> Result<Reply, ApiError> {
        loop {
            let index = self.current_host.load(Ordering::Relaxed);
            let host = &self.hosts[index.min(self.hosts.len() - 1)];
            let url = Url::parse(&format!("{host}{path}")).map_err(|e| ApiError::Rejected {
                status: 0,
                message: format!("bad URL {host}{path}: {e}"),
            })?;
            let attempts = std::sync::atomic::AtomicU32::new(0);
            let result = self
                .retry
                .run(
                    &self.cancel,
                    |n| {
                        attempts.store(n as u32, Ordering::Relaxed);
                        self.attempt(url.clone(), expect)
                    },
                    announce(&self.metrics, format!("{} {}", host_of(&url), url.path())),
                )
                .await;
            self.metrics
                .record_recovery(result.is_ok(), attempts.into_inner());
            match result {
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
    async fn attempt(&self, url: Url, expect: Expect) -> Result<Reply, ApiError> {
        let permit = tokio::select! {
            () = self.cancel.cancelled() => None,
            permit = self.in_flight.acquire() => permit.ok(),
        };
        if permit.is_none() || !self.limiter.acquire(&self.cancel).await {
            return Err(ApiError::Cancelled);
        }
        let started = Instant::now();
        let result = self.exchange(url, expect).await;
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
        self.metrics
            .record_api(answered.then_some(latency), attempt);
        result
    }

    /// Send, read the answer, and turn anything but the expected kind of success into an
    /// [`ApiError`].
    async fn exchange(&self, url: Url, expect: Expect) -> Result<Reply, ApiError> {
        let mut request = self.http.get(url.clone());
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(network_error)?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            return read_reply(&url, response, expect).await;
        }
        let retry_after = retry_after(response.headers());
        // The status already says what failed; a body lost on the way only costs the details.
        let body = read_limited(response, MAX_ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
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

/// Map a failed status and its body to the failure state it means (`civitai-api.md` §6.3, §8).
pub fn classify_failure(status: StatusCode, retry_after: Option<Duration>, body: &str) -> ApiError {
    let parsed = parse_error_body(body);
    let error_text = parsed
        .as_ref()
        .and_then(|b| b.error.clone())
        .unwrap_or_default();
    let message = parsed
        .as_ref()
        .map(|b| b.summary())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| snippet(body));
    let lower = message.to_lowercase();
    match status.as_u16() {
        404 => ApiError::NotFound { message },
        410 => ApiError::Archived,
        401 if lower.contains("disabled downloads") => ApiError::DownloadsDisabled,
        401 => ApiError::LoginRequired,
        403 if error_text.eq_ignore_ascii_case("early access") => ApiError::EarlyAccess {
            deadline: parsed.and_then(|b| b.deadline),
        },
        403 => ApiError::Forbidden { message },
        429 if lower.contains("unusual amount of downloading") => {
            ApiError::QuotaExhausted { message }
        }
        429 if lower.contains("too many pages") => ApiError::TooManyPages { message },
        429 => ApiError::RateLimited { retry_after },
        500..=599 => ApiError::Server {
            status: status.as_u16(),
            message,
            retry_after,
        },
        code => ApiError::Rejected {
            status: code,
            message,
        },
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

/// The host (and port) of a URL: what error messages may show.
pub fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => "?".to_string(),
    }
}

fn network_error(error: reqwest::Error) -> ApiError {
    let host = error.url().map(host_of).unwrap_or_else(|| "?".into());
    // reqwest's Display prints the whole URL, query included: keep only the host.
    ApiError::Network {
        host,
        source: error.without_url(),
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

fn content_type(response: &reqwest::Response) -> String {
    header(response, CONTENT_TYPE).unwrap_or_else(|| "no content type".into())
}

fn looks_like_json(content_type: &str, body: &str) -> bool {
    let first = body.trim_start().chars().next();
    !content_type.contains("html") && matches!(first, Some('{') | Some('['))
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

fn encode(value: &str) -> String {
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

    fn classify(status: u16, body: &str) -> ApiError {
        classify_failure(StatusCode::from_u16(status).unwrap(), None, body)
    }

    /// Every real error body Civitai sends maps to its own failure state.
    #[test]
    fn sample_error_bodies_map_to_their_failure_state() {
        let samples: Vec<Value> = serde_json::from_str(include_str!(
            "../tests/fixtures/civitai-samples/error_bodies.json"
        ))
        .unwrap();
        for sample in samples {
            let status = sample["status"].as_u64().unwrap() as u16;
            let body = sample["body"].to_string();
            let error = classify(status, &body);
            let ok = match status {
                404 => matches!(error, ApiError::NotFound { .. }),
                410 => matches!(error, ApiError::Archived),
                401 => matches!(error, ApiError::LoginRequired | ApiError::DownloadsDisabled),
                403 => matches!(
                    error,
                    ApiError::EarlyAccess { .. } | ApiError::Forbidden { .. }
                ),
                429 => matches!(
                    error,
                    ApiError::QuotaExhausted { .. } | ApiError::TooManyPages { .. }
                ),
                500..=599 => matches!(error, ApiError::Server { .. }),
                _ => matches!(error, ApiError::Rejected { .. }),
            };
            assert!(ok, "{status} {body} -> {error:?}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn the_download_route_states() {
        let disabled = r#"{"error":"Unauthorized","message":"The creator of this asset has disabled downloads on this file"}"#;
        assert!(matches!(
            classify(401, disabled),
            ApiError::DownloadsDisabled
        ));
        let login = r#"{"error":"Unauthorized","message":"The creator of this asset requires you to be logged in to download it"}"#;
        let error = classify(401, login);
        assert!(error.to_string().contains("--api-key"), "{error}");
        let early =
            r#"{"error":"Early Access","deadline":"2026-08-20T00:00:00.000Z","message":"x"}"#;
        assert!(classify(403, early).to_string().contains("2026-08-20"));
        let quota =
            r#"{"error":"We've noticed an unusual amount of downloading from your account."}"#;
        assert!(matches!(
            classify(429, quota),
            ApiError::QuotaExhausted { .. }
        ));
        assert_eq!(classify(429, quota).retry_class(), RetryClass::Fatal);
        let pages = r#"{"error":"You've requested too many pages, please use cursors instead"}"#;
        assert_eq!(classify(429, pages).retry_class(), RetryClass::Fatal);
        assert_ne!(classify(429, "").retry_class(), RetryClass::Fatal);
        assert_ne!(
            classify(503, "<html>busy</html>").retry_class(),
            RetryClass::Fatal
        );
        assert_eq!(classify(404, "{}").retry_class(), RetryClass::Fatal);
    }

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
        let long = "x ".repeat(200);
        assert!(snippet(&long).ends_with('…'));
        assert_eq!(snippet("a\n  b"), "a b");
    }

    #[test]
    fn signed_urls_never_display_their_query() {
        let url = SignedUrl::direct(
            Url::parse("https://b2.civitai.com/file/x/y.safetensors?Authorization=SECRET").unwrap(),
        );
        assert_eq!(
            url.to_string(),
            "https://b2.civitai.com/file/x/y.safetensors"
        );
        assert!(!format!("{url:?}").contains("SECRET"));
    }
}
