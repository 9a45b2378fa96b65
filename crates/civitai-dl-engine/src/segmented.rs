//! Segmented downloads (experimental): one large file over several connections into one
//! preallocated `.part`, as aria2 and hf_transfer do.
//!
//! A single connection to a storage host is often capped well below the link's speed; N ranges
//! of the same file in parallel add up. Everything that makes the single-stream path safe still
//! holds: all segments share one signed URL (each resolve counts against Civitai's quota), every
//! answer must be a 206 whose `Content-Range` matches the request, each segment is retried and
//! resumed on its own, progress is recorded in `.part.json` so a later run continues the unfinished
//! segments, and the SHA-256 of the whole file is checked before the rename.
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
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, RANGE};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::download::{
    DownloadError, Downloader, FileKind, PartFile, PartMeta, PlannedFile, Source, Transferred,
    acceptable_type, file_len, hash_file, network, parse_content_range, size_consistent,
};
use crate::http::{SignedUrl, header, host_of};
use crate::lock;
use crate::observe::{TransferProgress, announce};

/// A segment flushes and records its progress after this many bytes.
const FLUSH_BYTES: u64 = 4 * 1024 * 1024;
/// `.part.json` is rewritten at most this often while segments run.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Write buffer of each segment.
const SEGMENT_BUFFER_BYTES: usize = 256 * 1024;

/// One range of the file: `[start, end)`, of which `done` bytes from `start` are on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Bytes written from `start` (flushed to the OS).
    pub done: u64,
}

impl Segment {
    fn len(&self) -> u64 {
        self.end - self.start
    }

    fn is_done(&self) -> bool {
        self.done >= self.len()
    }
}

/// Split `total` bytes into `count` nearly equal segments.
pub fn split(total: u64, count: usize) -> Vec<Segment> {
    let count = (count.max(1) as u64).min(total.max(1));
    let base = total / count;
    let extra = total % count;
    let mut start = 0;
    (0..count)
        .map(|i| {
            let len = base + u64::from(i < extra);
            let segment = Segment {
                start,
                end: start + len,
                done: 0,
            };
            start += len;
            segment
        })
        .collect()
}

/// Bytes from the start of the file that are on disk without a hole.
pub fn contiguous_prefix(segments: &[Segment]) -> u64 {
    let mut prefix = 0;
    for segment in segments {
        if segment.start != prefix {
            break;
        }
        prefix = segment.start + segment.done.min(segment.len());
        if !segment.is_done() {
            break;
        }
    }
    prefix
}

/// The segments' shared record: progress of each, saved to `.part.json` now and then.
struct Ledger<'a> {
    part: &'a PartFile,
    meta: Mutex<PartMeta>,
    last_save: Mutex<Instant>,
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
        let mut meta = self.lock();
        if let Some(segments) = meta.segments.as_mut() {
            segments[index].done = done;
        }
        let mut last = lock(&self.last_save);
        if last.elapsed() >= SAVE_EVERY {
            *last = Instant::now();
            self.write(&meta);
        }
    }

    fn save(&self) {
        self.write(&self.lock());
    }

    /// A lost progress record only costs re-downloading a range: the hash check at the end
    /// catches anything inconsistent, so a failed write here is logged, not fatal. Written to a
    /// temporary file and renamed, so a kill never leaves half a record.
    fn write(&self, meta: &PartMeta) {
        let json = serde_json::to_vec(meta).unwrap_or_default();
        let tmp = crate::download::with_suffix(&self.part.meta_path, "tmp");
        let written =
            std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &self.part.meta_path));
        if let Err(error) = written {
            tracing::debug!("cannot record segment progress: {error}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PartMeta> {
        lock(&self.meta)
    }
}

impl Downloader {
    /// Whether this file is fetched in segments: the feature is on, the file is large, its
    /// storage host has not refused parallel ranges. Returns the segments to use (the recorded
    /// ones when continuing).
    pub(crate) fn segment_plan(&self, file: &PlannedFile, meta: &PartMeta) -> Option<usize> {
        if self.options.segments < 2
            || file.kind != FileKind::Model
            || !matches!(file.source, Source::Civitai { .. })
            || (self.one_connection() && meta.segments.is_none())
        {
            return None;
        }
        let size = meta.total.or(file.expected_size)?;
        (size >= self.options.segment_threshold).then_some(self.options.segments)
    }

