//! The `.part` file and its `.part.json` record: the on-disk format of a download in progress.
//!
//! Beside each `.part` the record says what its bytes belong to (file, published hash, size,
//! ETag) so a later run never resumes the wrong thing, and, while a file is fetched in segments,
//! how far each segment got. The serde names are the file format: older `.part.json` files must
//! stay readable.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fetch::error::{DownloadError, io_error};
use crate::fetch::{PlannedFile, source_key};
use crate::fs::{Durability, file_len, parent_dir, sync_dir, with_suffix, write_atomic};

/// What `.part.json` records about a partial file.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PartMeta {
    pub(crate) source: String,
    pub(crate) expected_sha256: Option<String>,
    pub(crate) total: Option<u64>,
    pub(crate) etag: Option<String>,
    /// Present while the file is fetched in segments: how far each has got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) segments: Option<Vec<Segment>>,
}

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
    /// Zero for a backwards segment, which only a damaged record holds (and
    /// [`recorded_segments_usable`] refuses).
    pub(crate) fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub(crate) fn is_done(&self) -> bool {
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

/// How large the pieces of a segmented file are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pieces {
    /// The piece size aimed at (see `segmented::pieces`).
    pub(crate) max: u64,
    /// No piece is cut smaller, nor is a remainder under it left behind a piece.
    pub(crate) min: u64,
    /// Connections sharing the file.
    pub(crate) connections: usize,
}

impl Pieces {
    /// The piece to hand a connection while `left` bytes of the file are still to come (free
    /// and held): each connection's fair share of them, cut into the whole number of equal
    /// pieces nearest to `share / max` (so a piece may exceed `max` by half). Pieces of a fixed size left a short remainder for the last round: of a
    /// 200 MiB file over 4 connections in 16 MiB pieces, the last 8 MiB went to one or two
    /// connections while the others idled (about 0.1 s at 25 MB/s, per file). Equal shares end
    /// every connection's last piece together, at equal speeds; work stealing evens out the rest.
    /// When too little is left for every connection to get `min`, it is shared by fewer.
    pub(crate) fn size(&self, left: u64) -> u64 {
        let max = self.max.max(self.min).max(1);
        let sharers = (left / self.min.max(1)).clamp(1, self.connections.max(1) as u64);
        let share = left.div_ceil(sharers);
        let rounds = ((share + max / 2) / max).max(1);
        share.div_ceil(rounds).max(self.min.min(max))
    }
}

/// The first layout of a `total`-byte file: one piece for each connection, then the rest as one
/// range no connection holds yet, from whose front each connection takes its next piece
/// ([`next_piece`]). So the bytes arrive roughly in file order, the contiguous prefix grows with
/// them and the hash follows it while they arrive; every request asks for one whole piece, so
/// its connection stays open for the next. A file of at most one more piece than there are
/// connections, or whose share per connection is one piece, gets equal segments.
pub(crate) fn lay_out(total: u64, pieces: Pieces) -> Vec<Segment> {
    let count = pieces.connections.max(1) as u64;
    let piece = pieces.size(total);
    if pieces.max == 0 || total <= (count + 1) * pieces.max || count * piece + pieces.min > total {
        return split(total, count as usize);
    }
    let mut segments: Vec<Segment> = (0..count)
        .map(|i| Segment {
            start: i * piece,
            end: (i + 1) * piece,
            done: 0,
        })
        .collect();
    segments.push(Segment {
        start: count * piece,
        end: total,
        done: 0,
    });
    segments
}

/// The next piece for an idle connection: the front of the earliest unfinished range no
/// connection holds, sized by [`Pieces::size`] (split off, the rest staying free), or that whole
/// range when less than another `pieces.min` would be left behind. `None` when every unfinished
/// range is held (then [`steal`] shares a busy one). Keeps the tiling, and `received`/`busy` in
/// step with the segments; the taken segment is marked busy.
pub(crate) fn next_piece(
    segments: &mut Vec<Segment>,
    received: &mut Vec<u64>,
    busy: &mut Vec<bool>,
    pieces: Pieces,
) -> Option<usize> {
    let index = (0..segments.len())
        .filter(|&i| !busy[i] && !segments[i].is_done())
        .min_by_key(|&i| segments[i].start)?;
    let left = (0..segments.len())
        .map(|i| {
            segments[i]
                .len()
                .saturating_sub(received[i].max(segments[i].done))
        })
        .sum();
    let piece = pieces.size(left);
    let free = segments[index];
    let from = free.start + free.done;
    if free.end - from >= piece + pieces.min.max(1) {
        segments[index].end = from + piece;
        segments.push(Segment {
            start: from + piece,
            end: free.end,
            done: 0,
        });
        received.push(0);
        busy.push(false);
    }
    busy[index] = true;
    Some(index)
}

