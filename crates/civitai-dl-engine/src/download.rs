//! The one unit of work: fetch one file to its final path, complete and verified, or leave a
//! resumable `.part` and say why.
//!
//! An attempt is: get a signed URL (reused within the run while the storage host accepts it) →
//! send `Range` from the length of the `.part` → validate the answer before a byte touches disk
//! (status, `Content-Range`, content type, length against the API's size) → stream to the `.part`
//! while hashing → flush and fsync → compare the SHA-256 → rename atomically. The retry policy wraps
//! attempts; resume lives inside each attempt. This module knows nothing about concurrency.
//!
//! Why the checks: every other Civitai tool has been caught saving login pages and JSON error
//! bodies under model names, or splicing a changed remote file onto an old prefix. Beside each
//! `.part` a small `.part.json` records what the bytes belong to (file, expected hash, size, ETag),
//! so a later run never resumes the wrong thing.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::civitai::{ApiClient, ApiError};
use crate::http::retry::{RetryClass, RetryPolicy, Retryable, retry_after};
use crate::http::{POOL_IDLE_TIMEOUT, SignedUrl, client_builder, header, host_of, snippet};
use crate::lock;
use crate::observe::{Attempt, Operation, Reporter, TransferProgress, announce};
use crate::plan::naming::disambiguate;

/// Write buffer: large enough that each hop to the blocking pool moves plenty of bytes (4 MiB
/// measured ~15 % faster than 256 KiB on a 1 GiB loopback download, `benches/throughput.sh`).
const WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// However slowly a transfer runs, what it received reaches the `.part` at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Read buffer when hashing a file already on disk.
const HASH_BUFFER_BYTES: usize = 1024 * 1024;
/// A failed attempt that wrote at least this much counts as progress (see `Retryable::made_progress`).
const PROGRESS_BYTES: u64 = 1024 * 1024;
/// The API's `sizeKB` is a rounded hint: a response within this fraction (or [`SIZE_SLACK_BYTES`])
/// of it is consistent; anything further off is not the file we asked for.
const SIZE_SLACK_FRACTION: f64 = 0.01;
/// See [`SIZE_SLACK_FRACTION`].
const SIZE_SLACK_BYTES: u64 = 64 * 1024;
/// Suffix of a file kept because its hash disagrees with Civitai's twice in the same way.
pub const UNVERIFIED_SUFFIX: &str = "unverified";

/// Where a file's bytes come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A model file: resolved through the API's download route.
    Civitai {
        /// Model version id.
        version_id: u64,
        /// File id (always sent as `fileId`, which selects the file exactly).
        file_id: u64,
    },
    /// A preview image on Civitai's image CDN: fetched as is.
    Direct(reqwest::Url),
}

/// What kind of content is acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Model weights, archives and other binary files: never HTML, JSON, XML or plain text.
    Model,
    /// A text file a model ships with (a `.yaml` or `.json` config): any type but a web page.
    Document,
    /// A preview: must be an image or video.
    Preview,
}

impl FileKind {
    /// The kind of a Civitai file, from its name: configs and notes are text, the rest binary.
    pub fn of_file_name(name: &str) -> FileKind {
        let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        match extension.as_deref() {
            Some("json" | "yaml" | "yml" | "txt" | "md" | "toml" | "xml" | "csv") => {
                FileKind::Document
            }
            _ => FileKind::Model,
        }
    }
}

/// One file to fetch.
#[derive(Clone, Debug)]
pub struct PlannedFile {
    /// How the file is named in messages: model, version and file name.
    pub label: String,
    /// Where the bytes come from.
    pub source: Source,
    /// Final path (absolute or relative to the working directory).
    pub dest: PathBuf,
    /// The API's size hint, if any.
    pub expected_size: Option<u64>,
    /// The published SHA-256 (uppercase or lowercase hex), if any.
    pub expected_sha256: Option<String>,
    /// What content is acceptable.
    pub kind: FileKind,
    /// The final path holds a file civitai-dl wrote in an earlier run (the state says so): if it
    /// no longer matches, it is repaired in place instead of being left beside a renamed copy.
    pub replace_existing: bool,
}

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

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The download route refused (login needed, early access, not found, quota, …).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The storage host answered with an error status.
    #[error("storage host {host} answered {status}")]
    Storage {
        /// Host.
        host: String,
        /// Status.
        status: u16,
        /// `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The storage host refused the signed URL (expired): resolved again on the next attempt.
    #[error("storage host {host} refused the signed URL ({status}); it has likely expired")]
    Expired {
        /// Host.
        host: String,
        /// Status.
        status: u16,
    },
    /// The answer was a web page or an error document, not the file.
    #[error("expected the file but got a web page or error document ({content_type}){}", if snippet.is_empty() { String::new() } else { format!(": \"{snippet}\"") })]
    NotAFile {
        /// The `Content-Type`.
        content_type: String,
        /// The start of the body.
        snippet: String,
    },
    /// `Content-Range` did not match the request.
    #[error(
        "the server's Content-Range ({got}) does not match the requested range from byte {offset}"
    )]
    BadRange {
        /// What was sent back.
        got: String,
        /// Where we asked to start.
        offset: u64,
    },
    /// The length is not the size the API publishes.
    #[error("the server sends {got} bytes but Civitai lists the file at about {expected} bytes")]
    SizeMismatch {
        /// API size.
        expected: u64,
        /// Server size.
        got: u64,
    },
    /// The remote file changed since the `.part` was started (another ETag).
    #[error("the remote file changed since the partial download began; starting over")]
    RemoteChanged,
    /// Connection, timeout or body error.
    #[error("transfer failed: {source}")]
    Network {
        /// The error (its URL removed).
        source: reqwest::Error,
        /// Bytes written by this attempt.
        written: u64,
    },
    /// The body ended early.
    #[error("transfer ended at byte {got} of {expected}")]
    Truncated {
        /// Bytes on disk.
        got: u64,
        /// Expected total.
        expected: u64,
        /// Bytes written by this attempt.
        written: u64,
    },
    /// Slower than `--min-speed` over its window.
    #[error("transfer slower than the minimum speed ({bytes_per_sec} B/s over the window)")]
    TooSlow {
        /// Measured speed.
        bytes_per_sec: u64,
        /// Bytes written by this attempt.
        written: u64,
    },
    /// The bytes do not match the published SHA-256; the file is fetched again from scratch.
    #[error("SHA-256 mismatch: Civitai publishes {expected}, the download is {actual}")]
    Checksum {
        /// Published.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// Local file system trouble (disk full, permission denied, …).
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The storage host refused parallel ranges: the file continues as one stream.
    #[error("storage host {host} refused parallel connections ({status}); continuing with one")]
    RangesRefused {
        /// Host.
        host: String,
        /// Status of the refused range request.
        status: u16,
    },
    /// Stopped by Ctrl-C or an emergency stop; the `.part` is kept.
    #[error("interrupted; the partial file is kept for the next run")]
    Cancelled,
}

