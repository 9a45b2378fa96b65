//! Segmented downloads (experimental): one large file over several connections into one
//! preallocated `.part`, as aria2 and hf_transfer do.
//!
//! A single connection to a storage host is often capped well below the link's speed; N ranges
//! of the same file in parallel add up. Everything that makes the single-stream path safe still
//! holds: all segments share one signed URL (each resolve counts against Civitai's quota), every
//! answer must be a 206 whose `Content-Range` matches the request, progress is recorded in
//! `.part.json` so a later attempt or run continues the unfinished segments, and the SHA-256 of
//! the whole file is checked before the rename.
//!
//! Retries: an attempt at the file asks once for every unfinished segment, in parallel; the
//! file's retry policy decides about the next attempt, which resumes each segment where it
//! stopped. One budget per file: a retry loop per segment inside the file's loop made a dead host
//! cost attempts × attempts requests per segment. An expired URL is renewed once and every
//! unfinished segment continues with the new one. When fewer ranges are unfinished than there are
//! connections (a range a reset left, or the few left after a resume), the largest are split in
//! two, down to 4 MiB pieces, so the idle connections share them (`part::rebalance`).
//!
//! Hashing: ranges arrive out of order, so the hash cannot be streamed. The finished file is
//! re-read once at the end; with hardware SHA-256 that costs about 0.6 s per GiB from the page
//! cache, far less than keeping N hasher states and stitching them (SHA-256 cannot be combined).
//!
//! A host that refuses the extra connections (403 or 429 on a range while another is open) is
//! remembered for the run; the file continues as one stream from its contiguous prefix.

use std::io::SeekFrom;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::CONTENT_RANGE;
use tokio::io::AsyncSeekExt;

use crate::fetch::error::DownloadError;
use crate::fetch::hash::hash_file;
use crate::fetch::part::{
    PartFile, PartMeta, Segment, rebalance, recorded_segments_usable, start_segments, sync,
    without_segments,
};
use crate::fetch::stream::{BodyCopy, FlushEvery};
use crate::fetch::validate::{check_size, check_type, parse_content_range};
use crate::fetch::{Connections, FileFetch, Transferred};
use crate::fs::{Durability, file_len, write_atomic_blocking};
use crate::http::retry::{RetryClass, Retryable};
use crate::http::{SignedUrl, header, host_of};
use crate::lock;

/// A segment flushes and records its progress after this many bytes.
const FLUSH_BYTES: u64 = 4 * 1024 * 1024;
/// `.part.json` is rewritten at most this often while segments run.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// A range is split for an idle connection only into pieces at least this large: below it, the
/// extra request costs more than the connection would save.
const MIN_PIECE_BYTES: u64 = 4 * 1024 * 1024;
/// Write buffer of each segment.
const SEGMENT_BUFFER_BYTES: usize = 256 * 1024;