/// The segments with the largest unfinished ranges split in two until `connections` ranges are
/// unfinished (or no range left is worth splitting: under `2 × min_piece`). A range that a reset
/// left for the next attempt, or the few left after a resume, then go over every connection
/// instead of one. Done bytes stay where they are, so the result tiles the file like its input
/// and a record of either is a valid one.
pub(crate) fn rebalance(segments: &[Segment], connections: usize, min_piece: u64) -> Vec<Segment> {
    let mut segments = segments.to_vec();
    let remaining = |s: &Segment| s.len().saturating_sub(s.done);
    while segments.iter().filter(|s| !s.is_done()).count() < connections {
        let Some((index, largest)) = segments
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| remaining(s))
            .map(|(i, s)| (i, *s))
        else {
            break;
        };
        let left = remaining(&largest);
        if left < 2 * min_piece.max(1) {
            break;
        }
        let middle = largest.start + largest.done + left / 2;
        segments[index].end = middle;
        segments.insert(
            index + 1,
            Segment {
                start: middle,
                end: largest.end,
                done: 0,
            },
        );
    }
    segments
}

/// Work stealing: split the busy segment with the most left to receive (counted from
/// `received`, what its transfer has taken so far, at least its `done`) at the middle of what is
/// left, and append the second half as a new segment. `None` when nothing busy has `2 ×
/// min_piece` left. The split keeps the tiling (sorted by start), so a record saved at any
/// instant stays valid; the busy transfer stops at the new end.
pub(crate) fn steal(
    segments: &mut Vec<Segment>,
    received: &[u64],
    busy: &[bool],
    min_piece: u64,
) -> Option<usize> {
    let left = |i: usize| {
        let s = &segments[i];
        s.len().saturating_sub(received[i].max(s.done))
    };
    let index = (0..segments.len())
        .filter(|&i| busy[i])
        .max_by_key(|&i| left(i))?;
    let remaining = left(index);
    if remaining < 2 * min_piece.max(1) {
        return None;
    }
    let victim = segments[index];
    let middle = victim.start + received[index].max(victim.done) + remaining / 2;
    segments[index].end = middle;
    segments.push(Segment {
        start: middle,
        end: victim.end,
        done: 0,
    });
    Some(segments.len() - 1)
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

/// The `.part` file and its `.part.json` record, beside the final path (same file system, so the
/// final rename is atomic).
pub(crate) struct PartFile {
    pub(crate) path: PathBuf,
    pub(crate) meta_path: PathBuf,
}

impl PartFile {
    pub(crate) fn new(dest: &Path) -> PartFile {
        PartFile {
            path: with_suffix(dest, "part"),
            meta_path: with_suffix(dest, "part.json"),
        }
    }

    /// The record of the existing `.part`, or a fresh one after deleting a `.part` that belongs to
    /// something else (another file id, another published hash) or to nothing known.
    pub(crate) async fn load_or_reset(
        &self,
        file: &PlannedFile,
    ) -> Result<PartMeta, DownloadError> {
        let wanted = PartMeta {
            source: source_key(&file.source),
            expected_sha256: file.expected_sha256.clone(),
            ..PartMeta::default()
        };
        if self.is_link().await {
            // Whatever a link points at is not ours to write into: the links go, the file
            // starts over as a regular file.
            tracing::warn!(
                "{}: {} or its record is a symbolic link; removing the link and starting over",
                file.label,
                self.path.display()
            );
            self.discard().await?;
            return Ok(wanted);
        }
        let Ok(bytes) = tokio::fs::read(&self.meta_path).await else {
            // A `.part` nobody recorded belongs to nothing known.
            self.discard().await?;
            return Ok(wanted);
        };
        match serde_json::from_slice::<PartMeta>(&bytes) {
            Ok(meta)
                if meta.source == wanted.source
                    && meta.expected_sha256 == wanted.expected_sha256 =>
            {
                Ok(meta)
            }
            // A record torn by a crash: with a published hash the kept bytes are judged by it at
            // the end (a wrong prefix costs one download), so gigabytes of progress are not
            // thrown away; without one nothing could tell them apart from another file's.
            Err(_) if file.expected_sha256.is_some() && file_len(&self.path).await.is_some() => {
                tracing::warn!(
                    "{}: {} is unreadable; continuing the partial file, the SHA-256 will judge it",
                    file.label,
                    self.meta_path.display()
                );
                Ok(wanted)
            }
            _ => {
                self.discard().await?;
                Ok(wanted)
            }
        }
    }

    /// A `.part` left by a segmented transfer holds finished ranges with holes between them;
    /// one stream can only continue its contiguous prefix, so the file is cut back to that.
    pub(crate) async fn reduce_to_prefix(
        &self,
        mut meta: PartMeta,
    ) -> Result<PartMeta, DownloadError> {
        let Some(segments) = meta.segments.take() else {
            return Ok(meta);
        };
        let prefix = contiguous_prefix(&segments);
        // Trim first, record second: a kill in between leaves a record whose segments claim
        // more than the file holds, which the segmented path refuses to continue (it starts
        // over). The other order could leave a full-length file with holes and no segment record.
        if let Ok(handle) = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .await
        {
            // Never longer: a record claiming more than the `.part` holds (cut short behind
            // its back) must not turn the missing bytes into zeros that the stream resumes after.
            let len = handle
                .metadata()
                .await
                .map_err(|e| self.io("read the length of", e))?
                .len();
            handle
                .set_len(prefix.min(len))
                .await
                .map_err(|e| self.io("trim", e))?;
        }
        self.save_meta(&meta).await?;
        Ok(meta)
    }

    /// Written atomically, so a kill mid-write never leaves a record that fails to parse (which
    /// would throw the whole `.part` away); durably, because it is written only when a transfer
    /// starts or changes shape, and the bytes it vouches for may be gigabytes.
    pub(crate) async fn save_meta(&self, meta: &PartMeta) -> Result<(), DownloadError> {
        let json = serde_json::to_vec(meta).unwrap_or_default();
        Ok(write_atomic(&self.meta_path, json, Durability::Durable).await?)
    }

    pub(crate) async fn open(&self, offset: u64) -> Result<tokio::fs::File, DownloadError> {
        let mut options = tokio::fs::OpenOptions::new();
        options.create(true).write(true);
        if offset == 0 {
            options.truncate(true);
        } else {
            options.append(true);
        }
        let handle = options
            .open(&self.path)
            .await
            .map_err(|e| self.io("open", e))?;
        if offset > 0 {
            // Anything past the hashed prefix (a torn final write) is cut off.
            handle
                .set_len(offset)
                .await
                .map_err(|e| self.io("trim", e))?;
        }
        Ok(handle)
    }

    /// Rename the verified `.part` to `dest` and drop its record.
    /// `hashed` is the length the SHA-256 covered: the file renamed must be that file.
    pub(crate) async fn commit(&self, dest: &Path, hashed: u64) -> Result<(), DownloadError> {
        let got = file_len(&self.path).await.unwrap_or(0);
        if got != hashed {
            self.discard().await?;
            return Err(DownloadError::PartChanged {
                got,
                expected: hashed,
            });
        }
        tokio::fs::rename(&self.path, dest)
            .await
            .map_err(|e| self.io("rename", e))?;
        // The rename must survive a power cut as the data did (fsynced before hashing).
        let dir = parent_dir(dest).to_path_buf();
        let _ = tokio::task::spawn_blocking(move || sync_dir(&dir)).await;
        let _ = tokio::fs::remove_file(&self.meta_path).await;
        Ok(())
    }

    async fn is_link(&self) -> bool {
        for path in [&self.path, &self.meta_path] {
            if let Ok(meta) = tokio::fs::symlink_metadata(path).await
                && meta.file_type().is_symlink()
            {
                return true;
            }
        }
        false
    }

    pub(crate) async fn discard(&self) -> Result<(), DownloadError> {
        for path in [&self.path, &self.meta_path] {
            match tokio::fs::remove_file(path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io("remove", e)),
            }
        }
        Ok(())
    }

    pub(crate) fn io(&self, action: &'static str, source: std::io::Error) -> DownloadError {
        DownloadError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

/// An exclusive claim on one file's `.part`, held for the whole download: two runs on one
/// folder (each with its own state file) must never write into the same `.part`, which would
/// splice two streams into a file that the first run then hashes, trusts and commits. The claim
/// is an OS lock on `<name>.part.lock`, so a killed run leaves no stale claim; the lock file is
/// removed when the claim ends.
pub(crate) struct PartClaim {
    path: PathBuf,
    _file: File,
}

impl PartClaim {
    /// Claim `dest`'s `.part`; `None` when another process holds it.
    pub(crate) async fn acquire(dest: &Path) -> Result<Option<PartClaim>, DownloadError> {
        let path = with_suffix(dest, "part.lock");
        let owned = path.clone();
        let claimed = tokio::task::spawn_blocking(move || claim(&owned))
            .await
            .map_err(|e| io_error("lock", &path, io::Error::other(e)))?
            .map_err(|e| io_error("lock", &path, e))?;
        Ok(claimed.map(|file| PartClaim { path, _file: file }))
    }
}

impl Drop for PartClaim {
    fn drop(&mut self) {
        // Removed while still locked: whoever opens the path next gets a new file, and `claim`
        // makes sure it locked the file the path names.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn claim(path: &Path) -> io::Result<Option<File>> {
    std::fs::create_dir_all(parent_dir(path))?;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(error)) => return Err(error),
        }
        if names_this_file(&file, path) {
            return Ok(Some(file));
        }
        // The previous holder removed the lock file between our open and our lock: the lock
        // we hold is on a file nobody else will open. Claim the one the path names now.
    }
}

