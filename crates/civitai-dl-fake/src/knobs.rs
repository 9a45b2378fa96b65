//! Server-wide fault and pacing knobs, and the sequence state that gives "the first N requests"
//! its meaning.

use std::time::{Duration, Instant};

use crate::download_route::DOWNLOAD_ROUTE_PREFIX;

/// Server-wide fault and pacing knobs; change them while running with
/// [`FakeCivitai::set_knobs`](crate::FakeCivitai::set_knobs).
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Added before every API answer.
    pub api_latency: Duration,
    /// Bytes per second per storage connection (`None` or 0 = unlimited).
    pub bandwidth: Option<u64>,
    /// Added before every storage file answer: the round trip to a far CDN, which every range
    /// request pays before its first byte.
    pub storage_latency: Duration,
    /// First N API requests (any path except `/api/v1/me`) answer 503 with `Retry-After`.
    pub api_503_first: u32,
    /// The next N answer 429 with `Retry-After`.
    pub api_429_first: u32,
    /// The next N answer 200 `text/html` (maintenance page).
    pub api_html_first: u32,
    /// `Retry-After` seconds on those 429/503 answers.
    pub retry_after_secs: u64,
    /// Lifetime of signed storage URLs.
    pub url_ttl: Duration,
    /// `(start, length)` after the knobs took effect: every API and storage request in the window
    /// gets 503 `text/html`.
    pub outage: Option<(Duration, Duration)>,
    /// After N successful resolves, the download route answers the quota 429.
    pub quota_after: Option<u32>,
    /// Answer 429 to a ranged GET while another GET of the same file is still open.
    pub storage_refuses_ranges_when_concurrent: bool,
    /// Answer 503 `SlowDown` with `Retry-After: retry_after_secs` to a GET of a file that
    /// already has this many GETs open, as an S3-style host throttling one client does.
    pub storage_max_open_per_file: Option<u32>,
    /// Added before every preview image answer (images are tiny, so without it parallel
    /// fetches would never overlap and their concurrency could not be observed).
    pub image_latency: Duration,
    /// First N requests to the download route answer 503 with `Retry-After`; other API paths
    /// are spared, so a run gets as far as resolving.
    pub download_route_503_first: u32,
    /// Listing pages carry only `metadata.nextPage`, without `nextCursor`.
    pub omit_next_cursor: bool,
    /// Every request to the download route answers 429 with an HTML page and no `Retry-After`
    /// (a proxy's wording, not Civitai's quota message).
    pub download_route_429_html: bool,
    /// Cursor listing pages from this page number on (the first page is 1) answer 503: a
    /// listing that breaks part-way, as deep listings do.
    pub listing_fails_from_page: Option<u64>,
    /// Listing pages asking for more than this many models answer 503 (a page too big to
    /// build before the gateway's timeout).
    pub listing_max_limit: Option<usize>,
    /// How `POST /api/v1/model-versions/by-hash` misbehaves, if at all.
    pub by_hash_batch_fault: Option<BatchFault>,
    /// How many of those POSTs get `by_hash_batch_fault`: the first N (`u32::MAX`: all).
    pub by_hash_batch_faulty: u32,
    /// `POST /api/v1/model-versions/by-hash/ids` answers as the old server did: a bare array of
    /// version ids for at most 100 hashes, instead of `[{modelVersionId, modelId, hash}]` for up
    /// to 10,000.
    pub by_hash_ids_legacy: bool,
}

