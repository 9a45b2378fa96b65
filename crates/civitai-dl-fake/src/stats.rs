//! Live counters, readable while the server runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

use crate::download_route::DOWNLOAD_ROUTE_PREFIX;
use crate::lock;
use crate::state::header_str;

/// One public `pub fn name(&self) -> u64` per counter, loading the field of that name or, after
/// `=>`, the field at that path.
macro_rules! counter_readers {
    ($($(#[$doc:meta])* $reader:ident $(=> $($path:ident).+)?;)+) => {
        $(
            $(#[$doc])*
            pub fn $reader(&self) -> u64 {
                counter_readers!(@field self $reader $($($path).+)?).load(Ordering::SeqCst)
            }
        )+
    };
    (@field $self:ident $reader:ident) => { $self.$reader };
    (@field $self:ident $reader:ident $($path:ident).+) => { $self.$($path).+ };
}

/// Current and peak number of open responses of one origin.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    open: AtomicU64,
    high_water: AtomicU64,
}

impl Gauge {
    pub(crate) fn enter(self: &Arc<Self>) -> OpenResponse {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.high_water.fetch_max(now, Ordering::SeqCst);
        OpenResponse(Arc::clone(self))
    }
}

/// Counts one response as open until dropped (for storage: until the body stream ends or drops).
pub(crate) struct OpenResponse(Arc<Gauge>);

impl Drop for OpenResponse {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Live counters, readable while the server runs.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    api_requests: AtomicU64,
    pub(crate) resolves: AtomicU64,
    download_route_requests: AtomicU64,
    pub(crate) storage_requests: AtomicU64,
    pub(crate) storage_bytes: AtomicU64,
    pub(crate) slow_downs: AtomicU64,
    pub(crate) auth_at_storage: AtomicU64,
    auth_at_api: AtomicU64,
    pub(crate) api_open: Arc<Gauge>,
    pub(crate) storage_open: Arc<Gauge>,
    pub(crate) ranges: Mutex<Vec<(u64, Option<String>)>>,
    api_request_times: Mutex<Vec<Duration>>,
    user_agents: Mutex<Vec<String>>,
    pub(crate) listings: Mutex<Vec<ListingRequest>>,
    routes: Mutex<BTreeMap<String, u64>>,
}

/// The paging of one `GET /api/v1/models` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingRequest {
    /// The `cursor` parameter, if any.
    pub cursor: Option<String>,
    /// The `limit` parameter, if any.
    pub limit: Option<String>,
    /// The `ids` asked for, comma-joined (empty when none).
    pub ids: String,
    /// Storage requests the server had seen when this listing request arrived (whether
    /// downloads of earlier pages started before this page was asked for).
    pub storage_requests_before: u64,
}

impl Stats {
    pub(crate) fn new(started: Instant) -> Stats {
        Stats {
            started,
            api_requests: AtomicU64::new(0),
            resolves: AtomicU64::new(0),
            download_route_requests: AtomicU64::new(0),
            storage_requests: AtomicU64::new(0),
            storage_bytes: AtomicU64::new(0),
            slow_downs: AtomicU64::new(0),
            auth_at_storage: AtomicU64::new(0),
            auth_at_api: AtomicU64::new(0),
            api_open: Arc::default(),
            storage_open: Arc::default(),
            ranges: Mutex::default(),
            api_request_times: Mutex::default(),
            user_agents: Mutex::default(),
            listings: Mutex::default(),
            routes: Mutex::default(),
        }
    }

    counter_readers! {
        /// All requests to the API origin.
        api_requests;
        /// Requests to `/api/download/models/*` answered 307.
        resolves;
        /// Every request to `/api/download/models/*`, whatever it was answered (faults included).
        download_route_requests;
        /// GET and HEAD requests on the storage origin (files and images).
        storage_requests;
        /// File body bytes sent by storage.
        storage_bytes;
        /// File GETs answered 503 `SlowDown` by `storage_max_open_per_file`.
        slow_downs;
        /// Storage requests that carried any `Authorization` header (a key leak; must stay 0).
        auth_at_storage;
        /// API requests that carried an `Authorization` header (where the key belongs).
        auth_at_api;
        /// High-water mark of concurrently open storage responses (open until the body ends or
        /// drops).
        max_concurrent_storage => storage_open.high_water;
        /// High-water mark of concurrently handled API requests.
        max_concurrent_api => api_open.high_water;
    }

    /// `(file id, Range header)` of every storage file GET, in arrival order.
    pub fn ranges(&self) -> Vec<(u64, Option<String>)> {
        lock(&self.ranges).clone()
    }

    /// Arrival offsets of API requests since the server started.
    pub fn api_request_times(&self) -> Vec<Duration> {
        lock(&self.api_request_times).clone()
    }

    /// Every listing request (`GET /api/v1/models`), in arrival order.
    pub fn listings(&self) -> Vec<ListingRequest> {
        lock(&self.listings).clone()
    }

    /// Distinct User-Agents seen on the API, in order of first appearance.
    pub fn user_agents(&self) -> Vec<String> {
        lock(&self.user_agents).clone()
    }

    /// API requests to one route, named as [`route_of`] names it, e.g.
    /// `"POST /api/v1/model-versions/by-hash"` or `"GET /api/v1/model-versions/{id}"`; faults
    /// the knobs answered count too.
    pub fn requests_to(&self, route: &str) -> u64 {
        lock(&self.routes).get(route).copied().unwrap_or(0)
    }

    pub(crate) fn record_api_request(&self, method: &str, path: &str, headers: &HeaderMap) {
        self.api_requests.fetch_add(1, Ordering::SeqCst);
        *lock(&self.routes)
            .entry(route_of(method, path))
            .or_default() += 1;
        if headers.contains_key(header::AUTHORIZATION) {
            self.auth_at_api.fetch_add(1, Ordering::SeqCst);
        }
        if path.starts_with(DOWNLOAD_ROUTE_PREFIX) {
            self.download_route_requests.fetch_add(1, Ordering::SeqCst);
        }
        lock(&self.api_request_times).push(self.started.elapsed());
        if let Some(agent) = header_str(headers, &header::USER_AGENT) {
            let mut agents = lock(&self.user_agents);
            if !agents.iter().any(|a| a == agent) {
                agents.push(agent.to_owned());
            }
        }
    }
}

/// The route a request went to: its method and its path with ids written `{id}` and the hash of
/// `by-hash/{hash}` written `{hash}`, so a test counts the calls of one endpoint.
pub(crate) fn route_of(method: &str, path: &str) -> String {
    let mut after_by_hash = false;
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| {
            let named = if after_by_hash && segment != "ids" {
                "{hash}"
            } else if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                segment
            };
            after_by_hash = segment == "by-hash";
            named
        })
        .collect();
    format!("{method} {}", segments.join("/"))
}