#[cfg(unix)]
fn names_this_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
        _ => false,
    }
}

/// Elsewhere an open, locked file cannot be removed, so the path always names it.
#[cfg(not(unix))]
fn names_this_file(_file: &File, _path: &Path) -> bool {
    true
}

/// Whether a recorded segment layout can be continued: the `.part` has the file's full size and
/// the segments tile `[0, total)` with nothing claimed beyond a segment's end. Anything else (a
/// deleted or truncated `.part`, a record torn by a crash) starts over.
pub(crate) fn recorded_segments_usable(meta: &PartMeta, part_len: Option<u64>) -> bool {
    let (Some(total), Some(segments)) = (meta.total, &meta.segments) else {
        return false;
    };
    let tiles = segments.first().is_some_and(|s| s.start == 0)
        && segments.last().is_some_and(|s| s.end == total)
        && segments.windows(2).all(|w| w[0].end == w[1].start)
        && segments.iter().all(|s| s.start <= s.end);
    part_len == Some(total) && tiles && segments.iter().all(|s| s.done <= s.len())
}

/// The record without a segment layout (for the one-stream path).
pub(crate) fn without_segments(mut meta: PartMeta) -> PartMeta {
    meta.segments = None;
    meta
}

/// Lay out segments for a `total`-byte file ([`lay_out`]). A `.part` left by the one-stream path
/// (the record already vouches that it is this file) is kept: its bytes count as done in the
/// first segments.
pub(crate) async fn start_segments(
    part: &PartFile,
    mut meta: PartMeta,
    total: u64,
    pieces: Pieces,
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
    let mut segments = lay_out(total, pieces);
    for segment in &mut segments {
        segment.done = keep.clamp(segment.start, segment.end) - segment.start;
    }
    meta.total = Some(total);
    meta.segments = Some(segments);
    // Record first, preallocate second: a kill in between leaves segments recorded beside a
    // short `.part`, which is never continued. The other order leaves a full-length file with a
    // zero tail beside a one-stream record that says it is complete.
    part.save_meta(&meta).await?;
    preallocate(part, total).await?;
    Ok(meta)
}

