//! SHA-256 of files on disk: a finished `.part`, a file already at its final path, the prefix
//! a resumed transfer continues from (so the hash of the whole file is still computed in one
//! pass while the rest streams), and the growing prefix of a segmented file ([`PrefixHasher`]).
//! Read on the blocking pool, in large buffers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::fetch::error::{DownloadError, io_error};

/// Read buffer when hashing a file already on disk.
const HASH_BUFFER_BYTES: usize = 1024 * 1024;
/// Read buffer of a [`PrefixHasher`]: one per file in flight, each reading what was just written
/// (from the page cache), so a smaller buffer costs nothing in speed.
const PREFIX_BUFFER_BYTES: usize = 256 * 1024;

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a whole file (size, lowercase hex), read in a blocking task; `limit` > 0 hashes
/// only that many bytes. Stops with [`DownloadError::Cancelled`] within one buffer of `cancel`
/// firing: a multi-GB file on a slow disk takes minutes, and Ctrl-C must not wait for it.
pub async fn hash_file(
    path: &Path,
    limit: u64,
    cancel: &CancellationToken,
) -> Result<(u64, String), DownloadError> {
    let (len, hasher) = hash_in_background(path, limit, cancel).await?;
    Ok((len, hex(&hasher.finalize())))
}

/// The hasher state after the first `len` bytes of a file (to continue a resumed download).
pub(crate) async fn hash_prefix(
    path: &Path,
    len: u64,
    cancel: &CancellationToken,
) -> Result<Sha256, DownloadError> {
    let (read, hasher) = hash_in_background(path, len, cancel).await?;
    if read != len {
        return Err(io_error(
            "hash",
            path,
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "partial file shrank"),
        ));
    }
    Ok(hasher)
}

async fn hash_in_background(
    path: &Path,
    limit: u64,
    cancel: &CancellationToken,
) -> Result<(u64, Sha256), DownloadError> {
    let (owned, token) = (path.to_path_buf(), cancel.clone());
    let hashed = tokio::task::spawn_blocking(move || hash_blocking(&owned, limit, &token))
        .await
        .map_err(|e| io_error("hash", path, std::io::Error::other(e)))?;
    match hashed {
        Ok(done) => Ok(done),
        Err(_) if cancel.is_cancelled() => Err(DownloadError::Cancelled),
        Err(e) => Err(io_error("hash", path, e)),
    }
}

