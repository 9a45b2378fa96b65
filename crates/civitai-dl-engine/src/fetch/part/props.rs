//! Property tests of the `.part.json` record, which a crash, a full disk or a user can leave in
//! any state.
//!
//! - A record saved with [`PartFile::save_meta`] is read back unchanged by
//!   [`PartFile::load_or_reset`].
//! - Any other bytes (truncated, spliced with junk, or random) never panic and never fail the
//!   attempt: the record is used only if it decodes and names this file and its published hash;
//!   otherwise a fresh record is used, and a `.part` beside it is discarded unless a published
//!   hash can judge its bytes. An unreadable record is never an error of its own: it costs at
//!   most a restart.
//! - A segment layout is continued only if it claims no byte beyond the `.part`: segments that
//!   tile `[0, total)` in order, each at most full, beside a `.part` of exactly `total` bytes.
//! - The contiguous prefix, which the one-stream path resumes from without that check, never
//!   extends past a segment's end, and cutting the `.part` back to it never makes it longer.

use std::future::Future;

use proptest::prelude::*;

use super::*;
use crate::fetch::{FileKind, Source};
use crate::props_config::cases;

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

fn planned(dest: PathBuf, version_id: u64, file_id: u64, sha256: Option<String>) -> PlannedFile {
    PlannedFile {
        label: "model 1 file a".into(),
        source: Source::Civitai {
            version_id,
            file_id,
        },
        dest,
        expected_size: None,
        expected_sha256: sha256,
        known_sha256: None,
        kind: FileKind::Model,
        replace_existing: false,
    }
}

fn segment() -> impl Strategy<Value = Segment> {
    (0..1_000u64, 0..1_000u64, 0..1_100u64).prop_map(|(start, end, done)| Segment {
        start,
        end,
        done,
    })
}

/// Segment lists as a record may hold them: laid end to end from cut points in any order (so
/// some tile a file, some run backwards), or unrelated.
fn segments() -> impl Strategy<Value = Vec<Segment>> {
    prop_oneof![
        (
            proptest::collection::vec(0..1_000u64, 1..6),
            proptest::collection::vec(0..1_100u64, 6)
        )
            .prop_map(|(cuts, done)| {
                let mut start = 0;
                cuts.iter()
                    .zip(done)
                    .map(|(&end, done)| {
                        let segment = Segment { start, end, done };
                        start = end;
                        segment
                    })
                    .collect()
            }),
        proptest::collection::vec(segment(), 0..6),
    ]
}

/// Segments that tile a file, each partly done, as a usable record holds them.
fn tiling() -> impl Strategy<Value = Vec<Segment>> {
    (
        proptest::collection::btree_set(1..2_000u64, 1..6),
        proptest::collection::vec(0.0..=1.0f64, 6),
    )
        .prop_map(|(ends, fractions)| {
            let mut start = 0;
            ends.into_iter()
                .zip(fractions)
                .map(|(end, fraction)| {
                    let done = ((end - start) as f64 * fraction) as u64;
                    let segment = Segment { start, end, done };
                    start = end;
                    segment
                })
                .collect()
        })
}

fn meta(source: String, sha256: Option<String>) -> impl Strategy<Value = PartMeta> {
    (
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(segments()),
    )
        .prop_map(move |(total, etag, segments)| PartMeta {
            source: source.clone(),
            expected_sha256: sha256.clone(),
            total,
            etag,
            segments,
        })
}

/// A planned file (its version id, file id, published hash) and a record that belongs to it.
fn file_and_meta() -> impl Strategy<Value = ((u64, u64, Option<String>), PartMeta)> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::option::of("[0-9A-F]{64}"),
    )
        .prop_flat_map(|(version_id, file_id, sha256)| {
            let source = source_key(&Source::Civitai {
                version_id,
                file_id,
            });
            (
                Just((version_id, file_id, sha256.clone())),
                meta(source, sha256),
            )
        })
}