impl DownloadError {
    /// Whether this failure was a timeout (metrics, failsafe).
    pub fn is_timeout(&self) -> bool {
        match self {
            DownloadError::Network { source, .. } => source.is_timeout(),
            DownloadError::Api(api) => api.is_timeout(),
            _ => false,
        }
    }

    fn written(&self) -> u64 {
        match self {
            DownloadError::Network { written, .. }
            | DownloadError::Truncated { written, .. }
            | DownloadError::TooSlow { written, .. } => *written,
            _ => 0,
        }
    }
}

impl Retryable for DownloadError {
    fn retry_class(&self) -> RetryClass {
        let transient = RetryClass::Transient { retry_after: None };
        match self {
            // The API client already retried the resolve under the same policy.
            DownloadError::Api(_) | DownloadError::SizeMismatch { .. } => RetryClass::Fatal,
            DownloadError::Storage {
                status,
                retry_after,
                ..
            } if *status == 429 || *status >= 500 => RetryClass::Transient {
                retry_after: *retry_after,
            },
            // A refused range is handled by switching to one stream, never by retrying it.
            DownloadError::Storage { .. }
            | DownloadError::Cancelled
            | DownloadError::RangesRefused { .. } => RetryClass::Fatal,
            DownloadError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut => transient,
                _ => RetryClass::Fatal,
            },
            _ => transient,
        }
    }

    fn made_progress(&self) -> bool {
        self.written() >= PROGRESS_BYTES
    }
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
    pub(crate) http: reqwest::Client,
    api: Arc<ApiClient>,
    pub(crate) retry: RetryPolicy,
    pub(crate) options: DownloadOptions,
    pub(crate) cancel: CancellationToken,
    signed: Mutex<HashMap<u64, SignedUrl>>,
    pub(crate) reporter: Arc<dyn Reporter>,
    /// Storage hosts that refused parallel ranges: their files are fetched as one stream.
    pub(crate) single_stream_hosts: Mutex<HashSet<String>>,
    /// Set when the failsafe hands the run to the sequential driver: from then on one
    /// connection per file, whatever `--segments` says.
    one_connection: std::sync::atomic::AtomicBool,
}

/// Where a file goes: written to a path, or already there.
enum Destination {
    /// Download to this path.
    Write(PathBuf),
    /// Nothing to do.
    Present(Outcome),
}

/// What `.part.json` records about a partial file.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PartMeta {
    pub(crate) source: String,
    pub(crate) expected_sha256: Option<String>,
    pub(crate) total: Option<u64>,
    pub(crate) etag: Option<String>,
    /// Present while the file is fetched in segments: how far each has got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) segments: Option<Vec<crate::segmented::Segment>>,
}

