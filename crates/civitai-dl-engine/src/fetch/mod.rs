//! The unit of work below the drivers: fetch one file to its final path, complete and verified,
//! or leave a resumable `.part` and say why.
//!
//! An attempt is: get a signed URL (reused within the run while the storage host accepts it) →
//! send `Range` from the length of the `.part` → validate the answer before a byte touches disk
//! ([`validate`]) → stream to the `.part` while hashing ([`stream`]) → flush and fsync → compare
//! the SHA-256 → rename atomically. The retry policy wraps attempts; resume lives inside each
//! attempt. Large files may go over several connections ([`segmented`]); how many is the caller's
//! choice, passed with each file as [`Connections`], never a flag flipped on the fetcher.
//!
//! Why the checks: other Civitai tools have been caught saving login pages and JSON error bodies
//! under model names, or splicing a changed remote file onto an old prefix. The `.part.json`
//! beside each `.part` ([`part`]) records what the bytes belong to, so a later run never resumes
//! the wrong thing (`docs/civitai-api.md#range-and-resume`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::civitai::ApiClient;
use crate::fs::{file_len, with_suffix};
use crate::http::retry::{RetryPolicy, Tried, retry_after};
use crate::http::{POOL_IDLE_TIMEOUT, SignedUrl, client_builder, host_of, snippet};
use crate::lock;
use crate::observe::{Attempt, Operation, Reporter, TransferProgress, announce, requests};
use crate::plan::naming::disambiguate;
pub use crate::plan::{FileKind, PlannedFile, Source};

mod error;
mod hash;
mod part;
mod segmented;
mod single;
mod stream;
#[cfg(test)]
mod tests;
mod validate;

pub use error::DownloadError;
pub use hash::{hash_file, hex};
pub use part::{Segment, contiguous_prefix, split};
pub use validate::{
    acceptable_type, looks_like_error_document, parse_content_range, size_consistent,
};

use part::{PartClaim, PartFile, PartMeta};

/// Suffix of a file kept because its hash disagrees with Civitai's twice in the same way.
pub const UNVERIFIED_SUFFIX: &str = "unverified";

/// How a file ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Fetched (fully or by resuming) and verified.
    Downloaded {
        /// Final path.
        path: PathBuf,
        /// File size.
        bytes: u64,
        /// Bytes transferred in this run.
        transferred: u64,
        /// Lowercase hex SHA-256.
        sha256: String,
        /// Whether the published hash was checked (false when Civitai published none).
        verified: bool,
    },
    /// Already at its final path and matching: nothing fetched.
    AlreadyPresent {
        /// Final path.
        path: PathBuf,
        /// File size.
        bytes: u64,
        /// Lowercase hex SHA-256, when it was computed.
        sha256: Option<String>,
    },
    /// Two full downloads gave the same bytes, which do not match the published hash: the
    /// published hash is likely wrong. Kept at `path` (`<name>.unverified` unless accepted).
    HashMismatch {
        /// Where the file is.
        path: PathBuf,
        /// File size.
        bytes: u64,
        /// Published hash.
        expected: String,
        /// Hash of the bytes.
        actual: String,
        /// Whether `--accept-hash-mismatch` let it keep its real name.
        accepted: bool,
    },
}

/// Settings of the download engine.
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    /// Keep a file whose hash disagrees twice in the same way under its real name.
    pub accept_hash_mismatch: bool,
    /// Minimum speed in bytes/s over `min_speed_window` (0 = off).
    pub min_speed: u64,
    /// Window for `min_speed`.
    pub min_speed_window: Duration,
    /// Connect timeout for storage hosts.
    pub connect_timeout: Duration,
    /// Stall timeout: silence this long mid-transfer fails the attempt.
    pub read_timeout: Duration,
    /// Connections per large file (1 = one stream).
    pub segments: usize,
    /// Files at least this large are split into segments.
    pub segment_threshold: u64,
    /// Storage connections that can be open at once (downloads × segments + previews): the
    /// keep-alive pool is sized to it.
    pub connections: usize,
}