/// The bytes of a saved record after what can happen to a file: cut short, spliced with junk,
/// one byte changed, or replaced by noise.
fn damaged(record: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = record.len();
    let (cut, splice, flip) = (record.clone(), record.clone(), record);
    prop_oneof![
        (0..len).prop_map(move |at| cut[..at].to_vec()),
        (0..=len, proptest::collection::vec(any::<u8>(), 1..8)).prop_map(move |(at, junk)| {
            let mut bytes = splice.clone();
            bytes.splice(at..at, junk);
            bytes
        }),
        (0..len, any::<u8>()).prop_map(move |(at, byte)| {
            let mut bytes = flip.clone();
            bytes[at] = byte;
            bytes
        }),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Whether segments in any order, sorted as a record is saved, make a usable record.
fn usable_once_sorted(segments: &[Segment], total: u64) -> bool {
    let mut record = segments.to_vec();
    record.sort_by_key(|s| s.start);
    let meta = PartMeta {
        total: Some(total),
        segments: Some(record),
        ..PartMeta::default()
    };
    recorded_segments_usable(&meta, Some(total))
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn a_saved_record_reads_back_unchanged(((version, file_id, sha256), meta) in file_and_meta()) {
        let dir = tempfile::tempdir().unwrap();
        let file = planned(dir.path().join("a.safetensors"), version, file_id, sha256);
        let part = PartFile::new(&file.dest);
        let loaded = block_on(async {
            part.save_meta(&meta).await.unwrap();
            part.load_or_reset(&file).await.unwrap()
        });
        prop_assert_eq!(loaded, meta);
    }

    #[test]
    fn a_damaged_record_is_used_only_if_it_still_names_this_file(
        ((version, file_id, sha256), bytes) in file_and_meta().prop_flat_map(|(file, meta)| {
            (Just(file), damaged(serde_json::to_vec(&meta).unwrap()))
        }),
        part_len in proptest::option::of(0..64usize),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = planned(dir.path().join("a.safetensors"), version, file_id, sha256);
        let part = PartFile::new(&file.dest);
        std::fs::write(&part.meta_path, &bytes).unwrap();
        if let Some(len) = part_len {
            std::fs::write(&part.path, vec![7; len]).unwrap();
        }
        let loaded = block_on(part.load_or_reset(&file)).unwrap();
        let fresh = PartMeta {
            source: source_key(&file.source),
            expected_sha256: file.expected_sha256.clone(),
            ..PartMeta::default()
        };
        match serde_json::from_slice::<PartMeta>(&bytes) {
            Ok(decoded)
                if decoded.source == fresh.source
                    && decoded.expected_sha256 == fresh.expected_sha256 =>
            {
                prop_assert_eq!(loaded, decoded);
            }
            Ok(_) => {
                prop_assert_eq!(loaded, fresh);
                prop_assert!(!part.path.exists(), "another file's .part is kept");
            }
            Err(_) => {
                prop_assert_eq!(loaded, fresh);
                let judged = file.expected_sha256.is_some() && part_len.is_some();
                prop_assert_eq!(part.path.exists(), judged);
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn usable_segments_claim_nothing_beyond_the_part(
        (segments, total, part_len) in segments().prop_flat_map(|segments| {
            // Mostly the total and `.part` length a tiling would need, so the check is reached.
            let end = segments.last().map_or(0, |s| s.end);
            let size = || prop_oneof![3 => Just(end), 1 => 0..1_000u64];
            (Just(segments), proptest::option::of(size()), proptest::option::of(size()))
        }),
    ) {
        let meta = PartMeta { total, segments: Some(segments.clone()), ..PartMeta::default() };
        if recorded_segments_usable(&meta, part_len) {
            let total = total.unwrap();
            prop_assert_eq!(part_len, Some(total));
            let mut next = 0;
            for segment in &segments {
                prop_assert!(segment.start == next && segment.start <= segment.end, "{:?}", segments);
                prop_assert!(segment.done <= segment.end - segment.start);
                next = segment.end;
            }
            prop_assert_eq!(next, total);
        }
    }

    #[test]
    fn rebalancing_a_usable_record_keeps_it_usable_with_the_same_bytes_done(
        segments in tiling(),
        connections in 1..8usize,
        min_piece in 1..300u64,
    ) {
        let total = segments.last().map_or(0, |s| s.end);
        let meta = PartMeta { total: Some(total), segments: Some(segments.clone()), ..PartMeta::default() };
        prop_assert!(recorded_segments_usable(&meta, Some(total)), "the generator tiles: {:?}", segments);
        let split = rebalance(&segments, connections, min_piece);
        let after = PartMeta { segments: Some(split.clone()), ..meta };
        prop_assert!(recorded_segments_usable(&after, Some(total)), "{:?} -> {:?}", segments, split);
        let done = |s: &[Segment]| s.iter().map(|s| s.done).sum::<u64>();
        prop_assert_eq!(done(&split), done(&segments));
        prop_assert_eq!(contiguous_prefix(&split), contiguous_prefix(&segments));
        let unfinished = split.iter().filter(|s| !s.is_done()).count();
        let before = segments.iter().filter(|s| !s.is_done()).count();
        prop_assert!(unfinished >= before.min(connections));
        let new_pieces = split.iter().filter(|s| !segments.iter().any(|o| o.start == s.start));
        for piece in new_pieces {
            prop_assert!(piece.len() >= min_piece, "{:?} below {} in {:?}", piece, min_piece, split);
        }
    }

    #[test]
    fn any_series_of_steals_keeps_a_usable_record_and_every_received_byte(
        segments in tiling(),
        shares in proptest::collection::vec(0.0..=1.0f64, 1..8),
        min_piece in 1..300u64,
    ) {
        let total = segments.last().map_or(0, |s| s.end);
        let mut split = segments.clone();
        // Each busy segment has received some share of what it still lacked.
        let mut received: Vec<u64> = split.iter().map(|s| s.done).collect();
        for share in shares {
            let busy = vec![true; split.len()];
            let before = split.clone();
            let Some(new) = steal(&mut split, &received, &busy, min_piece) else { break };
            let victim = (0..before.len()).find(|&i| before[i].end != split[i].end).unwrap();
            prop_assert!(split[victim].end >= split[victim].start + received[victim], "{:?}", split);
            prop_assert!(split[new].len() >= min_piece);
            received.push((split[new].len() as f64 * share) as u64);
        }
        prop_assert!(usable_once_sorted(&split, total), "{:?}", split);
        let done = |s: &[Segment]| s.iter().map(|s| s.done).sum::<u64>();
        prop_assert_eq!(done(&split), done(&segments));
    }

    #[test]
    fn taking_pieces_from_free_ranges_keeps_a_usable_record_and_the_books_in_step(
        segments in tiling(),
        held in proptest::collection::vec(proptest::bool::ANY, 0..8),
        piece in 1..300u64,
        min_piece in 1..300u64,
        connections in 1..17usize,
    ) {
        let total = segments.last().map_or(0, |s| s.end);
        let mut split = segments.clone();
        let mut received: Vec<u64> = split.iter().map(|s| s.done).collect();
        let mut busy: Vec<bool> = (0..split.len()).map(|i| held.get(i).copied().unwrap_or(false)).collect();
        let pieces = Pieces { max: piece, min: min_piece, connections };
        while let Some(taken) = next_piece(&mut split, &mut received, &mut busy, pieces) {
            prop_assert!(busy[taken] && !split[taken].is_done());
            prop_assert_eq!((received.len(), busy.len()), (split.len(), split.len()));
        }
        prop_assert!(split.iter().zip(&busy).all(|(s, b)| *b || s.is_done()), "every range held or done: {:?}", split);
        prop_assert!(usable_once_sorted(&split, total), "{:?}", split);
        let done = |s: &[Segment]| s.iter().map(|s| s.done).sum::<u64>();
        prop_assert_eq!(done(&split), done(&segments));
    }

    #[test]
    fn the_first_layout_tiles_the_file(total in 0..10_000u64, count in 1..17usize, piece in 0..2_000u64) {
        let layout = lay_out(total, Pieces { max: piece, min: 1, connections: count });
        let meta = PartMeta { total: Some(total), segments: Some(layout.clone()), ..PartMeta::default() };
        prop_assert!(total == 0 || recorded_segments_usable(&meta, Some(total)), "{:?}", layout);
    }

    #[test]
    fn the_contiguous_prefix_stays_within_the_segments(segments in segments()) {
        let prefix = contiguous_prefix(&segments);
        let furthest = segments.iter().map(|s| s.end).max().unwrap_or(0);
        prop_assert!(prefix <= furthest, "{} > {} in {:?}", prefix, furthest, segments);
    }
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn cutting_back_to_the_prefix_never_grows_the_part(
        segments in segments(),
        part_len in 0..1_000usize,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let part = PartFile::new(&dir.path().join("a.safetensors"));
        std::fs::write(&part.path, vec![7; part_len]).unwrap();
        let meta = PartMeta { segments: Some(segments.clone()), ..PartMeta::default() };
        let reduced = block_on(part.reduce_to_prefix(meta)).unwrap();
        prop_assert_eq!(reduced.segments, None);
        let len = std::fs::metadata(&part.path).unwrap().len();
        prop_assert_eq!(len, contiguous_prefix(&segments).min(part_len as u64));
    }
}
