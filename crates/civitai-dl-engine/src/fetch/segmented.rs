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
//! unfinished segment continues with the new one.
//!
//! Pieces, in file order: a large file is laid out as one piece per connection and a free rest
//! (`part::lay_out`); a connection that finishes its piece takes the next one from the front of
//! the rest (`part::next_piece`). Every request asks for a whole piece, so its body ends cleanly
//! and the connection is reused, and the bytes arrive close to file order, which lets the hash
//! follow them (below). Each piece costs its connection one wait for the first byte, so their
//! size (16 to 128 MiB, [`pieces`]) grows with the wait the probe and every request measure; a
//! connection's share of what is left is cut into equal pieces, so all end together.
//!
//! No connection idles while a range is left (as aria2 splits ranges again): when fewer ranges
//! are unfinished than there are connections (a range a reset left, or the few left after a
//! resume), the largest are split at the start of the attempt (`part::rebalance`); and once no
//! free range is left, a connection that finishes early takes the second half of the busiest
//! range's rest, the busy transfer stopping at the new end (`part::steal`, work stealing).
//! Pieces are at least 4 MiB. A split is recorded at once and keeps the record a tiling of the
//! file, so a kill at any instant leaves a record the next run can continue.
//!
//! Hashing: ranges arrive out of order and SHA-256 consumes bytes in order only (states cannot be
//! combined), so one state follows the contiguous prefix as it completes
//! ([`PrefixHasher`](crate::fetch::hash::PrefixHasher)), reading each completed stretch back from
//! the page cache. When the last byte lands only the part that was not yet prefix is left; the
//! final fsync runs beside that catch-up instead of before it.
//!
//! A host that refuses the extra connections (403 or 429 on a range while another is open) is
//! remembered for the run; the file continues as one stream from its contiguous prefix. A host
//! that throttles (503 SlowDown) loses the refused connections only: the others take their
//! ranges, and an attempt that got every byte is not failed for them.

use std::io::SeekFrom;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::CONTENT_RANGE;
use tokio::io::AsyncSeekExt;

use crate::fetch::error::DownloadError;
use crate::fetch::hash::PrefixHasher;
use crate::fetch::part::{
    PartFile, PartMeta, Pieces, Segment, contiguous_prefix, next_piece, rebalance,
    recorded_segments_usable, start_segments, steal, sync, without_segments,
};
use crate::fetch::stream::{BodyCopy, FlushEvery, Limit};
use crate::fetch::validate::{check_size, check_type, parse_content_range};
use crate::fetch::{Connections, FileFetch, PlannedFile, Transferred};
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
/// Write buffer of each segment, held twice (ours and the file handle's): with 16 segments in
/// flight, 128 KiB kept the peak RSS at 36-43 MiB where 256 KiB gave 44-50 MiB, at the same speed
/// (four 200 MiB files over 4 segments each, 5 runs each, alternating).
const SEGMENT_BUFFER_BYTES: usize = 128 * 1024;
/// The largest piece is at least this large, and a file below 5 of them over 4 connections
/// (80 MiB) keeps equal segments, where the hash tail is a few tens of milliseconds anyway.
/// Pieces themselves are cut to share the rest evenly (`Pieces::size`), down to
/// [`MIN_PIECE_BYTES`].
const MIN_FILE_PIECE_BYTES: u64 = 16 * 1024 * 1024;
/// The SHA-256 speed assumed when weighing a piece's wait against the hash left after the last
/// byte: CPUs with SHA instructions do 1.5-2 GB/s, older ones about half a gigabyte.
const HASH_BYTES_PER_SEC: f64 = 1e9;
/// Pieces are aimed at no more than this (a share is cut into the nearest whole number of them,
/// so one may be half as large again), so the hash of a many-GB file stays close behind the
/// bytes (about one piece per connection left to hash at the end); 128 MiB takes seconds even on
/// a fast connection, so the round trip per piece stays a few percent.
const MAX_PIECE_BYTES: u64 = 128 * 1024 * 1024;