/// A finished transfer waiting for verification.
pub(crate) struct Transferred {
    pub(crate) total: u64,
    pub(crate) transferred: u64,
    pub(crate) sha256: String,
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
            reporter,
            single_stream_hosts: Mutex::new(HashSet::new()),
            one_connection: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// One connection per file from now on (the failsafe's sequential path). A file already
    /// split into segments continues them one at a time.
    pub fn use_one_connection(&self) {
        self.one_connection
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether [`Self::use_one_connection`] was called.
    pub(crate) fn one_connection(&self) -> bool {
        self.one_connection
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fetch `file` to its final path (or confirm it is already there), retrying per policy.
    pub async fn download_file(
        &self,
        file: &PlannedFile,
        bar: &dyn TransferProgress,
    ) -> Result<Outcome, DownloadError> {
        let dest = match self.choose_destination(file).await? {
            Destination::Write(dest) => dest,
            Destination::Present(outcome) => return Ok(outcome),
        };
        let mismatch = Mutex::new(None);
        let started = Instant::now();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let result = self
            .retry
            .run(
                &self.cancel,
                |_| {
                    attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.measured_attempt(file, &dest, bar, &mismatch)
                },
                announce(self.reporter.as_ref(), &file.label),
            )
            .await;
        if self.cancel.is_cancelled() && result.is_err() {
            return Err(DownloadError::Cancelled);
        }
        let transferred = match &result {
            Ok(Outcome::Downloaded { transferred, .. }) => *transferred,
            _ => 0,
        };
        self.reporter.on_file_done(
            result.is_ok(),
            transferred,
            started.elapsed(),
            attempts.into_inner(),
        );
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

    /// The outcome when `path` already holds the wanted file: checked by hash when one is
    /// published, else by size.
    async fn present(
        &self,
        file: &PlannedFile,
        path: &Path,
    ) -> Result<Option<Outcome>, DownloadError> {
        let Some(bytes) = file_len(path).await else {
            return Ok(None);
        };
        let sha256 = match &file.expected_sha256 {
            Some(expected) => {
                let (_, actual) = hash_file(path, 0).await?;
                if !actual.eq_ignore_ascii_case(expected) {
                    return Ok(None);
                }
                Some(actual)
            }
            None if bytes > 0 && file.expected_size.is_none_or(|s| size_consistent(s, bytes)) => {
                None
            }
            None => return Ok(None),
        };
        Ok(Some(Outcome::AlreadyPresent {
            path: path.to_path_buf(),
            bytes,
            sha256,
        }))
    }

    /// One attempt, reported to the run's subscribers (metrics and the failsafe among them).
    async fn measured_attempt(
        &self,
        file: &PlannedFile,
        dest: &Path,
        bar: &dyn TransferProgress,
        last_mismatch: &Mutex<Option<String>>,
    ) -> Result<Outcome, DownloadError> {
        let result = self.attempt(file, dest, bar, last_mismatch).await;
        self.record_attempt(&result);
        result
    }

    /// Report a transfer attempt; an interruption says nothing about the server.
    pub(crate) fn record_attempt<T>(&self, result: &Result<T, DownloadError>) {
        if !matches!(result, Err(DownloadError::Cancelled)) {
            self.reporter.on_attempt(
                Operation::Transfer,
                None,
                Attempt::judge(result, DownloadError::is_timeout),
            );
        }
    }

    /// One attempt: resume or start the `.part`, stream, verify, rename.
    async fn attempt(
        &self,
        file: &PlannedFile,
        dest: &Path,
        bar: &dyn TransferProgress,
        last_mismatch: &Mutex<Option<String>>,
    ) -> Result<Outcome, DownloadError> {
        let part = PartFile::new(dest);
        let meta = part.load_or_reset(file).await?;
        let done = match self.segment_plan(file, &meta) {
            Some(segments) => {
                self.transfer_segmented(file, &part, meta, segments, bar)
                    .await?
            }
            None => {
                let meta = part.reduce_to_prefix(meta).await?;
                self.transfer(file, &part, meta, bar).await?
            }
        };
        let actual = done.sha256;
        let verified = match &file.expected_sha256 {
            None => false,
            Some(expected) if actual.eq_ignore_ascii_case(expected) => true,
            Some(expected) => {
                return self
                    .mismatch(dest, &part, expected, actual, last_mismatch)
                    .await;
            }
        };
        part.commit(dest).await?;
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
        dest: &Path,
        part: &PartFile,
        expected: &str,
        actual: String,
        last_mismatch: &Mutex<Option<String>>,
    ) -> Result<Outcome, DownloadError> {
        let seen_before = {
            let mut last = lock(last_mismatch);
            let seen = last.as_deref() == Some(actual.as_str());
            *last = Some(actual.clone());
            seen
        };
        if !seen_before {
            part.discard().await?;
            return Err(DownloadError::Checksum {
                expected: expected.to_string(),
                actual,
            });
        }
        // The same bytes twice: Civitai's published hash is the likely culprit.
        let accepted = self.options.accept_hash_mismatch;
        let path = if accepted {
            dest.to_path_buf()
        } else {
            with_suffix(dest, UNVERIFIED_SUFFIX)
        };
        part.commit(&path).await?;
        Ok(Outcome::HashMismatch {
            bytes: file_len(&path).await.unwrap_or(0),
            path,
            expected: expected.to_string(),
            actual,
            accepted,
        })
    }

    /// Send the request for what is missing and stream it into the `.part`.
    pub(crate) async fn transfer(
        &self,
        file: &PlannedFile,
        part: &PartFile,
        mut meta: PartMeta,
        bar: &dyn TransferProgress,
    ) -> Result<Transferred, DownloadError> {
        let mut offset = file_len(&part.path).await.unwrap_or(0);
        if offset > 0 && meta.total == Some(offset) {
            // Complete from an earlier run: only the hash is missing.
            let (total, sha256) = hash_file(&part.path, 0).await?;
            bar.set(total, Some(total));
            return Ok(Transferred {
                total,
                transferred: 0,
                sha256,
            });
        }
        let url = self.signed_url(file).await?;
        let mut request = self.http.get(url.as_url().clone());
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let mut response = tokio::select! {
            () = self.cancel.cancelled() => return Err(DownloadError::Cancelled),
            response = request.send() => response.map_err(|e| network(e, 0))?,
        };
        let status = response.status();
        match status {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                return self
                    .range_not_satisfiable(file, part, &meta, &response, offset)
                    .await;
            }
            _ => return Err(self.storage_error(file, &response)),
        }
        if status == StatusCode::OK && offset > 0 {
            tracing::info!(
                "{}: the server ignored the range; starting over",
                file.label
            );
            offset = 0;
        }
        let total = match self.validate(file, &response, offset, status) {
            Ok(total) => total,
            Err(error @ (DownloadError::BadRange { .. } | DownloadError::SizeMismatch { .. })) => {
                // Sending the same range again would get the same answer: start over.
                part.discard().await?;
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let etag = header(&response, ETAG);
        if offset > 0 && meta.etag.is_some() && etag.is_some() && meta.etag != etag {
            part.discard().await?;
            return Err(DownloadError::RemoteChanged);
        }
        meta.total = total;
        meta.etag = etag;
        part.save_meta(&meta).await?;

        let mut hasher = if offset > 0 {
            hash_prefix(&part.path, offset).await?
        } else {
            Sha256::new()
        };
        let handle = part.open(offset).await?;
        let mut writer = tokio::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, handle);
        bar.set(offset, total);
        let mut written = 0u64;
        let mut speed = SpeedCheck::new(self.options.min_speed, self.options.min_speed_window);
        let mut first_chunk = offset == 0;
        let mut flushed_at = Instant::now();
        loop {
            let chunk = tokio::select! {
                () = self.cancel.cancelled() => {
                    writer.flush().await.map_err(|e| part.io("write", e))?;
                    return Err(DownloadError::Cancelled);
                }
                chunk = response.chunk() => chunk,
            };
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    writer.flush().await.map_err(|e| part.io("write", e))?;
                    return Err(network(e, written));
                }
            };
            if first_chunk {
                first_chunk = false;
                if let Err(error) = reject_markup(file.kind, &response, &chunk) {
                    part.discard().await?;
                    return Err(error);
                }
            }
            hasher.update(&chunk);
            writer
                .write_all(&chunk)
                .await
                .map_err(|e| part.io("write", e))?;
            written += chunk.len() as u64;
            bar.advance(chunk.len() as u64);
            self.reporter.on_bytes(chunk.len() as u64);
            if flushed_at.elapsed() >= FLUSH_EVERY {
                // A slow transfer must not keep megabytes in memory that a kill would lose.
                writer.flush().await.map_err(|e| part.io("write", e))?;
                flushed_at = Instant::now();
            }
            if let Some(bytes_per_sec) = speed.record(chunk.len() as u64) {
                writer.flush().await.map_err(|e| part.io("write", e))?;
                return Err(DownloadError::TooSlow {
                    bytes_per_sec,
                    written,
                });
            }
        }
        writer.flush().await.map_err(|e| part.io("write", e))?;
        writer
            .get_ref()
            .sync_all()
            .await
            .map_err(|e| part.io("sync", e))?;
        let got = offset + written;
        if let Some(expected) = total.filter(|t| *t != got) {
            return Err(DownloadError::Truncated {
                got,
                expected,
                written,
            });
        }
        if total.is_none()
            && file.expected_sha256.is_none()
            && let Some(expected) = file.expected_size.filter(|e| !size_consistent(*e, got))
        {
            // No length was announced and no hash can judge the bytes: the size must.
            part.discard().await?;
            return Err(DownloadError::SizeMismatch { expected, got });
        }
        Ok(Transferred {
            total: got,
            transferred: written,
            sha256: hex(&hasher.finalize()),
        })
    }

    /// A 416 on resume: the `.part` is complete if its length is the file's size (from the
    /// answer's `Content-Range: bytes */N`, the record, or the API); otherwise it cannot be
    /// trusted and the file starts over.
    async fn range_not_satisfiable(
        &self,
        file: &PlannedFile,
        part: &PartFile,
        meta: &PartMeta,
        response: &reqwest::Response,
        offset: u64,
    ) -> Result<Transferred, DownloadError> {
        let announced = header(response, CONTENT_RANGE).and_then(|v| {
            v.trim()
                .strip_prefix("bytes */")
                .and_then(|n| n.parse().ok())
        });
        let size = announced.or(meta.total).or(file.expected_size);
        if size != Some(offset) {
            part.discard().await?;
            return Err(DownloadError::BadRange {
                got: format!("416 for a {offset}-byte partial file"),
                offset,
            });
        }
        let (total, sha256) = hash_file(&part.path, 0).await?;
        Ok(Transferred {
            total,
            transferred: 0,
            sha256,
        })
    }

    /// Check status, range, length and type before anything is written; returns the file's
    /// total size when the server says it.
    fn validate(
        &self,
        file: &PlannedFile,
        response: &reqwest::Response,
        offset: u64,
        status: StatusCode,
    ) -> Result<Option<u64>, DownloadError> {
        let content_type = header(response, CONTENT_TYPE).unwrap_or_default();
        if !acceptable_type(file.kind, &content_type) {
            return Err(DownloadError::NotAFile {
                content_type,
                snippet: String::new(),
            });
        }
        let length = header(response, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        let total = if status == StatusCode::PARTIAL_CONTENT {
            let got = header(response, CONTENT_RANGE).unwrap_or_default();
            match parse_content_range(&got) {
                Some((start, end, total))
                    if start == offset
                        && total.is_none_or(|t| end + 1 == t)
                        && length.is_none_or(|l| l == end + 1 - start) =>
                {
                    total.or(Some(end + 1))
                }
                _ => return Err(DownloadError::BadRange { got, offset }),
            }
        } else {
            length
        };
        if let (Some(expected), Some(got)) = (file.expected_size, total)
            && !size_consistent(expected, got)
        {
            // Civitai's sizeKB comes from the uploading client and can be wrong. With a published
            // hash the bytes are judged by it; without one, the size is all there is.
            if file.expected_sha256.is_none() {
                return Err(DownloadError::SizeMismatch { expected, got });
            }
            tracing::warn!(
                "{}: the server sends {got} bytes where Civitai lists about {expected}; the \
                 SHA-256 check will decide",
                file.label
            );
        }
        Ok(total)
    }

    /// The error for a storage answer that is not the file. 401/403/410 on a signed URL mean it
    /// expired: it is forgotten, so the next attempt resolves a fresh one.
    pub(crate) fn storage_error(
        &self,
        file: &PlannedFile,
        response: &reqwest::Response,
    ) -> DownloadError {
        let host = host_of(response.url());
        let status = response.status().as_u16();
        if matches!(status, 401 | 403 | 410) && matches!(file.source, Source::Civitai { .. }) {
            self.forget_signed_url(file);
            return DownloadError::Expired { host, status };
        }
        DownloadError::Storage {
            host,
            status,
            retry_after: retry_after(response.headers()),
        }
    }

    /// The signed URL for a file: cached for this run, resolved when missing.
    pub(crate) async fn signed_url(&self, file: &PlannedFile) -> Result<SignedUrl, DownloadError> {
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
        let url = self.api.resolve_download(version_id, Some(file_id)).await?;
        self.signed_urls().insert(file_id, url.clone());
        Ok(url)
    }

    pub(crate) fn forget_signed_url(&self, file: &PlannedFile) {
        if let Source::Civitai { file_id, .. } = &file.source {
            self.signed_urls().remove(file_id);
        }
    }

    fn signed_urls(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SignedUrl>> {
        lock(&self.signed)
    }
}

/// The `.part` file and its `.part.json` record, beside the final path (same file system, so the
/// final rename is atomic).
pub(crate) struct PartFile {
    pub(crate) path: PathBuf,
    pub(crate) meta_path: PathBuf,
}

impl PartFile {
    fn new(dest: &Path) -> PartFile {
        PartFile {
            path: with_suffix(dest, "part"),
            meta_path: with_suffix(dest, "part.json"),
        }
    }

    /// The record of the existing `.part`, or a fresh one after deleting a `.part` that belongs to
    /// something else (another file id, another published hash) or to nothing known.
    async fn load_or_reset(&self, file: &PlannedFile) -> Result<PartMeta, DownloadError> {
        let wanted = PartMeta {
            source: source_key(&file.source),
            expected_sha256: file.expected_sha256.clone(),
            ..PartMeta::default()
        };
        let existing = tokio::fs::read(&self.meta_path)
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice::<PartMeta>(&bytes).ok());
        match existing {
            Some(meta)
                if meta.source == wanted.source
                    && meta.expected_sha256 == wanted.expected_sha256 =>
            {
                Ok(meta)
            }
            _ => {
                self.discard().await?;
                Ok(wanted)
            }
        }
    }

    /// A `.part` left by a segmented transfer holds finished ranges with holes between them;
    /// one stream can only continue its contiguous prefix, so the file is cut back to that.
    pub(crate) async fn reduce_to_prefix(
        &self,
        mut meta: PartMeta,
    ) -> Result<PartMeta, DownloadError> {
        let Some(segments) = meta.segments.take() else {
            return Ok(meta);
        };
        let prefix = crate::segmented::contiguous_prefix(&segments);
        // Trim first, record second: a kill in between leaves a record whose segments claim
        // more than the file holds, which the segmented path refuses to continue (it starts
        // over). The other order could leave a full-length file with holes and no segment record.
        if let Ok(handle) = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .await
        {
            handle
                .set_len(prefix)
                .await
                .map_err(|e| self.io("trim", e))?;
        }
        self.save_meta(&meta).await?;
        Ok(meta)
    }

    pub(crate) async fn save_meta(&self, meta: &PartMeta) -> Result<(), DownloadError> {
        if let Some(parent) = self.path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| self.io("create folder for", e))?;
        }
        let json = serde_json::to_vec(meta).unwrap_or_default();
        // Temp file and rename: a kill mid-write must not leave a record that fails to parse,
        // which would throw the whole `.part` away.
        let tmp = with_suffix(&self.meta_path, "tmp");
        tokio::fs::write(&tmp, json)
            .await
            .map_err(|e| self.io("write", e))?;
        tokio::fs::rename(&tmp, &self.meta_path)
            .await
            .map_err(|e| self.io("write", e))
    }