/// Hash up to `limit` bytes (0 = all) of a file, looking at `cancel` before each buffer.
fn hash_blocking(
    path: &Path,
    limit: u64,
    cancel: &CancellationToken,
) -> std::io::Result<(u64, Sha256)> {
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
        if cancel.is_cancelled() {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok((total, hasher));
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
}

/// Hashes a file's contiguous prefix while the rest of it is still arriving.
///
/// Segments land out of order, and SHA-256 can only consume bytes in order, so one state follows
/// the prefix that is complete: a thread on the blocking pool reads each newly completed stretch
/// back (from the page cache it was just written to) and hashes it, then waits for the prefix to
/// grow again. When the last byte lands, only what was not yet part of the prefix is left to
/// hash, instead of the whole file; a resumed file's verified prefix is hashed once, while the
/// rest streams. Dropping it stops the thread.
pub(crate) struct PrefixHasher {
    shared: Arc<Shared>,
    thread: Option<tokio::task::JoinHandle<std::io::Result<(u64, Sha256)>>>,
    path: PathBuf,
}

/// What the transfer tells the hashing thread.
struct Shared {
    mark: Mutex<Mark>,
    grown: Condvar,
}

#[derive(Default)]
struct Mark {
    /// Bytes `[0, available)` are in the file and final.
    available: u64,
    /// The file is complete at `available` bytes: hash up to there and end.
    complete: bool,
    /// The transfer gave up: end now.
    stop: bool,
    /// Bytes the thread had hashed when it last looked.
    hashed: u64,
}

impl PrefixHasher {
    /// Start following `path`'s prefix (from zero bytes).
    pub(crate) fn start(path: &Path, cancel: &CancellationToken) -> PrefixHasher {
        let shared = Arc::new(Shared {
            mark: Mutex::new(Mark::default()),
            grown: Condvar::new(),
        });
        let (owned, token, seen) = (path.to_path_buf(), cancel.clone(), shared.clone());
        let thread = tokio::task::spawn_blocking(move || follow_prefix(&owned, &seen, &token));
        PrefixHasher {
            shared,
            thread: Some(thread),
            path: path.to_path_buf(),
        }
    }

    /// Bytes `[0, prefix)` are written, flushed to the file, and will not change.
    pub(crate) fn advance(&self, prefix: u64) {
        let mut mark = crate::lock(&self.shared.mark);
        if prefix > mark.available {
            mark.available = prefix;
            self.shared.grown.notify_one();
        }
    }

    /// The file is complete at `total` bytes: the lowercase hex SHA-256 of them, once the thread
    /// has caught up.
    pub(crate) async fn finish(
        &mut self,
        total: u64,
        cancel: &CancellationToken,
    ) -> Result<String, DownloadError> {
        {
            let mut mark = crate::lock(&self.shared.mark);
            mark.available = total;
            mark.complete = true;
            self.shared.grown.notify_one();
        }
        let Some(thread) = self.thread.take() else {
            return Err(self.failed(std::io::ErrorKind::BrokenPipe.into()));
        };
        let joined = thread
            .await
            .map_err(|e| self.failed(std::io::Error::other(e)))?;
        match joined {
            Ok((hashed, hasher)) if hashed == total => Ok(hex(&hasher.finalize())),
            Ok(_) => Err(self.failed(std::io::ErrorKind::UnexpectedEof.into())),
            Err(_) if cancel.is_cancelled() => Err(DownloadError::Cancelled),
            Err(error) => Err(self.failed(error)),
        }
    }

    fn failed(&self, error: std::io::Error) -> DownloadError {
        io_error("hash", &self.path, error)
    }

    #[cfg(test)]
    fn hashed(&self) -> u64 {
        crate::lock(&self.shared.mark).hashed
    }
}

impl Drop for PrefixHasher {
    fn drop(&mut self) {
        crate::lock(&self.shared.mark).stop = true;
        self.shared.grown.notify_one();
    }
}

/// How long the hashing thread sleeps between looks at the cancel token while nothing arrives.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// The hashing thread: hash whatever of the prefix is new, in buffers, until the file is
/// complete (the bytes hashed and the state) or the transfer stops (an error).
fn follow_prefix(
    path: &Path,
    shared: &Shared,
    cancel: &CancellationToken,
) -> std::io::Result<(u64, Sha256)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; PREFIX_BUFFER_BYTES];
    let mut hashed = 0u64;
    loop {
        let available = {
            let mut mark = crate::lock(&shared.mark);
            mark.hashed = hashed;
            loop {
                if mark.stop || cancel.is_cancelled() {
                    return Err(std::io::ErrorKind::Interrupted.into());
                }
                if mark.available > hashed {
                    break mark.available;
                }
                if mark.complete {
                    return Ok((hashed, hasher));
                }
                mark = shared
                    .grown
                    .wait_timeout(mark, IDLE_WAIT)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
        };
        let want = (available - hashed).min(buffer.len() as u64) as usize;
        file.read_exact(&mut buffer[..want])?;
        hasher.update(&buffer[..want]);
        hashed += want as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }

    #[tokio::test]
    async fn hashing_a_file_and_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let never = CancellationToken::new();
        let (len, sha) = hash_file(&path, 0, &never).await.unwrap();
        assert_eq!(len, 11);
        assert!(sha.eq_ignore_ascii_case(
            "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9"
        ));
        let mut prefix = hash_prefix(&path, 6, &never).await.unwrap();
        prefix.update(b"world");
        assert_eq!(hex(&prefix.finalize()), sha);
        assert!(hash_prefix(&path, 20, &never).await.is_err());
    }

    #[tokio::test]
    async fn the_prefix_hasher_follows_a_growing_prefix_to_the_whole_files_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let bytes: Vec<u8> = (0..3 * HASH_BUFFER_BYTES + 17).map(|i| i as u8).collect();
        // Preallocated like a segmented `.part`: the hasher must read only the prefix it is told.
        std::fs::write(&path, vec![0u8; bytes.len()]).unwrap();
        let never = CancellationToken::new();
        let mut hasher = PrefixHasher::start(&path, &never);
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for piece in bytes.chunks(HASH_BUFFER_BYTES / 3 + 1) {
            std::io::Write::write_all(&mut file, piece).unwrap();
            let written = std::io::Seek::stream_position(&mut file).unwrap();
            hasher.advance(written);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let whole = hex(&Sha256::digest(&bytes));
        let total = bytes.len() as u64;
        assert_eq!(hasher.finish(total, &never).await.unwrap(), whole);
    }

    #[tokio::test]
    async fn the_prefix_hasher_reads_the_prefix_as_it_grows_not_when_the_file_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let bytes: Vec<u8> = (0..2 * PREFIX_BUFFER_BYTES + 5).map(|i| i as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let never = CancellationToken::new();
        let mut hasher = PrefixHasher::start(&path, &never);
        let total = bytes.len() as u64;
        hasher.advance(total);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while hasher.hashed() < total && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Bytes read before the end cannot be read again at the end: the hash is of what was
        // there when the prefix grew.
        std::fs::write(&path, vec![0u8; bytes.len()]).unwrap();
        let whole = hex(&Sha256::digest(&bytes));
        assert_eq!(hasher.finish(total, &never).await.unwrap(), whole);
    }

    #[tokio::test]
    async fn the_prefix_hasher_fails_on_a_short_file_and_stops_on_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        std::fs::write(&path, b"hello").unwrap();
        let never = CancellationToken::new();
        let mut short = PrefixHasher::start(&path, &never);
        assert!(matches!(
            short.finish(6, &never).await,
            Err(DownloadError::Io { .. })
        ));
        let cancel = CancellationToken::new();
        let mut waiting = PrefixHasher::start(&path, &cancel);
        waiting.advance(2);
        cancel.cancel();
        assert!(matches!(
            waiting.finish(5, &cancel).await,
            Err(DownloadError::Cancelled)
        ));
    }

    #[tokio::test]
    async fn a_cancelled_hash_stops_as_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        assert!(matches!(
            hash_file(&path, 0, &cancelled).await,
            Err(DownloadError::Cancelled)
        ));
        assert!(matches!(
            hash_prefix(&path, 6, &cancelled).await,
            Err(DownloadError::Cancelled)
        ));
    }
}
