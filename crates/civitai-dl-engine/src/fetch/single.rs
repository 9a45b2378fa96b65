//! The one-stream transfer: continue the `.part` from its length with one request, hashing as
//! the bytes arrive (a resumed transfer first re-hashes the prefix it continues), then fsync.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, ETAG};
use sha2::{Digest, Sha256};

use crate::fetch::error::{DownloadError, network};
use crate::fetch::hash::{hash_file, hash_prefix, hex};
use crate::fetch::part::{PartFile, PartMeta};
use crate::fetch::stream::{BodyCopy, FlushEvery, Limit, Writeback};
use crate::fetch::validate::{parse_content_range, reject_markup, response_total, size_consistent};
use crate::fetch::{FileFetch, Transferred};
use crate::fs::file_len;
use crate::http::header;

/// Write buffer: large enough that each hop to the blocking pool moves plenty of bytes (4 MiB
/// measured ~15 % faster than 256 KiB on a 1 GiB loopback download, `benches/throughput.sh`).
const WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// However slowly a transfer runs, what it received reaches the `.part` at least this often, so a
/// 4 MiB buffer never hides progress from a kill.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How much of a complete-looking hashless `.part` is compared with the server before it is
/// trusted (the tail is what a crash leaves unwritten).
const TAIL_CHECK_BYTES: u64 = 64 * 1024;

impl FileFetch<'_> {
    /// Whether the last bytes of a complete-looking `.part` are the server's. A crash can leave a
    /// full-length file whose end was never written (zeros where the bytes should be); comparing
    /// the tail costs one small range request.
    async fn tail_matches(&self, part: &PartFile, total: u64) -> Result<bool, DownloadError> {
        let (fetcher, file) = (self.fetcher, self.file);
        let start = total - TAIL_CHECK_BYTES.min(total);
        let url = fetcher.signed_url(file).await?;
        let response = fetcher
            .get(&url, Some(format!("{start}-{}", total - 1)))
            .await?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            // A host that ignores ranges cannot vouch for a tail: start over.
            StatusCode::OK => return Ok(false),
            _ => return Err(self.storage_error(response).await),
        }
        let announced = header(&response, CONTENT_RANGE).unwrap_or_default();
        if parse_content_range(&announced) != Some((start, total - 1, Some(total))) {
            return Ok(false);
        }
        let served = response.bytes().await.map_err(|e| network(e, 0))?;
        let (path, len) = (part.path.clone(), served.len());
        let ours = tokio::task::spawn_blocking(move || read_at(&path, start, len))
            .await
            .map_err(|e| part.io("read", std::io::Error::other(e)))?
            .map_err(|e| part.io("read", e))?;
        Ok(ours == served)
    }

    /// Send the request for what is missing and stream it into the `.part`.
    pub(super) async fn transfer(
        &self,
        part: &PartFile,
        mut meta: PartMeta,
    ) -> Result<Transferred, DownloadError> {
        let (fetcher, file) = (self.fetcher, self.file);
        let mut offset = file_len(&part.path).await.unwrap_or(0);
        if offset > 0 && meta.total == Some(offset) {
            // Complete from an earlier run: only the hash is missing. Without a published hash
            // to judge the bytes, the server must vouch for the tail first.
            if file.expected_sha256.is_none() && !self.tail_matches(part, offset).await? {
                part.discard().await?;
                return Err(DownloadError::StalePart);
            }
            let (total, sha256) = hash_file(&part.path, 0, &fetcher.cancel).await?;
            self.progress.set(total, Some(total));
            return Ok(Transferred {
                total,
                transferred: 0,
                sha256,
                landed: Instant::now(),
            });
        }
        let url = fetcher.signed_url(file).await?;
        let range = (offset > 0).then(|| format!("{offset}-"));
        let mut response = fetcher.get(&url, range).await?;
        let status = response.status();
        match status {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                return self
                    .range_not_satisfiable(part, &meta, &response, offset)
                    .await;
            }
            _ => return Err(self.storage_error(response).await),
        }
        self.url_served();
        if status == StatusCode::OK && offset > 0 {
            tracing::info!(
                "{}: the server ignored the range; starting over",
                file.label
            );
            offset = 0;
        }
        let total = match response_total(file, &response, offset) {
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
            hash_prefix(&part.path, offset, &self.fetcher.cancel).await?
        } else {
            Sha256::new()
        };
        let handle = part.open(offset).await?;
        let mut writer = tokio::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, handle);
        self.progress.set(offset, total);
        let mut first_chunk = offset == 0;
        let copy = BodyCopy {
            cancel: &fetcher.cancel,
            progress: self.progress,
            reporter: fetcher.reporter.as_ref(),
            part,
            limit: Limit::Fixed(u64::MAX),
            flush: FlushEvery::Interval(FLUSH_EVERY),
            min_speed: fetcher.min_speed(),
        };
        let content_type = header(&response, CONTENT_TYPE).unwrap_or_default();
        let inspect = |chunk: &[u8]| {
            if std::mem::take(&mut first_chunk) {
                reject_markup(file.kind, &content_type, chunk)?;
            }
            hasher.update(chunk);
            Ok(())
        };
        let mut writeback = Writeback::new(&part.path);
        let flushed = |bytes| writeback.flushed(bytes);
        let written = match copy.run(&mut response, &mut writer, inspect, flushed).await {
            Err(error @ DownloadError::NotAFile { .. }) => {
                part.discard().await?;
                return Err(error);
            }
            other => other?,
        };
        let landed = Instant::now();
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
            landed,
        })
    }

    /// A 416 on resume: the `.part` is complete if its length is the file's size (from the
    /// answer's `Content-Range: bytes */N`, the record, or the API); otherwise it cannot be
    /// trusted and the file starts over.
    async fn range_not_satisfiable(
        &self,
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
        let size = announced.or(meta.total).or(self.file.expected_size);
        if size != Some(offset) {
            part.discard().await?;
            return Err(DownloadError::BadRange {
                got: format!("416 for a {offset}-byte partial file"),
                offset,
            });
        }
        let (total, sha256) = hash_file(&part.path, 0, &self.fetcher.cancel).await?;
        Ok(Transferred {
            total,
            transferred: 0,
            sha256,
            landed: Instant::now(),
        })
    }
}

/// `len` bytes of a file from `offset`.
fn read_at(path: &std::path::Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0; len];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}
