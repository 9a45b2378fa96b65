//! Deterministic content: file bytes are a pure function of a seed and an offset, so any range can
//! be served without storing or generating what comes before it.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::{Catalog, ImageFormat};

/// Size of one generated body chunk: big enough for throughput, small enough to keep memory flat.
pub(crate) const CHUNK_BYTES: u64 = 64 * 1024;
/// Bytes of a preview image: the smallest body and the spread above it.
const IMAGE_MIN_BYTES: u64 = 16 * 1024;
const IMAGE_SPREAD_BYTES: u64 = 24 * 1024;
/// JPEG start-of-image plus APP0 marker: what a client sniffing previews expects first.
pub(crate) const JPEG_MAGIC: [u8; 4] = [0xFF, 0xD8, 0xFF, 0xE0];

/// SplitMix64 finaliser: cheap, well mixed, and enough for reproducible test bytes.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic content: the byte stream of a file is a pure function of (seed, offset), so any
/// range can be produced without producing what comes before it.
pub fn fill_bytes(seed: u64, offset: u64, buf: &mut [u8]) {
    let key = mix64(seed);
    let mut pos = offset;
    let mut filled = 0;
    while filled < buf.len() {
        let word = mix64(key ^ (pos / 8)).to_le_bytes();
        let start = (pos % 8) as usize;
        let n = (8 - start).min(buf.len() - filled);
        buf[filled..filled + n].copy_from_slice(&word[start..start + n]);
        filled += n;
        pos += n as u64;
    }
}

/// Uppercase hex SHA-256 of the whole generated file, computed by streaming [`fill_bytes`].
pub fn content_sha256(seed: u64, size: u64) -> String {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_BYTES as usize];
    let mut offset = 0;
    while offset < size {
        let n = CHUNK_BYTES.min(size - offset) as usize;
        fill_bytes(seed, offset, &mut buf[..n]);
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    hex_upper(&hasher.finalize())
}

pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Hashes every file once, spread over the available cores, because a benchmark catalogue can
/// hold gigabytes and the hash is needed for JSON bodies and ETags on every request.
pub(crate) fn hash_catalog(catalog: &Catalog) -> HashMap<u64, String> {
    let mut files: Vec<(u64, u64, u64)> = catalog
        .models
        .iter()
        .flat_map(|m| &m.versions)
        .flat_map(|v| &v.files)
        .map(|f| (f.id, f.seed, f.size))
        .collect();
    files.sort_unstable();
    files.dedup_by_key(|f| f.0);
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, files.len().max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let files = &files;
                scope.spawn(move || {
                    files
                        .iter()
                        .skip(w)
                        .step_by(workers)
                        .map(|&(id, seed, size)| (id, content_sha256(seed, size)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Bytes of preview image `index` of a version: a body of 16–40 KiB that starts like a file of
/// `format` (a JPEG also ends like one).
pub(crate) fn image_bytes(version_id: u64, index: u32, format: ImageFormat) -> Vec<u8> {
    let seed = mix64(version_id ^ (u64::from(index) << 40) ^ 0x1A6E);
    let len = IMAGE_MIN_BYTES + seed % IMAGE_SPREAD_BYTES;
    let mut body = vec![0u8; len as usize];
    fill_bytes(seed, 0, &mut body);
    let magic = format.magic();
    body[..magic.len()].copy_from_slice(magic);
    if format == ImageFormat::Jpeg {
        let end = body.len();
        body[end - 2..].copy_from_slice(&[0xFF, 0xD9]);
    }
    body
}
