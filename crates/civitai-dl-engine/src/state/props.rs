//! Property tests of the state file and its journal, which a kill, a power cut or a user's editor
//! can leave in any state.
//!
//! - A record kept compact in memory writes the JSON its [`FileRecord`] writes and decodes back
//!   to it, whatever its hashes and timestamps hold: the file format is the same both ways.
//! - Records saved through the snapshot, or only through the journal (a killed run), load back
//!   equal and in plan order, whatever text their names, paths and errors hold.
//! - A journal's torn last line (anything after the last newline) is ignored and the records
//!   before it load; junk that completes a line is refused as [`StateError::CorruptJournal`]
//!   naming that line, never skipped.
//! - Arbitrary or damaged snapshot and journal bytes never panic: they load, or fail with a
//!   named error whose message names the file (and, for the journal, a line that exists).

use proptest::prelude::*;

use super::*;
use crate::props_config::cases;

fn item() -> impl Strategy<Value = CatalogItem> {
    (any::<u64>(), any::<String>()).prop_map(|(id, name)| CatalogItem { id, name })
}

fn status() -> impl Strategy<Value = RecordStatus> {
    proptest::sample::select(vec![
        RecordStatus::Pending,
        RecordStatus::Downloading,
        RecordStatus::Done,
        RecordStatus::Failed,
        RecordStatus::Quarantined,
    ])
}

fn record(key: String) -> impl Strategy<Value = FileRecord> {
    (
        (item(), item(), item(), any::<String>()),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of("[0-9a-fA-F]{64}"),
            proptest::option::of("[0-9a-f]{64}"),
        ),
        (
            status(),
            any::<u32>(),
            proptest::option::of(any::<String>()),
            any::<u64>(),
        ),
        proptest::option::of(any::<String>()),
    )
        .prop_map(
            move |(
                (model, version, file, path),
                (expected_size, expected_sha256, local_sha256),
                (status, attempts, last_error, bytes_on_disk),
                pin,
            )| FileRecord {
                key: key.clone(),
                model,
                version,
                file,
                relative_path: PathBuf::from(path),
                expected_size,
                expected_sha256,
                local_sha256,
                status,
                attempts,
                last_error,
                bytes_on_disk,
                created_at: String::new(),
                updated_at: String::new(),
                pin,
            },
        )
}

/// Records with distinct keys (the state keeps one record per key).
fn records() -> impl Strategy<Value = Vec<FileRecord>> {
    proptest::collection::vec(any::<String>(), 0..6).prop_flat_map(|names| {
        names
            .into_iter()
            .enumerate()
            .map(|(index, name)| record(format!("{index}:{name}")))
            .collect::<Vec<_>>()
    })
}

/// Each record upserted into a fresh store at `path`; returns what the store holds.
fn save(path: &Path, records: &[FileRecord], compact: bool) -> Vec<FileRecord> {
    let mut store = StateStore::open(path).unwrap();
    for record in records {
        store.upsert(record.clone()).unwrap();
    }
    let saved = store.records().collect();
    if compact {
        store.flush().unwrap();
    } else {
        // As a kill -9 leaves it: the journal as written, no compaction on drop.
        store.updates_since_compaction = 0;
    }
    saved
}

fn loaded(path: &Path) -> Vec<FileRecord> {
    StateStore::open(path).unwrap().records().collect()
}

/// Bytes after what can happen to a file: cut short, spliced with junk, one byte changed (of
/// an empty journal, only the splice changes anything).
fn damaged(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len();
    let (cut, splice, flip) = (bytes.clone(), bytes.clone(), bytes);
    prop_oneof![
        (0..=len).prop_map(move |at| cut[..at].to_vec()),
        (0..=len, proptest::collection::vec(any::<u8>(), 1..8)).prop_map(move |(at, junk)| {
            let mut bytes = splice.clone();
            bytes.splice(at..at, junk);
            bytes
        }),
        (0..len.max(1), any::<u8>()).prop_map(move |(at, byte)| {
            let mut bytes = flip.clone();
            if let Some(slot) = bytes.get_mut(at) {
                *slot = byte;
            }
            bytes
        }),
    ]
}

fn snapshot_bytes(records: &[FileRecord]) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({
        "version": FORMAT_VERSION,
        "files": records,
    }))
    .unwrap()
}

fn journal_bytes(records: &[FileRecord]) -> Vec<u8> {
    records
        .iter()
        .flat_map(|record| {
            let mut line = serde_json::to_vec(record).unwrap();
            line.push(b'\n');
            line
        })
        .collect()
}