/// The pieces of a `total`-byte file over `count` connections, when a request waits `wait` for
/// its first byte. Each piece costs its connection one wait, idle; the last round of pieces (one
/// per connection) is hashed after the last byte. Their sum, `total / (count × P) × wait +
/// count × P / hash speed`, is least at `P = √(total × wait × hash speed) / count`. On loopback
/// that is the smallest piece; behind a CDN 100 ms away a 200 MiB file gets one range per
/// connection, as aria2c does, where 12.5 MiB pieces spent a fifth of their time waiting.
fn pieces(total: u64, count: usize, wait: Duration) -> Pieces {
    let count = count.max(1);
    let best = (total as f64 * wait.as_secs_f64() * HASH_BYTES_PER_SEC).sqrt() / count as f64;
    Pieces {
        max: (best as u64).clamp(MIN_FILE_PIECE_BYTES, MAX_PIECE_BYTES),
        min: MIN_PIECE_BYTES,
        connections: count,
    }
}

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
    // The wait for a first byte, from the probe; a resumed file learns it from its first pieces.
    let mut wait = Duration::ZERO;
    let mut meta = if recorded_segments_usable(&meta, file_len(&part.path).await) {
        meta
    } else if !parallel {
        return fetch.transfer(part, without_segments(meta)).await;
    } else {
        let asked = Instant::now();
        let probed = probe_total(fetch, &url).await?;
        wait = asked.elapsed();
        match probed {
            Some(total) => start_segments(part, meta, total, pieces(total, count, wait)).await?,
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
        ledger: Ledger::new(part, meta, pieces(total, count, wait)),
        hasher: PrefixHasher::start(&part.path, &fetcher.cancel),
    };
    // A resumed file's finished prefix is hashed while the rest streams.
    run.hasher.advance(run.ledger.prefix());
    let done: u64 = run.ledger.segments().iter().map(|s| s.done).sum();
    fetch.progress.set(done, Some(total));
    let mut round = Round::default();
    // Read afresh each time: work stealing appends segments while the round runs.
    let pending = || {
        let segments = run.ledger.segments();
        (0..segments.len()).filter(move |&i| !segments[i].is_done())
    };
    if parallel {
        // One worker per connection; the ranges beyond are taken piece by piece as they finish.
        let first: Vec<usize> = pending().take(count).collect();
        let workers = first.into_iter().map(|i| run.worker(i));
        for results in futures_util::future::join_all(workers).await {
            for result in results {
                round.add(result);
            }
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
    if pending().next().is_none() {
        round.forgive(file);
    }
    let landed = Instant::now();
    if round.failure.is_none() && pending().next().is_none() {
        // Complete: the file is about to be hashed and committed, and the commit removes the
        // record. Writing it now would put a second full fsync in front of the final one; a
        // kill before the commit finds the last record, which claims a little less.
        run.ledger.settle().await;
    } else {
        run.ledger.save().await;
    }
    if let Some(error) = round.failure {
        if matches!(error, DownloadError::BadRange { .. }) {
            // The file is not what the record says any more: start over.
            part.discard().await?;
        }
        return Err(error.with_written(round.written));
    }
    let size = file_len(&part.path).await.unwrap_or(0);
    if size != total {
        part.discard().await?;
        return Err(DownloadError::Truncated {
            got: size,
            expected: total,
            written: 0,
        });
    }
    let mut hasher = run.hasher;
    let (synced, sha256) = tokio::join!(sync(part), hasher.finish(total, &fetcher.cancel));
    synced?;
    Ok(Transferred {
        total,
        transferred: round.written,
        sha256: sha256?,
        landed,
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
    /// Every range arrived: a connection that failed on the way (a host throttling one client
    /// refuses the connections over its limit with 503 SlowDown) had its range taken by the
    /// connections still open. Failing the attempt for it would only wait out a `Retry-After`
    /// for a retry with nothing left to fetch. A fatal failure (the file changed) stands; the
    /// hash judges the bytes either way.
    fn forgive(&mut self, file: &PlannedFile) {
        if self
            .failure
            .as_ref()
            .is_some_and(|e| e.retry_class() != RetryClass::Fatal)
            && let Some(error) = self.failure.take()
        {
            tracing::info!(
                "{}: a connection failed ({error}); the others fetched its range",
                file.label
            );
        }
    }

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
    /// Hears the contiguous prefix grow with every flush.
    hasher: PrefixHasher,
}

impl Segments<'_> {
    /// One connection's share of an attempt: its segment, then, each time it finishes early,
    /// the second half of the busiest segment's rest (work stealing), until nothing is worth
    /// splitting. A connection whose request failed stops: the failure is the next attempt's
    /// business, under the file's retry budget.
    async fn worker(&self, first: usize) -> Vec<Result<u64, DownloadError>> {
        let mut results = Vec::new();
        let mut index = first;
        self.ledger.set_busy(index, true);
        loop {
            let result = self.segment_attempt(index, true).await;
            self.ledger.set_busy(index, false);
            let finished = result.is_ok();
            results.push(result);
            if !finished || self.fetch.fetcher.cancel.is_cancelled() {
                return results;
            }
            match self.ledger.steal() {
                Some(stolen) => index = stolen,
                None => return results,
            }
        }
    }

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
        let asked = Instant::now();
        let mut response = fetcher
            .get(&self.url, Some(format!("{from}-{last}")))
            .await?;
        let wait = asked.elapsed();
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
        self.ledger.learn(wait);
        let got = header(&response, CONTENT_RANGE).unwrap_or_default();
        let total = self.ledger.total();
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
        // tokio copies each write into a buffer of its own, up to 2 MiB by default, and a chunk
        // larger than the BufWriter's passes straight through: with 16 segments that was 13 MB
        // of the run's 37 MB peak (massif). One write buffer's worth is enough.
        handle.set_max_buf_size(SEGMENT_BUFFER_BYTES);
        let mut writer = tokio::io::BufWriter::with_capacity(SEGMENT_BUFFER_BYTES, handle);
        let copy = BodyCopy {
            cancel: &fetcher.cancel,
            progress: self.fetch.progress,
            reporter: fetcher.reporter.as_ref(),
            part,
            limit: Limit::Live(&|written, len| self.ledger.claim(index, from, written, len)),
            flush: FlushEvery::Bytes(FLUSH_BYTES),
            min_speed: fetcher.min_speed(),
        };
        let written = copy
            .run(
                &mut response,
                &mut writer,
                |_| Ok(()),
                |flushed| {
                    let prefix = self.ledger.advance(index, segment.done + flushed);
                    self.hasher.advance(prefix);
                },
            )
            .await?;
        // The end may have moved closer while this ran (stolen by another connection).
        let now = self.ledger.segment(index);
        let done = segment.done + written;
        if done < now.len() {
            return Err(DownloadError::Truncated {
                got: now.start + done,
                expected: now.end,
                written,
            });
        }
        Ok(written)
    }
}

/// The segments' shared record: progress of each, saved to `.part.json` now and then.
struct Ledger<'a> {
    part: &'a PartFile,
    /// Connections sharing the file.
    connections: usize,
    /// The piece size aimed at ([`Pieces::max`]), raised from the measured wait before each
    /// piece's first byte ([`Ledger::learn`]).
    max_piece: AtomicU64,
    book: Mutex<Book>,
    last_save: Mutex<Instant>,
    /// The save under way, if any. Saves sync the `.part`, so they run on the blocking pool,
    /// not on the runtime thread that streams the segments; one at a time, since they share a
    /// temp file.
    saving: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The record and what only this attempt knows about each segment. Segments split by work
/// stealing are appended, so an index names the same segment throughout; the record is sorted
/// by start whenever it is written.
struct Book {
    meta: PartMeta,
    /// Bytes of each segment its transfer has taken so far, flushed or not (at least `done`).
    received: Vec<u64>,
    /// Whether a connection is on each segment now.
    busy: Vec<bool>,
}

impl Ledger<'_> {
    fn new(part: &PartFile, meta: PartMeta, pieces: Pieces) -> Ledger<'_> {
        let received: Vec<u64> = meta.segments.iter().flatten().map(|s| s.done).collect();
        let busy = vec![false; received.len()];
        Ledger {
            part,
            connections: pieces.connections,
            max_piece: AtomicU64::new(pieces.max),
            book: Mutex::new(Book {
                meta,
                received,
                busy,
            }),
            last_save: Mutex::new(Instant::now()),
            saving: Mutex::new(None),
        }
    }

    fn segments(&self) -> Vec<Segment> {
        self.lock().meta.segments.clone().unwrap_or_default()
    }

    fn segment(&self, index: usize) -> Segment {
        self.lock()
            .meta
            .segments
            .as_ref()
            .map(|s| s[index])
            .unwrap_or_default()
    }

    fn total(&self) -> Option<u64> {
        self.lock().meta.total
    }

    fn set_busy(&self, index: usize, busy: bool) {
        if let Some(flag) = self.lock().busy.get_mut(index) {
            *flag = busy;
        }
    }

    /// How many of the next `len` bytes of segment `index` (whose transfer started at byte
    /// `from` and has written `written`) may be written; recorded as received, so a steal never
    /// splits below them.
    fn claim(&self, index: usize, from: u64, written: u64, len: usize) -> usize {
        let mut book = self.lock();
        let Some(segment) = book.meta.segments.as_ref().map(|s| s[index]) else {
            return 0;
        };
        let allowed = segment.end.saturating_sub(from + written);
        let granted = allowed.min(len as u64);
        book.received[index] = from + written + granted - segment.start;
        granted as usize
    }

    /// A range request waited `wait` for its first byte: larger pieces from now on if that is
    /// longer than the pieces were sized for ([`pieces`]).
    fn learn(&self, wait: Duration) {
        let total = self.total().unwrap_or_default();
        let wanted = pieces(total, self.connections, wait).max;
        let before = self.max_piece.fetch_max(wanted, Ordering::Relaxed);
        // Said when the size it names changes, not for every few bytes more of the same wait.
        const MIB: u64 = 1024 * 1024;
        if wanted / MIB > before / MIB {
            tracing::debug!(
                "{}: {} ms before the first byte of a range; pieces of up to {} MiB from now on",
                self.part.path.display(),
                wait.as_millis(),
                wanted / MIB
            );
        }
    }

    /// Work for an idle connection, marked busy: the next piece of a free range
    /// ([`next_piece`]), else half of the busiest segment's rest ([`steal`]).
    fn steal(&self) -> Option<usize> {
        let (stolen, snapshot) = {
            let mut book = self.lock();
            let Book {
                meta,
                received,
                busy,
            } = &mut *book;
            let segments = meta.segments.as_mut()?;
            let pieces = Pieces {
                max: self.max_piece.load(Ordering::Relaxed),
                min: MIN_PIECE_BYTES,
                connections: self.connections,
            };
            let stolen = match next_piece(segments, received, busy, pieces) {
                Some(free) => free,
                None => {
                    let stolen = steal(segments, received, busy, MIN_PIECE_BYTES)?;
                    received.push(0);
                    busy.push(true);
                    stolen
                }
            };
            (stolen, book.record())
        };
        // Recorded at once: a kill now must find the new layout, not redo the stolen range
        // inside the old one.
        self.save_in_background(snapshot, true);
        Some(stolen)
    }

    /// Segment `index` has `done` bytes in the file; returns the file's contiguous prefix.
    fn advance(&self, index: usize, done: u64) -> u64 {
        let (prefix, snapshot) = {
            let mut book = self.lock();
            if let Some(segments) = book.meta.segments.as_mut() {
                segments[index].done = done;
            }
            let snapshot = book.record();
            let prefix = contiguous_prefix(snapshot.segments.as_deref().unwrap_or_default());
            let mut last = lock(&self.last_save);
            if last.elapsed() < SAVE_EVERY {
                return prefix;
            }
            *last = Instant::now();
            (prefix, snapshot)
        };
        self.save_in_background(snapshot, false);
        prefix
    }

    /// The bytes from the start of the file that every segment before them has finished.
    fn prefix(&self) -> u64 {
        let record = self.lock().record();
        contiguous_prefix(record.segments.as_deref().unwrap_or_default())
    }

    /// Save `snapshot` after any save under way. Progress alone may skip it instead (`must`
    /// false): the save under way claims a little less, which only costs re-fetching a range.
    /// A new layout (a steal) must not be skipped: the next save may be long in coming.
    fn save_in_background(&self, snapshot: PartMeta, must: bool) {
        let mut saving = lock(&self.saving);
        let under_way = saving.as_ref().is_some_and(|h| !h.is_finished());
        if under_way && !must {
            return;
        }
        let earlier = saving.take();
        *saving = Some(self.write_in_background(snapshot, earlier));
    }

    /// Wait for any save under way, so no record can be written after the file is committed.
    async fn settle(&self) {
        let under_way = lock(&self.saving).take();
        if let Some(handle) = under_way {
            let _ = handle.await;
        }
    }

    /// The final record of this attempt, once any save under way has landed (so an older
    /// record can never be written over it, nor after the file is committed).
    async fn save(&self) {
        self.settle().await;
        let snapshot = self.lock().record();
        let _ = self.write_in_background(snapshot, None).await;
    }

    /// A lost progress record only costs re-downloading a range, so a failed write here is
    /// logged, not fatal. The record itself is Replace, not Durable (losing the latest one only
    /// rewinds progress); the data it claims is synced before it is written.
    fn write_in_background(
        &self,
        meta: PartMeta,
        after: Option<tokio::task::JoinHandle<()>>,
    ) -> tokio::task::JoinHandle<()> {
        let (path, meta_path) = (self.part.path.clone(), self.part.meta_path.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            // Saves share a temp file and must land in order.
            if let Some(earlier) = after {
                let _ = runtime.block_on(earlier);
            }
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        lock(&self.book)
    }
}

impl Book {
    /// The record as saved: segments in file order, as a record must tile the file.
    fn record(&self) -> PartMeta {
        let mut meta = self.meta.clone();
        if let Some(segments) = meta.segments.as_mut() {
            segments.sort_by_key(|s| s.start);
        }
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::part::{lay_out, split};

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn pieces_grow_with_the_wait_for_a_first_byte() {
        let loopback = pieces(200 * MIB, 4, Duration::from_millis(1));
        assert_eq!(
            loopback.max, MIN_FILE_PIECE_BYTES,
            "a wait this short costs nothing"
        );
        assert!(
            lay_out(200 * MIB, loopback).len() > 4,
            "pieces in file order"
        );
        let far = pieces(200 * MIB, 4, Duration::from_millis(100));
        assert_eq!(
            lay_out(200 * MIB, far),
            split(200 * MIB, 4),
            "one range per connection, not a wait per piece"
        );
        let checkpoint = pieces(6_500_000_000, 4, Duration::from_millis(100));
        assert_eq!(
            checkpoint.max, MAX_PIECE_BYTES,
            "the hash stays close behind"
        );
    }
}