    async fn open(&self, offset: u64) -> Result<tokio::fs::File, DownloadError> {
        let mut options = tokio::fs::OpenOptions::new();
        options.create(true).write(true);
        if offset == 0 {
            options.truncate(true);
        } else {
            options.append(true);
        }
        let handle = options
            .open(&self.path)
            .await
            .map_err(|e| self.io("open", e))?;
        if offset > 0 {
            // Anything past the hashed prefix (a torn final write) is cut off.
            handle
                .set_len(offset)
                .await
                .map_err(|e| self.io("trim", e))?;
        }
        Ok(handle)
    }

    /// Rename the verified `.part` to `dest` and drop its record.
    async fn commit(&self, dest: &Path) -> Result<(), DownloadError> {
        tokio::fs::rename(&self.path, dest)
            .await
            .map_err(|e| self.io("rename", e))?;
        sync_parent(dest).await;
        let _ = tokio::fs::remove_file(&self.meta_path).await;
        Ok(())
    }

    pub(crate) async fn discard(&self) -> Result<(), DownloadError> {
        for path in [&self.path, &self.meta_path] {
            match tokio::fs::remove_file(path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io("remove", e)),
            }
        }
        Ok(())
    }

    pub(crate) fn io(&self, action: &'static str, source: std::io::Error) -> DownloadError {
        DownloadError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

/// Tracks speed over a window for `--min-speed`.
struct SpeedCheck {
    min: u64,
    window: Duration,
    started: Instant,
    bytes: u64,
}

impl SpeedCheck {
    fn new(min: u64, window: Duration) -> SpeedCheck {
        SpeedCheck {
            min,
            window,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Count bytes; at the end of each window, the speed if it was too low.
    fn record(&mut self, bytes: u64) -> Option<u64> {
        if self.min == 0 {
            return None;
        }
        self.bytes += bytes;
        let elapsed = self.started.elapsed();
        if elapsed < self.window {
            return None;
        }
        let speed = (self.bytes as f64 / elapsed.as_secs_f64()) as u64;
        self.started = Instant::now();
        self.bytes = 0;
        (speed < self.min).then_some(speed)
    }
}

/// Parse `bytes START-END/TOTAL` (TOTAL may be `*`).
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (start <= end && total.is_none_or(|t| end < t)).then_some((start, end, total))
}

/// Whether a server's length agrees with the API's rounded `sizeKB` hint.
pub fn size_consistent(expected: u64, got: u64) -> bool {
    let slack = ((expected as f64 * SIZE_SLACK_FRACTION) as u64).max(SIZE_SLACK_BYTES);
    expected.abs_diff(got) <= slack
}

/// Whether a `Content-Type` can be the file: model files are never web pages or error
/// documents; previews must be images or videos.
pub fn acceptable_type(kind: FileKind, content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    let markup = ["text/html", "json", "xml", "text/plain"]
        .iter()
        .any(|m| ct.contains(m));
    match kind {
        FileKind::Model => !markup,
        FileKind::Document => !ct.contains("text/html"),
        FileKind::Preview => {
            ct.is_empty()
                || ct.starts_with("image/")
                || ct.starts_with("video/")
                || ct.starts_with("application/octet-stream")
        }
    }
}

/// Refuse a body that starts like a web page or an error document, whatever its `Content-Type`
/// claimed. Model files never start like that (safetensors begin with a binary length, pickles
/// and zips with magic bytes); an error body often does.
fn reject_markup(
    kind: FileKind,
    response: &reqwest::Response,
    chunk: &[u8],
) -> Result<(), DownloadError> {
    let head = String::from_utf8_lossy(&chunk[..chunk.len().min(512)]).to_ascii_lowercase();
    if looks_like_error_document(kind, &head) {
        return Err(DownloadError::NotAFile {
            content_type: header(response, CONTENT_TYPE).unwrap_or_default(),
            snippet: snippet(&head),
        });
    }
    Ok(())
}

/// Whether the first bytes of a body (lowercased) look like HTML, an XML error or a JSON error.
pub fn looks_like_error_document(kind: FileKind, head: &str) -> bool {
    let head = head.trim_start();
    let html = head.starts_with("<!doctype html") || head.starts_with("<html");
    let xml_error = head.starts_with("<?xml") && head.contains("<error");
    let json_error =
        head.starts_with('{') && (head.contains("\"error\"") || head.contains("\"message\""));
    html || (kind == FileKind::Model && (xml_error || json_error))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a whole file (size, lowercase hex), read in a blocking task.
pub async fn hash_file(path: &Path, limit: u64) -> Result<(u64, String), DownloadError> {
    let owned = path.to_path_buf();
    let (len, hasher) = tokio::task::spawn_blocking(move || hash_blocking(&owned, limit))
        .await
        .map_err(|e| io_error("hash", path, std::io::Error::other(e)))?
        .map_err(|e| io_error("hash", path, e))?;
    Ok((len, hex(&hasher.finalize())))
}

/// The hasher state after the first `len` bytes of a file (to continue a resumed download).
async fn hash_prefix(path: &Path, len: u64) -> Result<Sha256, DownloadError> {
    let owned = path.to_path_buf();
    let (read, hasher) = tokio::task::spawn_blocking(move || hash_blocking(&owned, len))
        .await
        .map_err(|e| io_error("hash", path, std::io::Error::other(e)))?
        .map_err(|e| io_error("hash", path, e))?;
    if read != len {
        return Err(io_error(
            "hash",
            path,
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "partial file shrank"),
        ));
    }
    Ok(hasher)
}

/// Hash up to `limit` bytes (0 = all) of a file.
fn hash_blocking(path: &Path, limit: u64) -> std::io::Result<(u64, Sha256)> {
    let file = std::fs::File::open(path)?;
    let mut reader: Box<dyn Read> = if limit > 0 {
        Box::new(file.take(limit))
    } else {
        Box::new(file)
    };
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok((total, hasher));
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
}

/// Write a small file atomically: temp file, fsync, rename. Used for sidecars.
pub async fn write_atomic(path: &Path, bytes: Vec<u8>) -> Result<(), DownloadError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = owned.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = with_suffix(&owned, "tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &owned)
    })
    .await
    .map_err(|e| io_error("write", path, std::io::Error::other(e)))?
    .map_err(|e| io_error("write", path, e))
}