    /// Fetch a file as `count` parallel ranges into a preallocated `.part`, then hash it.
    pub(crate) async fn transfer_segmented(
        &self,
        file: &PlannedFile,
        part: &PartFile,
        meta: PartMeta,
        count: usize,
        bar: &dyn TransferProgress,
    ) -> Result<Transferred, DownloadError> {
        let url = self.signed_url(file).await?;
        let host = host_of(url.as_url());
        let mut parallel = !self.refuses_ranges(&host) && !self.one_connection();
        let meta = if recorded_segments_usable(&meta, file_len(&part.path).await) {
            meta
        } else if !parallel {
            return self.transfer(file, part, without_segments(meta), bar).await;
        } else {
            match self.probe_total(file, &url).await? {
                Some(total) => start_segments(part, meta, total, count).await?,
                None => {
                    self.remember_single_stream(&host);
                    return self.transfer(file, part, without_segments(meta), bar).await;
                }
            }
        };
        let total = meta.total.unwrap_or_default();
        let ledger = Ledger {
            part,
            meta: Mutex::new(meta),
            last_save: Mutex::new(Instant::now()),
        };
        let segments = ledger.lock().segments.clone().unwrap_or_default();
        bar.set(segments.iter().map(|s| s.done).sum(), Some(total));
        let mut transferred = 0;
        let mut refused = Vec::new();
        let mut failure = None;
        let mut any_success = false;
        let pending = || (0..segments.len()).filter(|i| !ledger.segment(*i).is_done());
        if parallel {
            let results = futures_util::future::join_all(
                pending().map(|i| self.fetch_segment(file, &url, &ledger, i, bar, true)),
            )
            .await;
            for result in results {
                match result {
                    Ok(written) => {
                        transferred += written;
                        any_success = true;
                    }
                    Err(DownloadError::RangesRefused { status, .. }) => refused.push(status),
                    Err(error) => failure = failure.or(Some(error)),
                }
            }
            if failure.is_none() && !refused.is_empty() {
                if !any_success && refused.iter().all(|s| *s == 403) {
                    // Every range refused as forbidden: the URL, not the parallelism, is the
                    // problem. The segments stay recorded; a fresh URL continues them.
                    ledger.save();
                    self.forget_signed_url(file);
                    return Err(DownloadError::Expired { host, status: 403 });
                }
                // Some ranges came and the extra connections were refused: the rest of the
                // segments, one at a time over one connection; nothing received is thrown away.
                self.remember_single_stream(&host);
                parallel = false;
            }
        }
        if !parallel && failure.is_none() {
            let indices: Vec<usize> = pending().collect();
            for i in indices {
                match self.fetch_segment(file, &url, &ledger, i, bar, false).await {
                    Ok(written) => transferred += written,
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
        }
        ledger.save();
        if let Some(error) = failure {
            if matches!(error, DownloadError::BadRange { .. }) {
                // The file is not what the record says any more: start over.
                part.discard().await?;
            }
            return Err(error);
        }
        sync(part).await?;
        let (size, sha256) = hash_file(&part.path, 0).await?;
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
            transferred,
            sha256,
        })
    }