/// Fetches files. Share it behind an `Arc`; it holds the storage client and the signed URLs of
/// this run.
pub struct Downloader {
    http: reqwest::Client,
    api: Arc<ApiClient>,
    retry: RetryPolicy,
    options: DownloadOptions,
    cancel: CancellationToken,
    signed: Mutex<HashMap<u64, SignedUrl>>,
    /// Resolves per file id in this run.
    resolves: Mutex<HashMap<u64, u32>>,
    reporter: Arc<dyn Reporter>,
    /// Storage hosts that refused parallel ranges: their files are fetched as one stream for
    /// the rest of the run (knowledge about the host, not a limit set from outside).
    single_stream_hosts: Mutex<HashSet<String>>,
}

/// Where a file goes: written to a path, or already there.
enum Destination {
    /// Download to this path.
    Write(PathBuf),
    /// Nothing to do.
    Present(Outcome),
}

/// A finished transfer waiting for verification.
struct Transferred {
    total: u64,
    transferred: u64,
    sha256: String,
    /// When the last byte reached the file: what follows (sync, hash, rename) is the tail.
    landed: Instant,
}

impl Downloader {
    /// A downloader using `api` for resolves, with its own storage client that never carries
    /// the API key, reporting every attempt to `reporter`.
    pub fn new(
        api: Arc<ApiClient>,
        retry: RetryPolicy,
        options: DownloadOptions,
        cancel: CancellationToken,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Downloader, reqwest::Error> {
        let http = client_builder()
            // No total timeout: a healthy 10 GB download takes as long as it takes. Stalls are
            // caught by the read timeout, crawls by the optional minimum speed.
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            // One connection per transfer: HTTP/2 would multiplex parallel transfers onto one.
            .http1_only()
            // Keep as many idle connections as can be busy at once, and drop them before a CDN
            // does: reusing a socket just as the far end closes it fails the request.
            .pool_max_idle_per_host(options.connections.max(1))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()?;
        Ok(Downloader {
            http,
            api,
            retry,
            options,
            cancel,
            signed: Mutex::new(HashMap::new()),
            resolves: Mutex::new(HashMap::new()),
            reporter,
            single_stream_hosts: Mutex::new(HashSet::new()),
        })
    }

    /// Fetch `file` to its final path (or confirm it is already there), retrying per policy.
    /// `connections` is the caller's limit for this file (the sequential fallback asks for one).
    pub async fn download_file(
        &self,
        file: &PlannedFile,
        progress: &dyn TransferProgress,
        connections: Connections,
    ) -> Result<Outcome, DownloadError> {
        let dest = match self.choose_destination(file).await? {
            Destination::Write(dest) => dest,
            Destination::Present(outcome) => return Ok(outcome),
        };
        let Some(_claim) = PartClaim::acquire(&dest).await? else {
            return Err(DownloadError::Busy { path: dest });
        };
        // Another run may have finished the file while this one chose where to write it.
        if let Some(present) = self.present(file, &dest).await? {
            return Ok(present);
        }
        let received = Received {
            progress,
            bytes: AtomicU64::new(0),
        };
        let fetch = FileFetch {
            fetcher: self,
            file,
            dest: &dest,
            progress: &received,
            connections,
            url_renewed: AtomicBool::new(false),
            last_mismatch: Mutex::new(None),
        };
        let started = Instant::now();
        let Tried {
            mut result,
            attempts,
        } = self
            .retry
            .run(
                &self.cancel,
                |_| fetch.measured_attempt(),
                announce(self.reporter.as_ref(), &file.label),
            )
            .await;
        if self.cancel.is_cancelled() && result.is_err() {
            return Err(DownloadError::Cancelled);
        }
        if result.is_ok() {
            // Nothing fetches a settled file again, and at 100,000 files the URLs were 23 MB.
            self.forget_signed_url(file);
        }
        let transferred = match &mut result {
            Ok(Outcome::Downloaded { transferred, .. }) => {
                // Every attempt's bytes, not only the last one's: an attempt cut part-way
                // received its share in this run too.
                *transferred = received.bytes.load(Ordering::Relaxed);
                *transferred
            }
            _ => 0,
        };
        self.reporter
            .on_file_done(result.is_ok(), transferred, started.elapsed(), attempts);
        result
    }

    /// Where to write, or the file already in place. A file at the final path that is not ours
    /// is never overwritten: the new file gets a name with its file id instead.
    async fn choose_destination(&self, file: &PlannedFile) -> Result<Destination, DownloadError> {
        if let Some(present) = self.present(file, &file.dest).await? {
            return Ok(Destination::Present(present));
        }
        if file_len(&file.dest).await.is_none() {
            return Ok(Destination::Write(file.dest.clone()));
        }
        if file.replace_existing {
            tracing::warn!(
                "{}: {} is damaged or outdated; downloading it again",
                file.label,
                file.dest.display()
            );
            return Ok(Destination::Write(file.dest.clone()));
        }
        let name = file
            .dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = match &file.source {
            Source::Civitai { file_id, .. } => *file_id,
            Source::Direct(_) => 0,
        };
        let other = file.dest.with_file_name(disambiguate(&name, id));
        tracing::warn!(
            "{}: {} exists with other content; saving as {} instead",
            file.label,
            file.dest.display(),
            other.display()
        );
        Ok(match self.present(file, &other).await? {
            Some(present) => Destination::Present(present),
            None => Destination::Write(other),
        })
    }

    /// The outcome when `path` already holds the wanted file: checked by the published hash, or
    /// by the hash an earlier run recorded. A size alone proves nothing (two LoRAs of one rank
    /// have the same size), so a file with neither is never taken for the download.
    async fn present(
        &self,
        file: &PlannedFile,
        path: &Path,
    ) -> Result<Option<Outcome>, DownloadError> {
        let Some(bytes) = file_len(path).await else {
            return Ok(None);
        };
        let sha256 = match file.expected_sha256.as_ref().or(file.known_sha256.as_ref()) {
            Some(wanted) => {
                let (_, actual) = hash_file(path, 0, &self.cancel).await?;
                if !actual.eq_ignore_ascii_case(wanted) {
                    return Ok(None);
                }
                Some(actual)
            }
            // A preview is named after its model file, so one at its path is an earlier run's.
            None if file.kind == FileKind::Preview && bytes > 0 => None,
            None => return Ok(None),
        };
        Ok(Some(Outcome::AlreadyPresent {
            path: path.to_path_buf(),
            bytes,
            sha256,
        }))
    }

    /// Whether `--accept-hash-mismatch` lets a file whose hash disagrees twice keep its name.
    pub fn accepts_hash_mismatch(&self) -> bool {
        self.options.accept_hash_mismatch
    }

    /// Report a transfer attempt; an interruption says nothing about the server.
    fn record_attempt<T>(&self, result: &Result<T, DownloadError>) {
        if !matches!(result, Err(DownloadError::Cancelled)) {
            self.reporter.on_attempt(
                Operation::Transfer,
                None,
                Attempt::judge(result, DownloadError::is_timeout),
            );
        }
    }

    /// The signed URL for a file: cached for this run, resolved when missing.
    async fn signed_url(&self, file: &PlannedFile) -> Result<SignedUrl, DownloadError> {
        let (version_id, file_id) = match &file.source {
            Source::Direct(url) => return Ok(SignedUrl::direct(url.clone())),
            Source::Civitai {
                version_id,
                file_id,
            } => (*version_id, *file_id),
        };
        if let Some(url) = self.signed_urls().get(&file_id) {
            return Ok(url.clone());
        }
        *lock(&self.resolves).entry(file_id).or_default() += 1;
        let url = self.api.resolve_download(version_id, Some(file_id)).await?;
        self.signed_urls().insert(file_id, url.clone());
        Ok(url)
    }

    /// How many times this run asked Civitai's download route for `file` (each counts against
    /// the download quota).
    pub fn resolves(&self, file: &PlannedFile) -> u32 {
        match &file.source {
            Source::Civitai { file_id, .. } => {
                lock(&self.resolves).get(file_id).copied().unwrap_or(0)
            }
            Source::Direct(_) => 0,
        }
    }

    fn forget_signed_url(&self, file: &PlannedFile) {
        if let Source::Civitai { file_id, .. } = &file.source {
            self.signed_urls().remove(file_id);
        }
    }

    fn signed_urls(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SignedUrl>> {
        lock(&self.signed)
    }

    /// GET a storage URL, with `Range: bytes=<range>` when given; the wait for the answer ends
    /// when the run is cancelled.
    async fn get(
        &self,
        url: &SignedUrl,
        range: Option<String>,
    ) -> Result<reqwest::Response, DownloadError> {
        let mut request = self.http.get(url.as_url().clone());
        if let Some(range) = &range {
            request = request.header(reqwest::header::RANGE, format!("bytes={range}"));
        }
        let started = Instant::now();
        let result = tokio::select! {
            () = self.cancel.cancelled() => Err(DownloadError::Cancelled),
            response = request.send() => response.map_err(|e| error::network(e, 0)),
        };
        match &result {
            Ok(response) => {
                let status = response.status().as_u16();
                let length = response.content_length();
                requests::storage_answer(url, range.as_deref(), status, length, started.elapsed());
                requests::headers(&requests::storage_url(url), response.headers());
            }
            Err(DownloadError::Cancelled) => {}
            Err(error) => {
                requests::no_answer("GET", &requests::storage_url(url), error, started.elapsed())
            }
        }
        result
    }

    /// `--min-speed` and its window, for each body copy.
    fn min_speed(&self) -> (u64, Duration) {
        (self.options.min_speed, self.options.min_speed_window)
    }

    fn refuses_ranges(&self, host: &str) -> bool {
        lock(&self.single_stream_hosts).contains(host)
    }

    fn remember_single_stream(&self, host: &str) {
        tracing::warn!("{host} does not serve parallel ranges; using one connection per file");
        lock(&self.single_stream_hosts).insert(host.to_string());
    }
}

/// The bytes a file receives over all its attempts, passed on to its progress.
struct Received<'a> {
    progress: &'a dyn TransferProgress,
    bytes: AtomicU64,
}

impl TransferProgress for Received<'_> {
    fn set(&self, done: u64, total: Option<u64>) {
        self.progress.set(done, total);
    }