pub(crate) fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> DownloadError {
    DownloadError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn network(source: reqwest::Error, written: u64) -> DownloadError {
    DownloadError::Network {
        source: source.without_url(),
        written,
    }
}

pub(crate) fn source_key(source: &Source) -> String {
    match source {
        Source::Civitai {
            version_id,
            file_id,
        } => format!("civitai:{version_id}:{file_id}"),
        Source::Direct(url) => format!("url:{}{}", host_of(url), url.path()),
    }
}

/// `dir/name.ext` → `dir/name.ext.<suffix>`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

pub(crate) async fn file_len(path: &Path) -> Option<u64> {
    tokio::fs::metadata(path)
        .await
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// fsync the directory so the rename itself survives a power cut (unix; a no-op elsewhere).
async fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(parent) = path.parent()
        && let Ok(dir) = tokio::fs::File::open(parent).await
    {
        let _ = dir.sync_all().await;
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_table() {
        let cases = [
            ("bytes 0-99/100", Some((0, 99, Some(100)))),
            ("bytes 100-199/*", Some((100, 199, None))),
            ("bytes  5-5/6", Some((5, 5, Some(6)))),
            ("bytes 10-5/100", None),
            ("bytes 0-100/100", None),
            ("bytes */100", None),
            ("items 0-1/2", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_content_range(input), want, "{input}");
        }
    }

    #[test]
    fn size_hint_tolerance() {
        assert!(size_consistent(6_938_040_678, 6_938_040_683));
        assert!(size_consistent(1_000, 1_200));
        assert!(!size_consistent(100_000_000, 120));
        assert!(!size_consistent(10_000_000_000, 9_000_000_000));
    }

    #[test]
    fn content_types() {
        use FileKind::*;
        assert!(acceptable_type(Model, "application/octet-stream"));
        assert!(acceptable_type(Model, ""));
        assert!(!acceptable_type(Model, "text/html; charset=utf-8"));
        assert!(!acceptable_type(Model, "application/json"));
        assert!(!acceptable_type(Model, "application/xml"));
        assert!(acceptable_type(Preview, "image/jpeg"));
        assert!(acceptable_type(Preview, "video/mp4"));
        assert!(!acceptable_type(Preview, "text/html"));
        assert!(acceptable_type(Document, "application/json"));
        assert!(acceptable_type(Document, "text/plain"));
        assert!(!acceptable_type(Document, "text/html"));
        assert_eq!(FileKind::of_file_name("v1-inference.yaml"), Document);
        assert_eq!(FileKind::of_file_name("config.JSON"), Document);
        assert_eq!(FileKind::of_file_name("x.safetensors"), Model);
        assert_eq!(FileKind::of_file_name("noext"), Model);
    }

    #[test]
    fn suffixes_and_hex() {
        assert_eq!(
            with_suffix(Path::new("/m/a.safetensors"), "part"),
            PathBuf::from("/m/a.safetensors.part")
        );
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn speed_check_only_judges_full_windows() {
        let mut off = SpeedCheck::new(0, Duration::ZERO);
        assert_eq!(off.record(1), None);
        let mut check = SpeedCheck::new(u64::MAX, Duration::ZERO);
        assert!(check.record(10).is_some());
        let mut long = SpeedCheck::new(u64::MAX, Duration::from_secs(3600));
        assert_eq!(long.record(10), None);
    }

    #[tokio::test]
    async fn hashing_a_file_and_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let (len, sha) = hash_file(&path, 0).await.unwrap();
        assert_eq!(len, 11);
        assert!(sha.eq_ignore_ascii_case(
            "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9"
        ));
        let mut prefix = hash_prefix(&path, 6).await.unwrap();
        prefix.update(b"world");
        assert_eq!(hex(&prefix.finalize()), sha);
        assert!(hash_prefix(&path, 20).await.is_err());
    }

    mod against_the_fake_server {
        use super::*;
        use crate::civitai::ApiOptions;
        use crate::http::limiter::RateLimiter;
        use civitai_dl_fake::{
            Catalog, FakeCivitai, FakeFile, FakeModel, FakeVersion, Knobs, fill_bytes,
        };

        const SIZE: u64 = 300_000;

        async fn setup() -> (FakeCivitai, Downloader, PlannedFile, tempfile::TempDir) {
            let file = FakeFile::new(31, "a.safetensors", SIZE);
            let catalog = Catalog {
                models: vec![FakeModel::new(
                    11,
                    "M",
                    "LORA",
                    vec![FakeVersion::new(21, "v1", vec![file])],
                )],
                valid_keys: vec![],
            };
            let server = FakeCivitai::start(catalog, Knobs::default()).await.unwrap();
            let cancel = CancellationToken::new();
            let retry = RetryPolicy::new(vec![Duration::from_millis(10)], 0.0);
            let metrics = Arc::new(crate::observe::metrics::Metrics::new());
            let api = ApiClient::new(
                ApiOptions {
                    hosts: vec![server.api_url()],
                    api_key: None,
                    connect_timeout: Duration::from_secs(5),
                    request_timeout: Duration::from_secs(5),
                    connections: 1,
                },
                Arc::new(RateLimiter::new(1000.0, 10)),
                retry.clone(),
                cancel.clone(),
                metrics.clone(),
            )
            .unwrap();
            let options = DownloadOptions {
                accept_hash_mismatch: false,
                min_speed: 0,
                min_speed_window: Duration::from_secs(60),
                connect_timeout: Duration::from_secs(5),
                read_timeout: Duration::from_secs(5),
                segments: 1,
                segment_threshold: u64::MAX,
                connections: 1,
            };
            let downloader =
                Downloader::new(Arc::new(api), retry, options, cancel, metrics).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let planned = PlannedFile {
                label: "test file".into(),
                source: Source::Civitai {
                    version_id: 21,
                    file_id: 31,
                },
                dest: dir.path().join("a.safetensors"),
                expected_size: Some(SIZE),
                expected_sha256: server.sha256_of(31).map(str::to_string),
                kind: FileKind::Model,
                replace_existing: false,
            };
            (server, downloader, planned, dir)
        }

        #[tokio::test]
        async fn a_resumed_download_sends_the_right_range_and_ends_verified() {
            let (server, downloader, planned, _dir) = setup().await;
            let prefix_len = 123_456u64;
            let mut prefix = vec![0u8; prefix_len as usize];
            fill_bytes(31, 0, &mut prefix);
            let part = PartFile::new(&planned.dest);
            std::fs::write(&part.path, &prefix).unwrap();
            let meta = PartMeta {
                source: source_key(&planned.source),
                expected_sha256: planned.expected_sha256.clone(),
                total: Some(SIZE),
                etag: None,
                segments: None,
            };
            std::fs::write(&part.meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();

            let outcome = downloader
                .download_file(&planned, &crate::observe::NoProgress)
                .await
                .unwrap();
            let Outcome::Downloaded {
                transferred,
                verified,
                ..
            } = outcome
            else {
                panic!("expected a download, got {outcome:?}");
            };
            assert!(verified);
            assert_eq!(transferred, SIZE - prefix_len);
            assert_eq!(
                server.stats().ranges(),
                vec![(31, Some(format!("bytes={prefix_len}-")))]
            );
            let (len, sha) = hash_file(&planned.dest, 0).await.unwrap();
            assert_eq!(len, SIZE);
            assert!(sha.eq_ignore_ascii_case(planned.expected_sha256.as_deref().unwrap()));
            assert!(!part.path.exists() && !part.meta_path.exists());
        }

        #[tokio::test]
        async fn a_part_of_another_file_is_never_continued() {
            let (server, downloader, planned, _dir) = setup().await;
            let part = PartFile::new(&planned.dest);
            std::fs::write(&part.path, vec![7u8; 1000]).unwrap();
            let other = PartMeta {
                source: "civitai:21:999".into(),
                ..PartMeta::default()
            };
            std::fs::write(&part.meta_path, serde_json::to_vec(&other).unwrap()).unwrap();
            downloader
                .download_file(&planned, &crate::observe::NoProgress)
                .await
                .unwrap();
            assert_eq!(server.stats().ranges(), vec![(31, None)]);
        }

        #[tokio::test]
        async fn a_matching_final_file_is_not_downloaded_again() {
            let (server, downloader, planned, _dir) = setup().await;
            let mut bytes = vec![0u8; SIZE as usize];
            fill_bytes(31, 0, &mut bytes);
            std::fs::write(&planned.dest, &bytes).unwrap();
            let outcome = downloader
                .download_file(&planned, &crate::observe::NoProgress)
                .await
                .unwrap();
            assert!(
                matches!(outcome, Outcome::AlreadyPresent { .. }),
                "{outcome:?}"
            );
            assert_eq!(server.stats().storage_requests(), 0);
            assert_eq!(server.stats().resolves(), 0);
        }
    }

    #[tokio::test]
    async fn atomic_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("x.civitai.info");
        write_atomic(&path, b"{}".to_vec()).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert!(!with_suffix(&path, "tmp").exists());
    }
}
