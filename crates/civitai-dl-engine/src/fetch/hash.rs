//! SHA-256 of files on disk: a finished `.part`, a file already at its final path, or the prefix
//! a resumed transfer continues from (so the hash of the whole file is still computed in one
//! pass while the rest streams). Read on the blocking pool, in large buffers.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::fetch::error::{DownloadError, io_error};

/// Read buffer when hashing a file already on disk.
const HASH_BUFFER_BYTES: usize = 1024 * 1024;

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
pub(crate) async fn hash_prefix(path: &Path, len: u64) -> Result<Sha256, DownloadError> {
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
}