    fn advance(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.progress.advance(bytes);
    }
}

/// How many connections one file may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Connections {
    /// As the options say: large files in `segments` parallel ranges.
    #[default]
    AsConfigured,
    /// One connection (the failsafe's sequential path). A file already split into segments
    /// continues them one at a time.
    One,
}

/// One file being fetched: what every attempt at it shares.
struct FileFetch<'a> {
    fetcher: &'a Downloader,
    /// Whether this file's signed URL was already resolved afresh after a refusal.
    url_renewed: AtomicBool,
    file: &'a PlannedFile,
    dest: &'a Path,
    progress: &'a dyn TransferProgress,
    connections: Connections,
    /// The wrong hash of the previous complete download, if any.
    last_mismatch: Mutex<Option<String>>,
}

impl FileFetch<'_> {
    /// The error for a storage answer that is not the file.
    async fn storage_error(&self, response: reqwest::Response) -> DownloadError {
        let host = host_of(response.url());
        let status = response.status().as_u16();
        if matches!(status, 401 | 403 | 410) && matches!(self.file.source, Source::Civitai { .. }) {
            let reason = snippet(&response.text().await.unwrap_or_default());
            return self.renew_or_refuse(host, status, reason);
        }
        DownloadError::Storage {
            host,
            status,
            retry_after: retry_after(response.headers()),
        }
    }

    /// A refused signed URL has most likely expired: it is forgotten, so the next attempt
    /// resolves a fresh one, once per file. A fresh URL refused again is about something else (a
    /// firewall, a blocked region), and every further resolve would only spend Civitai's download
    /// quota: that is final, with the storage host's reason.
    fn renew_or_refuse(&self, host: String, status: u16, reason: String) -> DownloadError {
        if self.url_renewed.swap(true, Ordering::SeqCst) {
            return DownloadError::Refused {
                host,
                status,
                reason,
            };
        }
        self.fetcher.forget_signed_url(self.file);
        DownloadError::Expired { host, status }
    }

    /// The current URL served the file: a later refusal is a new expiry (a multi-GB file can
    /// outlive several URLs), not a fresh URL refused.
    fn url_served(&self) {
        self.url_renewed.store(false, Ordering::SeqCst);
    }

    /// One attempt, reported to the run's subscribers (metrics and the failsafe among them).
    async fn measured_attempt(&self) -> Result<Outcome, DownloadError> {
        let result = self.attempt().await;
        self.fetcher.record_attempt(&result);
        result
    }

    /// One attempt: resume or start the `.part`, stream, verify, rename.
    async fn attempt(&self) -> Result<Outcome, DownloadError> {
        let (file, dest) = (self.file, self.dest);
        let part = PartFile::new(dest);
        let meta = part.load_or_reset(file).await?;
        let done = match self.segment_plan(&meta) {
            Some(segments) => segmented::transfer(self, &part, meta, segments).await?,
            None => {
                let meta = part.reduce_to_prefix(meta).await?;
                self.transfer(&part, meta).await?
            }
        };
        let actual = done.sha256;
        let verified = match &file.expected_sha256 {
            None => false,
            Some(expected) if actual.eq_ignore_ascii_case(expected) => true,
            Some(expected) => return self.mismatch(&part, expected, actual, done.total).await,
        };
        part.commit(dest, done.total).await?;
        tracing::debug!(
            "{}: verified and renamed {} ms after the last byte",
            file.label,
            done.landed.elapsed().as_millis()
        );
        Ok(Outcome::Downloaded {
            path: dest.to_path_buf(),
            bytes: done.total,
            transferred: done.transferred,
            sha256: actual,
            verified,
        })
    }

    /// The bytes disagree with the published hash: fetch again from scratch, unless the same
    /// wrong hash came twice, which points at Civitai's published hash.
    async fn mismatch(
        &self,
        part: &PartFile,
        expected: &str,
        actual: String,
        hashed: u64,
    ) -> Result<Outcome, DownloadError> {
        let dest = self.dest;
        let seen_before = {
            let mut last = lock(&self.last_mismatch);
            let seen = last.as_deref() == Some(actual.as_str());
            *last = Some(actual.clone());
            seen
        };
        if !seen_before {
            part.discard().await?;
            return Err(DownloadError::checksum(expected, actual));
        }
        // The same bytes twice: Civitai's published hash is the likely culprit.
        let accepted = self.fetcher.options.accept_hash_mismatch;
        let path = if accepted {
            dest.to_path_buf()
        } else {
            with_suffix(dest, UNVERIFIED_SUFFIX)
        };
        part.commit(&path, hashed).await?;
        Ok(Outcome::HashMismatch {
            bytes: file_len(&path).await.unwrap_or(0),
            path,
            expected: expected.to_string(),
            actual,
            accepted,
        })
    }

    /// Whether this file is fetched in segments: the feature is on, the file is large, and one
    /// connection was not asked for (unless the file is already laid out in segments, which
    /// then continue one at a time). Returns the number of segments.
    fn segment_plan(&self, meta: &PartMeta) -> Option<usize> {
        let (file, options) = (self.file, &self.fetcher.options);
        if options.segments < 2
            || file.kind != FileKind::Model
            || !matches!(file.source, Source::Civitai { .. })
            || (self.connections == Connections::One && meta.segments.is_none())
        {
            return None;
        }
        let size = meta.total.or(file.expected_size)?;
        (size >= options.segment_threshold).then_some(options.segments)
    }
}

fn source_key(source: &Source) -> String {
    match source {
        Source::Civitai {
            version_id,
            file_id,
        } => format!("civitai:{version_id}:{file_id}"),
        Source::Direct(url) => format!("url:{}{}", host_of(url), url.path()),
    }
}
