//! The one loop that moves a response body into a `.part`, for every transfer path (one stream,
//! or one segment of a segmented file).
//!
//! Whatever ends a copy (the end of the body, a network error, a refused chunk, Ctrl-C), what was
//! received is flushed to the file first: a kill or a retry never loses bytes that arrived, and a
//! resumed transfer continues from what the file really holds. It never writes more than its
//! limit, whatever the server sends, so a segment cannot spill into the next one.

use std::time::{Duration, Instant};

use tokio::fs::File;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio_util::sync::CancellationToken;

use crate::fetch::error::{DownloadError, network};
use crate::fetch::part::PartFile;
use crate::observe::{Reporter, TransferProgress, requests};

/// A transfer that has flushed this much more since the last background writeback starts
/// another.
const WRITEBACK_BYTES: u64 = 64 * 1024 * 1024;

/// Keeps the disk writing while a transfer runs: every [`WRITEBACK_BYTES`] flushed, the file's
/// data is synced on the blocking pool (one sync at a time, never on the thread that streams).
/// Without it the page cache filled up during the transfer and the fsync before the rename wrote
/// it all at the end: half a second after the last byte of a 1 GiB file here, a tail in which
/// nothing arrives. Portable (a plain fdatasync), unlike Linux's `sync_file_range`.
pub(crate) struct Writeback {
    path: std::path::PathBuf,
    synced_at: u64,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Writeback {
    pub(crate) fn new(path: &std::path::Path) -> Writeback {
        Writeback {
            path: path.to_path_buf(),
            synced_at: 0,
            running: None,
        }
    }

    /// `flushed` bytes of this transfer are in the file.
    pub(crate) fn flushed(&mut self, flushed: u64) {
        let idle = self
            .running
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished);
        if flushed < self.synced_at + WRITEBACK_BYTES || !idle {
            return;
        }
        self.synced_at = flushed;
        let path = self.path.clone();
        self.running = Some(tokio::task::spawn_blocking(move || {
            // Only a head start for the final fsync, which still makes the guarantee.
            if let Err(error) = std::fs::File::open(&path).and_then(|f| f.sync_data()) {
                tracing::debug!("background writeback of {}: {error}", path.display());
            }
        }));
    }
}

/// How often received bytes are pushed from the write buffer to the file.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FlushEvery {
    /// At least this often, however slowly bytes arrive.
    Interval(Duration),
    /// Whenever this many bytes are buffered.
    Bytes(u64),
}

/// How much of a body a copy may write.
pub(crate) enum Limit<'a> {
    /// At most this many bytes; anything the server sends beyond is read and dropped.
    Fixed(u64),
    /// Asked before each chunk with the bytes written so far and the chunk's length: how many
    /// of the chunk's bytes may be written. Zero ends the copy: the range this copy serves was
    /// cut short (work stealing handed its rest to another connection).
    Live(&'a (dyn Fn(u64, usize) -> usize + Sync)),
}

/// One body copy and what it reports to.
pub(crate) struct BodyCopy<'a> {
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) progress: &'a dyn TransferProgress,
    pub(crate) reporter: &'a dyn Reporter,
    /// Names the file in I/O errors.
    pub(crate) part: &'a PartFile,
    /// How much this copy may write.
    pub(crate) limit: Limit<'a>,
    pub(crate) flush: FlushEvery,
    /// `--min-speed`: bytes per second over a window (0 = off). Judged per connection, so a
    /// segment crawling far below it gives up its connection like a one-stream transfer.
    pub(crate) min_speed: (u64, Duration),
}

impl BodyCopy<'_> {
    /// Copy `response`'s body into `writer`; returns the bytes written. `inspect` sees each
    /// chunk (cut to the limit) before it is written and may refuse it; `flushed` hears the
    /// bytes of this copy that have reached the file, each time more have.
    pub(crate) async fn run(
        &self,
        response: &mut reqwest::Response,
        writer: &mut BufWriter<File>,
        mut inspect: impl FnMut(&[u8]) -> Result<(), DownloadError>,
        mut flushed: impl FnMut(u64),
    ) -> Result<u64, DownloadError> {
        let started = Instant::now();
        let mut written = 0u64;
        let mut unflushed = 0u64;
        let mut flushed_at = Instant::now();
        let mut speed = SpeedCheck::new(self.min_speed.0, self.min_speed.1);
        let ended = loop {
            let chunk = tokio::select! {
                () = self.cancel.cancelled() => break Err(DownloadError::Cancelled),
                chunk = response.chunk() => chunk,
            };
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break Ok(()),
                Err(error) => break Err(network(error, written)),
            };
            let room = match self.limit {
                Limit::Fixed(limit) => (limit - written).min(chunk.len() as u64) as usize,
                Limit::Live(room) => match room(written, chunk.len()) {
                    0 => break Ok(()),
                    room => room.min(chunk.len()),
                },
            };
            let data = &chunk[..room];
            if let Err(error) = inspect(data) {
                break Err(error);
            }
            writer
                .write_all(data)
                .await
                .map_err(|e| self.part.io("write", e))?;
            written += data.len() as u64;
            unflushed += data.len() as u64;
            self.progress.advance(data.len() as u64);
            self.reporter.on_bytes(data.len() as u64);
            if let Some(bytes_per_sec) = speed.record(data.len() as u64) {
                break Err(DownloadError::TooSlow {
                    bytes_per_sec,
                    written,
                });
            }
            let due = match self.flush {
                FlushEvery::Interval(every) => flushed_at.elapsed() >= every,
                FlushEvery::Bytes(bytes) => unflushed >= bytes,
            };
            if due {
                self.flush(writer).await?;
                flushed(written);
                unflushed = 0;
                flushed_at = Instant::now();
            }
        };
        self.flush(writer).await?;
        flushed(written);
        let broke = ended.as_ref().err().map(|e| e as &dyn std::fmt::Display);
        requests::body_received(response.url(), written, started.elapsed(), broke);
        ended.map(|()| written)
    }

    async fn flush(&self, writer: &mut BufWriter<File>) -> Result<(), DownloadError> {
        writer.flush().await.map_err(|e| self.part.io("write", e))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writeback_starts_every_64_mib_flushed_and_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        std::fs::write(&path, b"data").unwrap();
        let mut writeback = Writeback::new(&path);
        writeback.flushed(WRITEBACK_BYTES - 1);
        assert!(writeback.running.is_none(), "not before 64 MiB");
        writeback.flushed(WRITEBACK_BYTES);
        let first = writeback.running.take().expect("a sync started");
        first.await.unwrap();
        writeback.flushed(WRITEBACK_BYTES + 1);
        assert!(writeback.running.is_none(), "counted from the last sync");
        writeback.flushed(2 * WRITEBACK_BYTES);
        assert!(writeback.running.is_some());
        assert_eq!(writeback.synced_at, 2 * WRITEBACK_BYTES);
    }

    #[test]
    fn speed_check_only_judges_full_windows() {
        let mut off = SpeedCheck::new(0, Duration::ZERO);
        assert_eq!(off.record(1), None);
        let mut strict = SpeedCheck::new(1_000_000_000, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            strict.record(1).is_some(),
            "a full window below the minimum"
        );
    }
}