/// fsync the finished `.part` before it is hashed and renamed, as the one-stream path does.
pub(crate) async fn sync(part: &PartFile) -> Result<(), DownloadError> {
    let handle = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&part.path)
        .await
        .map_err(|e| part.io("open", e))?;
    handle.sync_all().await.map_err(|e| part.io("sync", e))
}

/// Give the `.part` its full size (sparse where the file system allows), keeping what it holds.
pub(crate) async fn preallocate(part: &PartFile, total: u64) -> Result<(), DownloadError> {
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
    fn stealing_splits_the_busy_segment_with_most_left_after_what_it_received() {
        let mib = 1024 * 1024;
        let mut segments = vec![
            Segment {
                start: 0,
                end: 8 * mib,
                done: 8 * mib,
            },
            Segment {
                start: 8 * mib,
                end: 24 * mib,
                done: mib,
            },
            Segment {
                start: 24 * mib,
                end: 32 * mib,
                done: 0,
            },
        ];
        let received = [8 * mib, 2 * mib, 0];
        let busy = [false, true, false];
        let new = steal(&mut segments, &received, &busy, mib).unwrap();
        assert_eq!(new, 3);
        // 14 MiB left after the 2 MiB received: the busy one keeps 7 of them.
        assert_eq!(segments[1].end, 17 * mib);
        assert_eq!(
            segments[3],
            Segment {
                start: 17 * mib,
                end: 24 * mib,
                done: 0
            }
        );
        let mut sorted = segments.clone();
        sorted.sort_by_key(|s| s.start);
        assert!(
            sorted.windows(2).all(|w| w[0].end == w[1].start),
            "{sorted:?}"
        );
        assert_eq!(
            steal(&mut segments, &[0; 4], &[false; 4], mib),
            None,
            "only busy ones"
        );
        let mut small = vec![Segment {
            start: 0,
            end: 3 * mib,
            done: 0,
        }];
        assert_eq!(
            steal(&mut small, &[0], &[true], 2 * mib),
            None,
            "too little left"
        );
    }

    const MIB: u64 = 1024 * 1024;

    fn pieces(max: u64, min: u64, connections: usize) -> Pieces {
        Pieces {
            max,
            min,
            connections,
        }
    }

    #[test]
    fn the_first_layout_is_a_piece_per_connection_and_a_free_rest() {
        let layout = lay_out(100 * MIB, pieces(8 * MIB, MIB, 4));
        let starts: Vec<u64> = layout.iter().map(|s| s.start).collect();
        let piece = (25 * MIB).div_ceil(3);
        assert_eq!(
            starts,
            [0, piece, 2 * piece, 3 * piece, 4 * piece],
            "25 MiB a connection, in the 3 pieces nearest to 8 MiB"
        );
        assert_eq!(layout[4].end, 100 * MIB);
        assert_eq!(
            lay_out(40 * MIB, pieces(8 * MIB, MIB, 4)),
            split(40 * MIB, 4),
            "too small for pieces: equal segments"
        );
    }

    #[test]
    fn an_idle_connection_takes_the_front_of_the_earliest_free_range() {
        let pieces = pieces(8 * MIB, MIB, 2);
        let mut segments = lay_out(96 * MIB, pieces);
        assert_eq!(
            segments[1].end,
            16 * MIB,
            "48 MiB a connection: 6 pieces of 8"
        );
        segments[0].done = segments[0].len();
        // 80 MiB still to come (the busy piece is all but received): 40 a connection, in 8s.
        let (mut received, mut busy) = (vec![8 * MIB, 8 * MIB, 0], vec![false, true, false]);
        let taken = next_piece(&mut segments, &mut received, &mut busy, pieces).unwrap();
        assert_eq!(taken, 2, "the free rest, not the finished piece");
        assert_eq!(
            segments[2],
            Segment {
                start: 16 * MIB,
                end: 24 * MIB,
                done: 0
            }
        );
        assert_eq!(segments[3].start, 24 * MIB);
        assert_eq!(
            (received.len(), busy.clone()),
            (4, vec![false, true, true, false])
        );
        // What is left is taken whole when a piece would leave less than `min` behind: with
        // 12.5 MiB to come a piece is 6.25 MiB, more than the 4.5 MiB of this range.
        segments[3].done = segments[3].len() - 4 * MIB - MIB / 2;
        let last = next_piece(&mut segments, &mut received, &mut busy, pieces).unwrap();
        assert_eq!((last, segments.len()), (3, 4));
        assert_eq!(
            next_piece(&mut segments, &mut received, &mut busy, pieces),
            None,
            "every unfinished range is held"
        );
    }

    /// The bytes the busiest of `pieces.connections` equally fast connections receives when
    /// they fetch a `total`-byte file by [`next_piece`] alone, each taking its next piece the
    /// moment its last one ends: the time the file takes, in bytes of one connection.
    fn busiest_connection(total: u64, pieces: Pieces) -> u64 {
        let mut segments = lay_out(total, pieces);
        let mut received = vec![0; segments.len()];
        let mut busy = vec![false; segments.len()];
        // (when the connection's piece ends, when it started, its segment)
        let mut held: Vec<(u64, u64, usize)> = Vec::new();
        let take = |at: u64,
                    held: &[(u64, u64, usize)],
                    segments: &mut Vec<Segment>,
                    received: &mut Vec<u64>,
                    busy: &mut Vec<bool>| {
            for &(_, started, index) in held {
                received[index] = at - started;
            }
            next_piece(segments, received, busy, pieces).map(|i| (at + segments[i].len(), at, i))
        };
        for _ in 0..pieces.connections {
            let next = take(0, &held, &mut segments, &mut received, &mut busy);
            held.extend(next);
        }
        let mut last_end = 0;
        while let Some(first) = (0..held.len()).min_by_key(|&i| held[i].0) {
            let (end, _, index) = held.swap_remove(first);
            segments[index].done = segments[index].len();
            busy[index] = false;
            last_end = end;
            let next = take(end, &held, &mut segments, &mut received, &mut busy);
            held.extend(next);
        }
        last_end
    }

    #[test]
    fn every_connection_ends_its_last_piece_together() {
        for (total, max, connections) in [
            (200 * MIB, 16 * MIB, 4),
            (1024 * MIB, 32 * MIB, 4),
            (6_500_000_000, 101 * MIB, 8),
            (300 * MIB, 16 * MIB, 3),
        ] {
            let pieces = pieces(max, 4 * MIB, connections);
            let share = total.div_ceil(connections as u64);
            let took = busiest_connection(total, pieces);
            assert!(
                took <= share + MIB,
                "{total} B over {connections}: the busiest took {took} B, a fair share is {share}"
            );
        }
    }

    #[test]
    fn rebalancing_splits_the_largest_unfinished_ranges_and_keeps_the_tiling() {
        let mib = 1024 * 1024;
        let segments = [
            Segment {
                start: 0,
                end: 10 * mib,
                done: mib,
            },
            Segment {
                start: 10 * mib,
                end: 20 * mib,
                done: 10 * mib,
            },
        ];
        let split = rebalance(&segments, 4, mib);
        assert_eq!(
            split.iter().filter(|s| !s.is_done()).count(),
            4,
            "{split:?}"
        );
        assert_eq!(split[0].start, 0);
        assert_eq!(split[0].done, mib, "done bytes stay in their segment");
        assert!(
            split.windows(2).all(|w| w[0].end == w[1].start),
            "{split:?}"
        );
        assert_eq!(split.last().map(|s| s.end), Some(20 * mib));
        assert_eq!(contiguous_prefix(&split), mib);
        assert_eq!(
            rebalance(&segments, 4, 5 * mib).len(),
            2,
            "9 MiB left: not worth two 5 MiB pieces"
        );
        assert_eq!(
            rebalance(&segments, 1, mib),
            segments,
            "enough ranges already"
        );
    }

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

    #[tokio::test]
    async fn a_claimed_part_cannot_be_claimed_again_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.safetensors");
        let first = PartClaim::acquire(&dest).await.unwrap().expect("free");
        assert!(PartClaim::acquire(&dest).await.unwrap().is_none(), "held");
        drop(first);
        assert!(
            !with_suffix(&dest, "part.lock").exists(),
            "no lock file left"
        );
        assert!(
            PartClaim::acquire(&dest).await.unwrap().is_some(),
            "free again"
        );
    }

    #[tokio::test]
    async fn a_part_that_is_not_the_length_hashed_is_never_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.safetensors");
        let part = PartFile::new(&dest);
        std::fs::write(&part.path, b"12345").unwrap();
        let error = part.commit(&dest, 4).await.unwrap_err();
        assert!(matches!(
            error,
            DownloadError::PartChanged {
                got: 5,
                expected: 4
            }
        ));
        assert!(!dest.exists() && !part.path.exists());
    }
}

#[cfg(test)]
mod props;