    /// Learn the file's size with a one-byte range (as hf_transfer does); `None` when the host
    /// ignores ranges or gives no total (then only one stream makes sense).
    async fn probe_total(
        &self,
        file: &PlannedFile,
        url: &SignedUrl,
    ) -> Result<Option<u64>, DownloadError> {
        let request = self
            .http
            .get(url.as_url().clone())
            .header(RANGE, "bytes=0-0")
            .send();
        let response = tokio::select! {
            () = self.cancel.cancelled() => return Err(DownloadError::Cancelled),
            response = request => response.map_err(|e| network(e, 0))?,
        };
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => return Ok(None),
            _ => return Err(self.storage_error(file, &response)),
        }
        let content_type = header(&response, CONTENT_TYPE).unwrap_or_default();
        if !acceptable_type(file.kind, &content_type) {
            return Err(DownloadError::NotAFile {
                content_type,
                snippet: String::new(),
            });
        }
        let got = header(&response, CONTENT_RANGE).unwrap_or_default();
        let Some((0, 0, Some(total))) = parse_content_range(&got) else {
            return Ok(None);
        };
        if response.content_length() == Some(1) {
            // Read the one byte to the end, so this connection is finished before the segments
            // open theirs (a host counting connections per file must not see it as still open).
            let _ = response.bytes().await;
        }
        if let Some(expected) = file.expected_size
            && !size_consistent(expected, total)
        {
            // As on one stream: with a published hash the bytes are judged by it.
            if file.expected_sha256.is_none() {
                return Err(DownloadError::SizeMismatch {
                    expected,
                    got: total,
                });
            }
            tracing::warn!(
                "{}: the server sends {total} bytes where Civitai lists about {expected}; the \
                 SHA-256 check will decide",
                file.label
            );
        }
        Ok(Some(total))
    }

    /// One segment, retried and resumed on its own; returns the bytes it wrote.
    async fn fetch_segment(
        &self,
        file: &PlannedFile,
        url: &SignedUrl,
        ledger: &Ledger<'_>,
        index: usize,
        bar: &dyn TransferProgress,
        parallel: bool,
    ) -> Result<u64, DownloadError> {
        let written = std::sync::atomic::AtomicU64::new(0);
        self.retry
            .run(
                &self.cancel,
                |_| async {
                    let result = self
                        .segment_attempt(file, url, ledger, index, bar, parallel)
                        .await;
                    if let Ok(n) | Err(DownloadError::Network { written: n, .. }) = &result {
                        written.fetch_add(*n, std::sync::atomic::Ordering::Relaxed);
                    }
                    self.record_attempt(&result);
                    result
                },
                announce(
                    self.reporter.as_ref(),
                    format!("{} segment {}", file.label, index + 1),
                ),
            )
            .await?;
        Ok(written.into_inner())
    }

    /// One request for what is missing of a segment.
    async fn segment_attempt(
        &self,
        file: &PlannedFile,
        url: &SignedUrl,
        ledger: &Ledger<'_>,
        index: usize,
        bar: &dyn TransferProgress,
        parallel: bool,
    ) -> Result<u64, DownloadError> {
        let segment = ledger.segment(index);
        if segment.is_done() {
            return Ok(0);
        }
        let from = segment.start + segment.done;
        let last = segment.end - 1;
        let host = host_of(url.as_url());
        let request = self
            .http
            .get(url.as_url().clone())
            .header(RANGE, format!("bytes={from}-{last}"))
            .send();
        let mut response = tokio::select! {
            () = self.cancel.cancelled() => return Err(DownloadError::Cancelled),
            response = request => response.map_err(|e| network(e, 0))?,
        };
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
            _ => return Err(self.storage_error(file, &response)),
        }
        let got = header(&response, CONTENT_RANGE).unwrap_or_default();
        let total = ledger.lock().total;
        let matches_request = matches!(parse_content_range(&got),
            Some((a, b, t)) if a == from && b == last && (t.is_none() || t == total));
        if !matches_request {
            return Err(DownloadError::BadRange { got, offset: from });
        }
        let mut handle = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&ledger.part.path)
            .await
            .map_err(|e| ledger.part.io("open", e))?;
        handle
            .seek(SeekFrom::Start(from))
            .await
            .map_err(|e| ledger.part.io("seek", e))?;
        let mut writer = tokio::io::BufWriter::with_capacity(SEGMENT_BUFFER_BYTES, handle);
        let mut done = segment.done;
        let mut unflushed = 0u64;
        let mut written = 0u64;
        loop {
            let chunk = tokio::select! {
                () = self.cancel.cancelled() => {
                    flush(&mut writer, ledger.part).await?;
                    ledger.advance(index, done + unflushed);
                    return Err(DownloadError::Cancelled);
                }
                chunk = response.chunk() => chunk,
            };
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(error) => {
                    flush(&mut writer, ledger.part).await?;
                    ledger.advance(index, done + unflushed);
                    return Err(network(error, written));
                }
            };
            // Never write past the segment, whatever the server sends.
            let room = (segment.len() - done - unflushed).min(chunk.len() as u64) as usize;
            writer
                .write_all(&chunk[..room])
                .await
                .map_err(|e| ledger.part.io("write", e))?;
            let n = room as u64;
            unflushed += n;
            written += n;
            bar.advance(n);
            self.reporter.on_bytes(n);
            if unflushed >= FLUSH_BYTES {
                flush(&mut writer, ledger.part).await?;
                done += unflushed;
                unflushed = 0;
                ledger.advance(index, done);
            }
        }
        flush(&mut writer, ledger.part).await?;
        done += unflushed;
        ledger.advance(index, done);
        if done < segment.len() {
            return Err(DownloadError::Truncated {
                got: segment.start + done,
                expected: segment.end,
                written,
            });
        }
        Ok(written)
    }

    fn refuses_ranges(&self, host: &str) -> bool {
        lock(&self.single_stream_hosts).contains(host)
    }

    fn remember_single_stream(&self, host: &str) {
        tracing::warn!("{host} does not serve parallel ranges; using one connection per file");
        lock(&self.single_stream_hosts).insert(host.to_string());
    }
}

