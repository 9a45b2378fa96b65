//! One read pass per file, two hashes: SHA-256 over every byte (what Civitai's batch lookup takes)
//! and, for a safetensors file, AutoV3: the first 12 hex of SHA-256 over the bytes after the JSON
//! header. Editing the header (SwarmUI does so by default) changes the first and not the second,
//! which is how `verify` tells "weights intact, header edited" from a damaged file.
//!
//! A library is read once end to end, often a terabyte, so the read is built for that: large
//! buffers reused from file to file, a sequential read-ahead hint, and on Linux the pages already
//! hashed are dropped from the page cache as the read moves on, so a scan does not push out what
//! the user's own programs keep cached (ComfyUI-Lora-Manager does the same for WSL users).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Read size: large enough that a spinning disk streams and the syscall count is negligible,
/// small enough that a stop request is seen within a few milliseconds on a fast disk.
pub const READ_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Below this many tensor bytes in a read, both hashes run on the reading thread: a thread
/// costs tens of microseconds, hashing 256 KiB a little over a hundred.
const PARALLEL_HASH_MIN_BYTES: usize = 256 * 1024;

/// Largest safetensors header accepted for AutoV3; SwarmUI uses the same cap. Anything bigger is
/// not a safetensors header (or not one worth trusting), so the file simply gets no AutoV3.
pub const HEADER_CAP_BYTES: u64 = 100 * 1024 * 1024;

/// Hex digits of an AutoV3, as Civitai publishes it in `hashes.AutoV3`.
pub const AUTOV3_HEX_DIGITS: usize = 12;

/// What one read pass found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDigest {
    /// SHA-256 of every byte, uppercase hex (the case Civitai's `hashes.SHA256` uses).
    pub sha256: String,
    /// AutoV3 of a safetensors file with a sane header, uppercase hex.
    pub autov3: Option<String>,
    /// Bytes read.
    pub bytes: u64,
}

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A stop was requested before the file was read to its end; nothing about it is known.
    #[error("stopped before {} was read to its end", path.display())]
    Stopped {
        /// The file.
        path: PathBuf,
    },
}

/// The reusable state of one hashing worker: its read buffer, allocated once.
pub struct Digester {
    buffer: Vec<u8>,
}

impl Default for Digester {
    fn default() -> Self {
        Digester::new()
    }
}

impl Digester {
    /// A worker with a [`READ_BUFFER_BYTES`] buffer.
    pub fn new() -> Digester {
        Digester {
            buffer: vec![0; READ_BUFFER_BYTES],
        }
    }

    /// Hash `path` in one pass. `on_bytes` hears each read (for progress); `stop` is asked
    /// between reads, so a multi-GB file does not hold a Ctrl-C up.
    pub fn digest(
        &mut self,
        path: &Path,
        stop: &dyn Fn() -> bool,
        on_bytes: &mut dyn FnMut(u64),
    ) -> Result<FileDigest, DigestError> {
        let read_error = |source| DigestError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(read_error)?;
        let size = file.metadata().map_err(read_error)?.len();
        page_cache::sequential(&file);
        let mut full = Sha256::new();
        // Where the tensor bytes start, once the first read has shown the header length.
        let mut tensors: Option<(u64, Sha256)> = None;
        let wants_autov3 = is_safetensors_name(path);
        let mut offset: u64 = 0;
        loop {
            if stop() {
                return Err(DigestError::Stopped {
                    path: path.to_path_buf(),
                });
            }
            let filled = fill(&mut file, &mut self.buffer).map_err(read_error)?;
            if filled == 0 {
                break;
            }
            let chunk = &self.buffer[..filled];
            if offset == 0 && wants_autov3 {
                tensors = tensor_start(chunk, size).map(|start| (start, Sha256::new()));
            }
            let tensor_part = tensors.as_mut().and_then(|(start, hasher)| {
                let from = usize::try_from(start.saturating_sub(offset)).ok()?;
                (from < filled).then(|| (hasher, &chunk[from..]))
            });
            match tensor_part {
                // Two hashes of the same bytes cost twice the CPU; on a second core they cost
                // no more time than one, which keeps a scan as fast as `sha256sum`.
                Some((hasher, part)) if part.len() >= PARALLEL_HASH_MIN_BYTES => {
                    std::thread::scope(|scope| {
                        scope.spawn(|| hasher.update(part));
                        full.update(chunk);
                    });
                }
                Some((hasher, part)) => {
                    hasher.update(part);
                    full.update(chunk);
                }
                None => full.update(chunk),
            }
            page_cache::done_with(&file, offset, filled as u64);
            offset += filled as u64;
            on_bytes(filled as u64);
        }
        Ok(FileDigest {
            sha256: upper_hex(&full.finalize()),
            autov3: tensors.map(|(_, hasher)| {
                let mut hex = upper_hex(&hasher.finalize());
                hex.truncate(AUTOV3_HEX_DIGITS);
                hex
            }),
            bytes: offset,
        })
    }
}

/// Read until `buffer` is full or the file ends: a short read from a pipe-like file system must
/// not make the first chunk too short to hold the safetensors header length.
fn fill(file: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// `.safetensors` or `.sft`, whatever the case.
fn is_safetensors_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors") || e.eq_ignore_ascii_case("sft"))
}