/// Fetch a file as `count` parallel ranges into a preallocated `.part`, then hash it. Falls back
/// to one stream when the host serves no ranges.
pub(super) async fn transfer(
    fetch: &FileFetch<'_>,
    part: &PartFile,
    meta: PartMeta,
    count: usize,
) -> Result<Transferred, DownloadError> {
    let (fetcher, file) = (fetch.fetcher, fetch.file);
    let url = fetcher.signed_url(file).await?;
    let host = host_of(url.as_url());
    let mut parallel = !fetcher.refuses_ranges(&host) && fetch.connections != Connections::One;
    let mut meta = if recorded_segments_usable(&meta, file_len(&part.path).await) {
        meta
    } else if !parallel {
        return fetch.transfer(part, without_segments(meta)).await;
    } else {
        match probe_total(fetch, &url).await? {
            Some(total) => start_segments(part, meta, total, count).await?,
            None => {
                fetcher.remember_single_stream(&host);
                return fetch.transfer(part, without_segments(meta)).await;
            }
        }
    };
    if parallel && let Some(segments) = &meta.segments {
        // Fewer unfinished ranges than connections (a range a reset left, or a resume): split
        // them, so no connection sits idle while one range finishes alone.
        meta.segments = Some(rebalance(segments, count, MIN_PIECE_BYTES));
    }
    let total = meta.total.unwrap_or_default();
    let run = Segments {
        fetch,
        url,
        ledger: Ledger {
            part,
            meta: Mutex::new(meta),
            last_save: Mutex::new(Instant::now()),
            saving: Mutex::new(None),
        },
    };
    let segments = run.ledger.lock().segments.clone().unwrap_or_default();
    fetch
        .progress
        .set(segments.iter().map(|s| s.done).sum(), Some(total));
    let mut round = Round::default();
    let pending = || (0..segments.len()).filter(|i| !run.ledger.segment(*i).is_done());
    if parallel {
        let requests = pending().map(|i| run.segment_attempt(i, true));
        for result in futures_util::future::join_all(requests).await {
            round.add(result);
        }
        if round.failure.is_none() && !round.refused.is_empty() {
            if round.finished == 0 && round.refused.iter().all(|s| *s == 403) {
                // Every range refused as forbidden, all at once with the same URL: the URL has
                // expired, not the parallelism. The segments stay recorded; a fresh URL
                // continues every one of them in parallel.
                run.ledger.save().await;
                return Err(fetch.renew_or_refuse(host, 403, "every range was refused".into()));
            }
            if round.refused.iter().any(|s| *s != 403) {
                // 429 or a 200 to the extra connections: a rule of the host, for every file.
                fetcher.remember_single_stream(&host);
            } else {
                // Some ranges came and others were forbidden with the same URL at the same
                // moment: this file's rest goes one range at a time; the next file tries again,
                // since a 403 is more often about a URL than about a host.
                tracing::info!(
                    "{}: {host} refused some parallel ranges; continuing one at a time",
                    file.label
                );
            }
            parallel = false;
        }
    }
    if !parallel && round.failure.is_none() {
        let indices: Vec<usize> = pending().collect();
        for i in indices {
            round.add(run.segment_attempt(i, false).await);
            if round.failure.is_some() {
                break;
            }
        }
    }
    run.ledger.save().await;
    if let Some(error) = round.failure {
        if matches!(error, DownloadError::BadRange { .. }) {
            // The file is not what the record says any more: start over.
            part.discard().await?;
        }
        return Err(error.with_written(round.written));
    }
    sync(part).await?;
    let (size, sha256) = hash_file(&part.path, 0, &fetcher.cancel).await?;
    if size != total {
        part.discard().await?;
        return Err(DownloadError::Truncated {
            got: size,
            expected: total,
            written: 0,
        });
    }
    Ok(Transferred {
        total: size,
        transferred: round.written,
        sha256,
    })
}

/// What one attempt at a file's unfinished segments came to: each unfinished segment was asked
/// for once. The file's retry policy decides about the next attempt, so a segment never has a
/// retry loop of its own nested inside the file's (one budget per file).
#[derive(Default)]
struct Round {
    /// Bytes all segments wrote.
    written: u64,
    /// Segments that finished.
    finished: usize,
    /// Statuses of ranges the host refused while other ranges were open.
    refused: Vec<u16>,
    /// What failed, a fatal failure before a passing one.
    failure: Option<DownloadError>,
}

impl Round {
    fn add(&mut self, result: Result<u64, DownloadError>) {
        match result {
            Ok(written) => {
                self.written += written;
                self.finished += 1;
            }
            Err(DownloadError::RangesRefused { status, .. }) => self.refused.push(status),
            Err(error) => {
                self.written += error.written();
                let fatal = |e: &DownloadError| e.retry_class() == RetryClass::Fatal;
                if self
                    .failure
                    .as_ref()
                    .is_none_or(|kept| !fatal(kept) && fatal(&error))
                {
                    self.failure = Some(error);
                }
            }
        }
    }
}

/// Learn the file's size with a one-byte range (as hf_transfer does); `None` when the host
/// ignores ranges or gives no total (then only one stream makes sense).
async fn probe_total(fetch: &FileFetch<'_>, url: &SignedUrl) -> Result<Option<u64>, DownloadError> {
    let (fetcher, file) = (fetch.fetcher, fetch.file);
    let response = fetcher.get(url, Some("0-0".into())).await?;
    match response.status() {
        StatusCode::PARTIAL_CONTENT => {}
        StatusCode::OK => return Ok(None),
        _ => return Err(fetch.storage_error(response).await),
    }
    check_type(file.kind, &response)?;
    let got = header(&response, CONTENT_RANGE).unwrap_or_default();
    let Some((0, 0, Some(total))) = parse_content_range(&got) else {
        return Ok(None);
    };
    if response.content_length() == Some(1) {
        // Read the one byte to the end, so this connection is finished before the segments
        // open theirs (a host counting connections per file must not see it as still open).
        let _ = response.bytes().await;
    }
    check_size(file, total)?;
    Ok(Some(total))
}

/// The segments of one file in flight: what every segment request shares.
struct Segments<'a> {
    fetch: &'a FileFetch<'a>,
    url: SignedUrl,
    ledger: Ledger<'a>,
}