/// Whether a recorded segment layout can be continued: the `.part` has the file's full size and
/// the segments tile `[0, total)` with nothing claimed beyond a segment's end. Anything else (a
/// deleted or truncated `.part`, a record torn by a crash) starts over.
fn recorded_segments_usable(meta: &PartMeta, part_len: Option<u64>) -> bool {
    let (Some(total), Some(segments)) = (meta.total, &meta.segments) else {
        return false;
    };
    let tiles = segments.first().is_some_and(|s| s.start == 0)
        && segments.last().is_some_and(|s| s.end == total)
        && segments.windows(2).all(|w| w[0].end == w[1].start);
    part_len == Some(total) && tiles && segments.iter().all(|s| s.done <= s.len())
}

/// The record without a segment layout (for the one-stream path).
fn without_segments(mut meta: PartMeta) -> PartMeta {
    meta.segments = None;
    meta
}

/// Lay out segments for a `total`-byte file. A `.part` left by the one-stream path (the record
/// already vouches that it is this file) is kept: its bytes count as done in the first segments.
async fn start_segments(
    part: &PartFile,
    mut meta: PartMeta,
    total: u64,
    count: usize,
) -> Result<PartMeta, DownloadError> {
    let existing = file_len(&part.path).await.unwrap_or(0);
    let keep = if meta.segments.is_none() && existing <= total {
        existing
    } else {
        0
    };
    if keep == 0 {
        part.discard().await?;
    }
    preallocate(part, total).await?;
    let mut segments = split(total, count);
    for segment in &mut segments {
        segment.done = keep.clamp(segment.start, segment.end) - segment.start;
    }
    meta.total = Some(total);
    meta.segments = Some(segments);
    part.save_meta(&meta).await?;
    Ok(meta)
}

/// fsync the finished `.part` before it is hashed and renamed, as the one-stream path does.
async fn sync(part: &PartFile) -> Result<(), DownloadError> {
    let handle = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&part.path)
        .await
        .map_err(|e| part.io("open", e))?;
    handle.sync_all().await.map_err(|e| part.io("sync", e))
}

async fn flush(
    writer: &mut tokio::io::BufWriter<tokio::fs::File>,
    part: &PartFile,
) -> Result<(), DownloadError> {
    writer.flush().await.map_err(|e| part.io("write", e))
}

/// Give the `.part` its full size (sparse where the file system allows), keeping what it holds.
async fn preallocate(part: &PartFile, total: u64) -> Result<(), DownloadError> {
    if let Some(parent) = part.path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| part.io("create folder for", e))?;
    }
    let handle = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&part.path)
        .await
        .map_err(|e| part.io("create", e))?;
    handle
        .set_len(total)
        .await
        .map_err(|e| part.io("allocate", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_every_byte_once() {
        for (total, count) in [(100u64, 4usize), (101, 4), (3, 8), (1, 1), (10, 3)] {
            let segments = split(total, count);
            assert_eq!(segments.first().unwrap().start, 0);
            assert_eq!(segments.last().unwrap().end, total);
            for pair in segments.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
            }
            assert!(segments.iter().all(|s| s.len() > 0));
            assert!(segments.len() <= count);
        }
    }

    #[test]
    fn only_a_consistent_record_is_continued() {
        let meta = |total: u64, segments: Vec<Segment>| PartMeta {
            total: Some(total),
            segments: Some(segments),
            ..PartMeta::default()
        };
        let good = meta(400, split(400, 4));
        assert!(recorded_segments_usable(&good, Some(400)));
        assert!(!recorded_segments_usable(&good, None), "the .part is gone");
        assert!(
            !recorded_segments_usable(&good, Some(100)),
            "the .part is short"
        );
        let mut gap = split(400, 4);
        gap.remove(1);
        assert!(!recorded_segments_usable(&meta(400, gap), Some(400)));
        let mut overdone = split(400, 4);
        overdone[2].done = 101;
        assert!(!recorded_segments_usable(&meta(400, overdone), Some(400)));
        assert!(!recorded_segments_usable(
            &without_segments(good),
            Some(400)
        ));
    }

    #[test]
    fn contiguous_prefix_stops_at_the_first_hole() {
        let mut s = split(400, 4);
        assert_eq!(contiguous_prefix(&s), 0);
        s[0].done = 100;
        s[1].done = 30;
        s[2].done = 100;
        assert_eq!(contiguous_prefix(&s), 130);
        s[1].done = 100;
        assert_eq!(contiguous_prefix(&s), 300);
        s[3].done = 100;
        assert_eq!(contiguous_prefix(&s), 400);
    }
}