/// Offset of the first tensor byte (`8 + N`) when the file starts like a safetensors file: a
/// little-endian u64 header length N within [`HEADER_CAP_BYTES`] and the file, and a header that
/// opens with `{`. `first` is the start of the file; `size` its length.
pub fn tensor_start(first: &[u8], size: u64) -> Option<u64> {
    let length = u64::from_le_bytes(first.get(..8)?.try_into().ok()?);
    let start = 8u64.checked_add(length)?;
    let sane = length <= HEADER_CAP_BYTES && start <= size && first.get(8) == Some(&b'{');
    sane.then_some(start)
}

fn upper_hex(bytes: &[u8]) -> String {
    civitai_dl_engine::fetch::hex(bytes).to_ascii_uppercase()
}

/// Page-cache hints: read-ahead for a sequential pass, and dropping what was hashed. Hints only,
/// so a failure is ignored: the read is correct either way.
#[cfg(target_os = "linux")]
mod page_cache {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    pub fn sequential(file: &File) {
        // SAFETY: a plain syscall on an open descriptor; it reads no memory of ours.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
        }
    }

    pub fn done_with(file: &File, offset: u64, len: u64) {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: as above.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED);
        }
    }
}

/// Elsewhere the operating system's own read-ahead has to do.
#[cfg(not(target_os = "linux"))]
mod page_cache {
    use std::fs::File;

    pub fn sequential(_file: &File) {}

    pub fn done_with(_file: &File, _offset: u64, _len: u64) {}
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A safetensors file: header length, JSON header, then `tensors`.
    pub(crate) fn safetensors(header: &str, tensors: &[u8]) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(tensors);
        bytes
    }

    fn digest_bytes(name: &str, bytes: &[u8]) -> FileDigest {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let mut seen = 0;
        let digest = Digester::new()
            .digest(&path, &|| false, &mut |n| seen += n)
            .unwrap();
        assert_eq!(seen, bytes.len() as u64, "every byte is reported once");
        digest
    }

    pub(crate) fn sha256_upper(bytes: &[u8]) -> String {
        upper_hex(&Sha256::digest(bytes))
    }

    #[test]
    fn autov3_ignores_a_rewritten_header_and_the_full_hash_does_not() {
        let tensors: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let original = safetensors(
            r#"{"w":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}"#,
            &tensors,
        );
        let rewritten = safetensors(
            r#"{"__metadata__":{"modelspec.hash_sha256":"0xabc"},"w":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}"#,
            &tensors,
        );
        let a = digest_bytes("lora.safetensors", &original);
        let b = digest_bytes("lora.safetensors", &rewritten);
        assert_eq!(a.sha256, sha256_upper(&original));
        assert_ne!(a.sha256, b.sha256, "the header is part of the full hash");
        assert_eq!(a.autov3, b.autov3, "AutoV3 covers the tensors only");
        assert_eq!(
            a.autov3.as_deref(),
            Some(&sha256_upper(&tensors)[..AUTOV3_HEX_DIGITS])
        );
    }

    #[test]
    fn the_tensor_hash_spans_several_reads() {
        let tensors = vec![7u8; READ_BUFFER_BYTES * 2 + 123];
        let bytes = safetensors("{}", &tensors);
        let digest = digest_bytes("big.SFT", &bytes);
        assert_eq!(digest.sha256, sha256_upper(&bytes));
        assert_eq!(
            digest.autov3.as_deref(),
            Some(&sha256_upper(&tensors)[..AUTOV3_HEX_DIGITS])
        );
        assert_eq!(digest.bytes, bytes.len() as u64);
    }

    #[test]
    fn only_a_sane_header_in_a_safetensors_file_gets_an_autov3() {
        let good = safetensors("{}", b"weights");
        assert!(digest_bytes("a.safetensors", &good).autov3.is_some());
        assert!(
            digest_bytes("a.ckpt", &good).autov3.is_none(),
            "by extension"
        );
        assert!(digest_bytes("a.safetensors", b"short").autov3.is_none());
        assert!(digest_bytes("a.safetensors", b"").autov3.is_none());
    }

    #[test]
    fn header_sanity_cases() {
        let with_len = |n: u64, rest: &[u8]| {
            let mut v = n.to_le_bytes().to_vec();
            v.extend_from_slice(rest);
            v
        };
        let cases: [(Vec<u8>, u64, Option<u64>); 6] = [
            (with_len(2, b"{}"), 10, Some(10)),
            (with_len(2, b"{}"), 9, None),  // header past the end
            (with_len(2, b"[]"), 10, None), // not a JSON object
            (with_len(HEADER_CAP_BYTES + 1, b"{"), u64::MAX, None), // over the cap
            (with_len(u64::MAX, b"{"), u64::MAX, None), // overflow
            (vec![1, 2, 3], 3, None),       // too short for a length
        ];
        for (first, size, expected) in cases {
            assert_eq!(
                tensor_start(&first, size),
                expected,
                "{first:?} size {size}"
            );
        }
    }

    #[test]
    fn a_stop_request_ends_the_read_without_a_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        std::fs::write(&path, vec![0u8; 10]).unwrap();
        let result = Digester::new().digest(&path, &|| true, &mut |_| {});
        assert!(matches!(result, Err(DigestError::Stopped { .. })));
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let error = Digester::new()
            .digest(Path::new("/nonexistent/x.pt"), &|| false, &mut |_| {})
            .unwrap_err();
        assert!(error.to_string().contains("/nonexistent/x.pt"), "{error}");
    }
}
