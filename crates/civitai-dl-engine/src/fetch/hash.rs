//! SHA-256 of files on disk: a finished `.part`, a file already at its final path, or the prefix
//! a resumed transfer continues from (so the hash of the whole file is still computed in one
//! pass while the rest streams). Read on the blocking pool, in large buffers.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::fetch::error::{DownloadError, io_error};

/// Read buffer when hashing a file already on disk.
const HASH_BUFFER_BYTES: usize = 1024 * 1024;

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