/// A timestamp as this build writes it, or any text a hand or another build may have left.
fn timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..253_402_300_800u64).prop_map(rfc3339_from_unix_secs),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(cases(64))]

    // The format stays the same both ways: a record kept compact in memory writes the JSON its
    // `FileRecord` writes (what older builds read) and decodes back to it.
    #[test]
    fn a_compact_record_writes_and_decodes_as_its_record(
        record in record("130072:99".into()),
        created_at in timestamp(),
        updated_at in timestamp(),
        hashes in (proptest::option::of(any::<String>()), proptest::option::of("[0-9A-F]{64}")),
    ) {
        let mut record = record;
        (record.created_at, record.updated_at) = (created_at, updated_at);
        let stored = table::StoredRecord::new(&record);
        prop_assert_eq!(serde_json::to_string(&stored).unwrap(), serde_json::to_string(&record).unwrap());
        prop_assert_eq!(&stored.decode(), &record);
        record.expected_sha256 = hashes.0;
        record.local_sha256 = hashes.1;
        let stored = table::StoredRecord::new(&record);
        prop_assert_eq!(serde_json::to_string(&stored).unwrap(), serde_json::to_string(&record).unwrap());
        prop_assert_eq!(&stored.decode(), &record);
    }

    #[test]
    fn saved_records_load_back_equal(records in records(), compact in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let saved = save(&path, &records, compact);
        prop_assert_eq!(saved.len(), records.len());
        prop_assert_eq!(loaded(&path), saved);
    }

    #[test]
    fn a_journal_tail_is_ignored_when_torn_and_refused_when_complete(
        records in records(),
        junk in proptest::collection::vec(any::<u8>(), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let saved = save(&path, &records, false);
        let journal = sibling(&path, JOURNAL_SUFFIX);
        let mut file = OpenOptions::new().append(true).open(&journal).unwrap();
        file.write_all(&junk).unwrap();
        drop(file);
        let first_junk_line = junk.split(|&b| b == b'\n').next().unwrap();
        let completes_a_line = junk.contains(&b'\n');
        match StateStore::open(&path) {
            Ok(store) => {
                let decodes = serde_json::from_slice::<FileRecord>(first_junk_line).is_ok();
                prop_assert!(!completes_a_line || decodes, "junk line accepted");
                if !completes_a_line {
                    prop_assert_eq!(store.records().collect::<Vec<_>>(), saved);
                }
            }
            Err(error) => {
                prop_assert!(completes_a_line, "torn line refused: {}", error);
                let StateError::CorruptJournal { line, .. } = &error else {
                    panic!("unexpected {error:?}");
                };
                prop_assert_eq!(*line, records.len() + 1);
                prop_assert!(error.to_string().contains(&journal.display().to_string()));
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn snapshot_bytes_load_or_name_the_file(
        bytes in prop_oneof![
            records().prop_flat_map(|records| damaged(snapshot_bytes(&records))),
            proptest::collection::vec(any::<u8>(), 0..64),
            "\\{\"version\": ?[0-9]{1,3}, ?\"files\": ?\\[\\]\\}".prop_map(String::into_bytes),
        ]
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, &bytes).unwrap();
        match load_snapshot(&path) {
            Ok((table, _)) => {
                let snapshot: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                prop_assert_eq!(&snapshot["version"], FORMAT_VERSION);
                prop_assert!(table.len() <= snapshot["files"].as_array().unwrap().len());
            }
            Err(error) => {
                let named = matches!(
                    error,
                    StateError::CorruptSnapshot { .. } | StateError::UnsupportedVersion { .. }
                );
                prop_assert!(named, "{:?}", error);
                prop_assert!(error.to_string().contains(&path.display().to_string()));
            }
        }
    }

    #[test]
    fn journal_bytes_replay_or_name_a_line_that_exists(
        bytes in prop_oneof![
            records().prop_flat_map(|records| damaged(journal_bytes(&records))),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json.journal");
        fs::write(&path, &bytes).unwrap();
        let mut table = FileTable::default();
        match replay_journal(&path, &mut table) {
            Ok(held_something) => prop_assert_eq!(held_something, !bytes.is_empty()),
            Err(StateError::CorruptJournal { line, path: named, .. }) => {
                let complete_lines = bytes.iter().filter(|&&b| b == b'\n').count();
                prop_assert!((1..=complete_lines).contains(&line));
                prop_assert_eq!(named, path);
            }
            Err(error) => prop_assert!(false, "unexpected {:?}", error),
        }
    }
}