/// A misbehaving answer of the by-hash batch route, for clients' `pending` handling and
/// fallbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFault {
    /// 429 with `Retry-After: retry_after_secs`.
    TooManyRequests,
    /// 500 `{"error": "An unexpected error occurred"}`.
    ServerError,
    /// 200 `text/html` (the maintenance page).
    MaintenancePage,
    /// 404, as from a server that predates the route (clients fall back to `/by-hash/ids`).
    Absent,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            api_latency: Duration::ZERO,
            bandwidth: None,
            storage_latency: Duration::ZERO,
            api_503_first: 0,
            api_429_first: 0,
            api_html_first: 0,
            retry_after_secs: 1,
            url_ttl: Duration::from_secs(3600),
            outage: None,
            quota_after: None,
            storage_refuses_ranges_when_concurrent: false,
            storage_max_open_per_file: None,
            image_latency: Duration::ZERO,
            download_route_503_first: 0,
            omit_next_cursor: false,
            download_route_429_html: false,
            listing_fails_from_page: None,
            listing_max_limit: None,
            by_hash_batch_fault: None,
            by_hash_batch_faulty: u32::MAX,
            by_hash_ids_legacy: false,
        }
    }
}

/// Knobs plus the counters whose meaning is relative to them, so `set_knobs` restarts the
/// "first N requests" and quota sequences and the outage clock.
pub(crate) struct KnobState {
    pub(crate) knobs: Knobs,
    since: Instant,
    api_requests_counted: u64,
    download_route_requests_counted: u64,
    by_hash_batches_counted: u64,
    pub(crate) resolves: u64,
}

/// An API answer that replaces the real one because of a knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiFault {
    Outage,
    Unavailable { retry_after_secs: u64 },
    TooManyRequests { retry_after_secs: u64 },
    TooManyRequestsPage,
    MaintenancePage,
}

impl KnobState {
    pub(crate) fn new(knobs: Knobs) -> KnobState {
        KnobState {
            knobs,
            since: Instant::now(),
            api_requests_counted: 0,
            download_route_requests_counted: 0,
            by_hash_batches_counted: 0,
            resolves: 0,
        }
    }

    pub(crate) fn in_outage(&self) -> bool {
        self.knobs.outage.is_some_and(|(start, length)| {
            let elapsed = self.since.elapsed();
            elapsed >= start && elapsed < start + length
        })
    }

    pub(crate) fn next_api_fault(&mut self, path: &str) -> Option<ApiFault> {
        if self.in_outage() {
            return Some(ApiFault::Outage);
        }
        if path == "/api/v1/me" {
            return None;
        }
        if path.starts_with(DOWNLOAD_ROUTE_PREFIX) {
            let seq = self.download_route_requests_counted;
            self.download_route_requests_counted += 1;
            if self.knobs.download_route_429_html {
                return Some(ApiFault::TooManyRequestsPage);
            }
            if seq < u64::from(self.knobs.download_route_503_first) {
                return Some(ApiFault::Unavailable {
                    retry_after_secs: self.knobs.retry_after_secs,
                });
            }
        }
        let seq = self.api_requests_counted;
        self.api_requests_counted += 1;
        let retry_after_secs = self.knobs.retry_after_secs;
        let unavailable_end = u64::from(self.knobs.api_503_first);
        let throttled_end = unavailable_end + u64::from(self.knobs.api_429_first);
        let maintenance_end = throttled_end + u64::from(self.knobs.api_html_first);
        if seq < unavailable_end {
            Some(ApiFault::Unavailable { retry_after_secs })
        } else if seq < throttled_end {
            Some(ApiFault::TooManyRequests { retry_after_secs })
        } else if seq < maintenance_end {
            Some(ApiFault::MaintenancePage)
        } else {
            None
        }
    }

    /// The fault this `POST /by-hash` gets, counting it.
    pub(crate) fn next_by_hash_batch_fault(&mut self) -> Option<BatchFault> {
        let seq = self.by_hash_batches_counted;
        self.by_hash_batches_counted += 1;
        self.knobs
            .by_hash_batch_fault
            .filter(|_| seq < u64::from(self.knobs.by_hash_batch_faulty))
    }

    pub(crate) fn quota_reached(&self) -> bool {
        self.knobs
            .quota_after
            .is_some_and(|limit| self.resolves >= u64::from(limit))
    }
}