impl Segments<'_> {
    /// One request for what is missing of a segment.
    async fn segment_attempt(&self, index: usize, parallel: bool) -> Result<u64, DownloadError> {
        let fetcher = self.fetch.fetcher;
        let segment = self.ledger.segment(index);
        if segment.is_done() {
            return Ok(0);
        }
        let from = segment.start + segment.done;
        let last = segment.end - 1;
        let host = host_of(self.url.as_url());
        let mut response = fetcher
            .get(&self.url, Some(format!("{from}-{last}")))
            .await?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => {
                return Err(DownloadError::RangesRefused { host, status: 200 });
            }
            s if parallel && matches!(s.as_u16(), 403 | 429) => {
                return Err(DownloadError::RangesRefused {
                    host,
                    status: s.as_u16(),
                });
            }
            _ => return Err(self.fetch.storage_error(response).await),
        }
        self.fetch.url_served();
        let got = header(&response, CONTENT_RANGE).unwrap_or_default();
        let total = self.ledger.lock().total;
        let matches_request = matches!(parse_content_range(&got),
            Some((a, b, t)) if a == from && b == last && (t.is_none() || t == total));
        if !matches_request {
            return Err(DownloadError::BadRange { got, offset: from });
        }
        let part = self.ledger.part;
        let mut handle = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&part.path)
            .await
            .map_err(|e| part.io("open", e))?;
        handle
            .seek(SeekFrom::Start(from))
            .await
            .map_err(|e| part.io("seek", e))?;
        let mut writer = tokio::io::BufWriter::with_capacity(SEGMENT_BUFFER_BYTES, handle);
        let copy = BodyCopy {
            cancel: &fetcher.cancel,
            progress: self.fetch.progress,
            reporter: fetcher.reporter.as_ref(),
            part,
            limit: segment.len() - segment.done,
            flush: FlushEvery::Bytes(FLUSH_BYTES),
            min_speed: fetcher.min_speed(),
        };
        let written = copy
            .run(
                &mut response,
                &mut writer,
                |_| Ok(()),
                |flushed| self.ledger.advance(index, segment.done + flushed),
            )
            .await?;
        let done = segment.done + written;
        if done < segment.len() {
            return Err(DownloadError::Truncated {
                got: segment.start + done,
                expected: segment.end,
                written,
            });
        }
        Ok(written)
    }
}

/// The segments' shared record: progress of each, saved to `.part.json` now and then.
struct Ledger<'a> {
    part: &'a PartFile,
    meta: Mutex<PartMeta>,
    last_save: Mutex<Instant>,
    /// The save under way, if any. Saves sync the `.part`, so they run on the blocking pool,
    /// not on the runtime thread that streams the segments; one at a time, since they share a
    /// temp file.
    saving: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Ledger<'_> {
    fn segment(&self, index: usize) -> Segment {
        self.lock()
            .segments
            .as_ref()
            .map(|s| s[index])
            .unwrap_or_default()
    }

    fn advance(&self, index: usize, done: u64) {
        let snapshot = {
            let mut meta = self.lock();
            if let Some(segments) = meta.segments.as_mut() {
                segments[index].done = done;
            }
            let mut last = lock(&self.last_save);
            if last.elapsed() < SAVE_EVERY {
                return;
            }
            *last = Instant::now();
            meta.clone()
        };
        // A save still under way makes this one unnecessary: it claims as much or less, and a
        // record claiming less than is on disk only costs re-fetching a range.
        let mut saving = lock(&self.saving);
        if saving
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished)
        {
            *saving = Some(self.write_in_background(snapshot));
        }
    }

    /// The final record of this attempt, once any save under way has landed (so an older
    /// record can never be written over it, nor after the file is committed).
    async fn save(&self) {
        let under_way = lock(&self.saving).take();
        if let Some(handle) = under_way {
            let _ = handle.await;
        }
        let snapshot = self.lock().clone();
        let _ = self.write_in_background(snapshot).await;
    }

    /// A lost progress record only costs re-downloading a range, so a failed write here is
    /// logged, not fatal. The record itself is Replace, not Durable (losing the latest one only
    /// rewinds progress); the data it claims is synced before it is written.
    fn write_in_background(&self, meta: PartMeta) -> tokio::task::JoinHandle<()> {
        let (path, meta_path) = (self.part.path.clone(), self.part.meta_path.clone());
        tokio::task::spawn_blocking(move || {
            // The data first: a record must never claim bytes a power cut could still lose
            // (they would read back as zeros, which nothing catches in a file without a
            // published hash).
            if let Err(error) = std::fs::File::open(&path).and_then(|f| f.sync_data()) {
                tracing::debug!("cannot sync segment data, progress not recorded: {error}");
                return;
            }
            let json = serde_json::to_vec(&meta).unwrap_or_default();
            if let Err(error) = write_atomic_blocking(&meta_path, &json, Durability::Replace) {
                tracing::debug!("cannot record segment progress: {error}");
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PartMeta> {
        lock(&self.meta)
    }
}
