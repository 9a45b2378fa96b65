//! The records of a state in memory, compact.
//!
//! An archivist's state holds 100,000 records and the run keeps all of them in memory (every
//! plan step asks about its files). As [`FileRecord`]s, with ten owned strings each (hex hashes,
//! RFC 3339 timestamps, names, paths) and an index that cloned every key, they were 90 MB of a
//! 172 MiB peak (issue 9, item 6). A [`StoredRecord`] keeps the same facts in about a third of
//! that: the hashes as their 32 bytes, the timestamps as seconds, and every string of a record
//! back to back in one allocation; the index holds positions, not copies of the keys.
//!
//! The file format does not change: a [`StoredRecord`] serializes to exactly the JSON of the
//! [`FileRecord`] it was made from (field for field, value for value) and decodes back to an
//! equal one. A value that is not in the form this build writes (a hash in mixed case, a
//! timestamp written by hand) is kept verbatim among the strings, so it round-trips too.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;

use hashbrown::HashTable;
use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};

use super::{CatalogItem, FileRecord, RecordStatus};

/// The strings of a record, in the order they sit in [`StoredRecord::text`].
#[derive(Clone, Copy)]
enum Piece {
    Key,
    ModelName,
    VersionName,
    FileName,
    RelativePath,
    Pin,
    LastError,
    /// A hash or timestamp not in its compact form, verbatim.
    ExpectedSha256,
    LocalSha256,
    CreatedAt,
    UpdatedAt,
}

const PIECES: usize = 11;

/// Which optional values are there, and in which form.
mod flag {
    pub const HAS_PIN: u16 = 1;
    pub const HAS_LAST_ERROR: u16 = 1 << 1;
    pub const HAS_EXPECTED_SIZE: u16 = 1 << 2;
    /// The flags of one hash.
    pub struct HashBits {
        /// It is there.
        pub present: u16,
        /// It is held as its bytes (else verbatim among the strings).
        pub bytes: u16,
        /// Its hex digits are written in uppercase.
        pub upper: u16,
    }
    pub const EXPECTED: HashBits = HashBits {
        present: 1 << 3,
        bytes: 1 << 4,
        upper: 1 << 5,
    };
    pub const LOCAL: HashBits = HashBits {
        present: 1 << 6,
        bytes: 1 << 7,
        upper: 1 << 8,
    };
    /// For each timestamp: held verbatim (else as seconds since the epoch).
    pub const CREATED_VERBATIM: u16 = 1 << 9;
    pub const UPDATED_VERBATIM: u16 = 1 << 10;
}

/// One [`FileRecord`], compact (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    /// Every string of the record, back to back.
    text: Box<str>,
    /// Where each [`Piece`] ends in `text`.
    ends: [u32; PIECES],
    model_id: u64,
    version_id: u64,
    file_id: u64,
    expected_size: u64,
    bytes_on_disk: u64,
    created_at: u64,
    updated_at: u64,
    expected_sha256: [u8; 32],
    local_sha256: [u8; 32],
    attempts: u32,
    flags: u16,
    status: RecordStatus,
}

impl StoredRecord {
    pub(crate) fn new(record: &FileRecord) -> StoredRecord {
        let expected = Hash::new(record.expected_sha256.as_deref());
        let local = Hash::new(record.local_sha256.as_deref());
        let created = Stamp::new(&record.created_at);
        let updated = Stamp::new(&record.updated_at);
        let pieces = [
            &record.key,
            &record.model.name,
            &record.version.name,
            &record.file.name,
            record.pin.as_deref().unwrap_or(""),
            record.last_error.as_deref().unwrap_or(""),
            expected.verbatim(),
            local.verbatim(),
            created.verbatim,
            updated.verbatim,
        ];
        // Sized once: growing it piece by piece left a freed block behind each record.
        let length = pieces.iter().map(|piece| piece.len()).sum::<usize>()
            + record.relative_path.as_os_str().len();
        let mut text = String::with_capacity(length);
        let mut ends = [0; PIECES];
        let mut flags = 0;
        let mut put = |piece: Piece, value: &str| {
            text.push_str(value);
            // Offsets past 4 GiB would need a record of that size, which JSON cannot carry here.
            ends[piece as usize] = u32::try_from(text.len()).unwrap_or(u32::MAX);
        };
        put(Piece::Key, &record.key);
        put(Piece::ModelName, &record.model.name);
        put(Piece::VersionName, &record.version.name);
        put(Piece::FileName, &record.file.name);
        // Only UTF-8 paths get this far: the journal line that precedes every insert is JSON.
        put(Piece::RelativePath, &record.relative_path.to_string_lossy());
        if let Some(pin) = &record.pin {
            flags |= flag::HAS_PIN;
            put(Piece::Pin, pin);
        } else {
            put(Piece::Pin, "");
        }
        if let Some(error) = &record.last_error {
            flags |= flag::HAS_LAST_ERROR;
            put(Piece::LastError, error);
        } else {
            put(Piece::LastError, "");
        }
        flags |= expected.flags(&flag::EXPECTED);
        flags |= local.flags(&flag::LOCAL);
        put(Piece::ExpectedSha256, expected.verbatim());
        put(Piece::LocalSha256, local.verbatim());
        if created.secs.is_none() {
            flags |= flag::CREATED_VERBATIM;
        }
        if updated.secs.is_none() {
            flags |= flag::UPDATED_VERBATIM;
        }
        put(Piece::CreatedAt, created.verbatim);
        put(Piece::UpdatedAt, updated.verbatim);
        if record.expected_size.is_some() {
            flags |= flag::HAS_EXPECTED_SIZE;
        }
        StoredRecord {
            text: text.into_boxed_str(),
            ends,
            model_id: record.model.id,
            version_id: record.version.id,
            file_id: record.file.id,
            expected_size: record.expected_size.unwrap_or(0),
            bytes_on_disk: record.bytes_on_disk,
            created_at: created.secs.unwrap_or(0),
            updated_at: updated.secs.unwrap_or(0),
            expected_sha256: expected.bytes,
            local_sha256: local.bytes,
            attempts: record.attempts,
            flags,
            status: record.status,
        }
    }

    /// The [`FileRecord`] this was made from.
    pub(crate) fn decode(&self) -> FileRecord {
        let view = self.view();
        FileRecord {
            key: view.key.to_owned(),
            model: CatalogItem::new(view.model.id, view.model.name),
            version: CatalogItem::new(view.version.id, view.version.name),
            file: CatalogItem::new(view.file.id, view.file.name),
            relative_path: PathBuf::from(view.relative_path),
            expected_size: view.expected_size,
            expected_sha256: view.expected_sha256.map(|hash| hash.to_string()),
            local_sha256: view.local_sha256.map(|hash| hash.to_string()),
            status: view.status,
            attempts: view.attempts,
            last_error: view.last_error.map(str::to_owned),
            bytes_on_disk: view.bytes_on_disk,
            created_at: view.created_at.to_string(),
            updated_at: view.updated_at.to_string(),
            pin: view.pin.map(str::to_owned),
        }
    }

    pub(crate) fn key(&self) -> &str {
        self.piece(Piece::Key)
    }

    pub(crate) fn pin(&self) -> Option<&str> {
        self.has(flag::HAS_PIN).then(|| self.piece(Piece::Pin))
    }

    /// When the record was first made, as [`FileRecord::created_at`] has it.
    pub(crate) fn created_at(&self) -> String {
        self.view().created_at.to_string()
    }

    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    fn piece(&self, piece: Piece) -> &str {
        let index = piece as usize;
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.text[start as usize..self.ends[index] as usize]
    }

    fn hash<'a>(
        &'a self,
        bytes: &'a [u8; 32],
        bits: &flag::HashBits,
        piece: Piece,
    ) -> Option<HashView<'a>> {
        if !self.has(bits.present) {
            return None;
        }
        Some(if self.has(bits.bytes) {
            HashView::Bytes {
                bytes,
                upper: self.has(bits.upper),
            }
        } else {
            HashView::Verbatim(self.piece(piece))
        })
    }

    fn stamp(&self, secs: u64, verbatim: u16, piece: Piece) -> StampView<'_> {
        if self.has(verbatim) {
            StampView::Verbatim(self.piece(piece))
        } else {
            StampView::Secs(secs)
        }
    }

    /// The record's fields borrowed, in [`FileRecord`]'s order: serializing it writes the same
    /// JSON as serializing the [`FileRecord`].
    fn view(&self) -> RecordView<'_> {
        RecordView {
            key: self.piece(Piece::Key),
            model: ItemView {
                id: self.model_id,
                name: self.piece(Piece::ModelName),
            },
            version: ItemView {
                id: self.version_id,
                name: self.piece(Piece::VersionName),
            },
            file: ItemView {
                id: self.file_id,
                name: self.piece(Piece::FileName),
            },
            relative_path: self.piece(Piece::RelativePath),
            expected_size: self
                .has(flag::HAS_EXPECTED_SIZE)
                .then_some(self.expected_size),
            expected_sha256: self.hash(
                &self.expected_sha256,
                &flag::EXPECTED,
                Piece::ExpectedSha256,
            ),
            local_sha256: self.hash(&self.local_sha256, &flag::LOCAL, Piece::LocalSha256),
            status: self.status,
            attempts: self.attempts,
            last_error: self
                .has(flag::HAS_LAST_ERROR)
                .then(|| self.piece(Piece::LastError)),
            bytes_on_disk: self.bytes_on_disk,
            created_at: self.stamp(self.created_at, flag::CREATED_VERBATIM, Piece::CreatedAt),
            updated_at: self.stamp(self.updated_at, flag::UPDATED_VERBATIM, Piece::UpdatedAt),
            pin: self.pin(),
        }
    }
}

impl Serialize for StoredRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(serializer)
    }
}

/// [`FileRecord`] borrowed from a [`StoredRecord`]; the fields and attributes must stay those
/// of [`FileRecord`] (the tests compare the JSON of both).
#[derive(serde::Serialize)]
struct RecordView<'a> {
    key: &'a str,
    model: ItemView<'a>,
    version: ItemView<'a>,
    file: ItemView<'a>,
    relative_path: &'a str,
    expected_size: Option<u64>,
    expected_sha256: Option<HashView<'a>>,
    local_sha256: Option<HashView<'a>>,
    status: RecordStatus,
    attempts: u32,
    last_error: Option<&'a str>,
    bytes_on_disk: u64,
    created_at: StampView<'a>,
    updated_at: StampView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct ItemView<'a> {
    id: u64,
    name: &'a str,
}

/// A SHA-256 as a record holds it: 32 bytes when its text was 64 hex digits of one case.
struct Hash<'a> {
    bytes: [u8; 32],
    present: bool,
    upper: bool,
    /// The text, when it is not in that form.
    verbatim: Option<&'a str>,
}

impl<'a> Hash<'a> {
    fn new(text: Option<&'a str>) -> Hash<'a> {
        let mut hash = Hash {
            bytes: [0; 32],
            present: text.is_some(),
            upper: false,
            verbatim: text,
        };
        let Some(text) = text else {
            return hash;
        };
        let lower = !text.bytes().any(|b| b.is_ascii_uppercase());
        let upper = !text.bytes().any(|b| b.is_ascii_lowercase());
        if text.len() == 64 && (lower || upper) && decode_hex(text, &mut hash.bytes) {
            hash.upper = !lower;
            hash.verbatim = None;
        }
        hash
    }

    /// The flags saying so, in `bits`.
    fn flags(&self, bits: &flag::HashBits) -> u16 {
        let mut flags = 0;
        if self.present {
            flags |= bits.present;
            if self.verbatim.is_none() {
                flags |= bits.bytes;
                if self.upper {
                    flags |= bits.upper;
                }
            }
        }
        flags
    }

    fn verbatim(&self) -> &'a str {
        self.verbatim.unwrap_or("")
    }
}

fn decode_hex(text: &str, out: &mut [u8; 32]) -> bool {
    let digit = |b: u8| (b as char).to_digit(16);
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let (Some(high), Some(low)) = (digit(pair[0]), digit(pair[1])) else {
            return false;
        };
        *byte = (high * 16 + low) as u8;
    }
    true
}

/// A hash of a [`StoredRecord`], written as it was read.
enum HashView<'a> {
    Bytes { bytes: &'a [u8; 32], upper: bool },
    Verbatim(&'a str),
}

impl fmt::Display for HashView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashView::Bytes { bytes, upper: true } => {
                bytes.iter().try_for_each(|b| write!(f, "{b:02X}"))
            }
            HashView::Bytes {
                bytes,
                upper: false,
            } => bytes.iter().try_for_each(|b| write!(f, "{b:02x}")),
            HashView::Verbatim(text) => f.write_str(text),
        }
    }
}

impl Serialize for HashView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A timestamp as a record holds it: seconds, when the text is what
/// [`super::rfc3339_from_unix_secs`] writes for them.
struct Stamp<'a> {
    secs: Option<u64>,
    verbatim: &'a str,
}

impl<'a> Stamp<'a> {
    fn new(text: &'a str) -> Stamp<'a> {
        match super::unix_secs_from_rfc3339(text) {
            Some(secs) if super::rfc3339_from_unix_secs(secs) == text => Stamp {
                secs: Some(secs),
                verbatim: "",
            },
            _ => Stamp {
                secs: None,
                verbatim: text,
            },
        }
    }
}

enum StampView<'a> {
    Secs(u64),
    Verbatim(&'a str),
}

impl fmt::Display for StampView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StampView::Secs(secs) => f.write_str(&super::rfc3339_from_unix_secs(*secs)),
            StampView::Verbatim(text) => f.write_str(text),
        }
    }
}

impl Serialize for StampView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Records a chunk of [`Records`] holds: 1,024 of 192 bytes.
const CHUNK_RECORDS: usize = 1024;

/// A vector of records in fixed chunks: growing it never copies it (a vector doubling past
/// 65,536 records held 12 and 25 MB at once, and fragmented the heap with the first) and leaves
/// at most one chunk unused, where a doubled vector can leave almost half of itself.
#[derive(Debug, Default)]
struct Records {
    chunks: Vec<Vec<StoredRecord>>,
    len: usize,
}

impl Records {
    fn get(&self, position: usize) -> Option<&StoredRecord> {
        self.chunks
            .get(position / CHUNK_RECORDS)?
            .get(position % CHUNK_RECORDS)
    }

    fn set(&mut self, position: usize, record: StoredRecord) {
        self.chunks[position / CHUNK_RECORDS][position % CHUNK_RECORDS] = record;
    }

    fn push(&mut self, record: StoredRecord) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK_RECORDS => chunk.push(record),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_RECORDS);
                chunk.push(record);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &StoredRecord> {
        self.chunks.iter().flatten()
    }
}

impl std::ops::Index<usize> for Records {
    type Output = StoredRecord;
    fn index(&self, position: usize) -> &StoredRecord {
        &self.chunks[position / CHUNK_RECORDS][position % CHUNK_RECORDS]
    }
}

/// Records in the order they were first planned, with lookup by key. Records are never removed,
/// so a position names the same file for the whole run.
#[derive(Debug, Default)]
pub(crate) struct FileTable {
    records: Records,
    /// Positions in `records`, hashed by their record's key.
    index: HashTable<u32>,
    hasher: RandomState,
}

impl FileTable {
    pub(crate) fn len(&self) -> usize {
        self.records.len
    }

    pub(crate) fn position(&self, key: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&position| {
                self.records[position as usize].key() == key
            })
            .map(|&position| position as usize)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&StoredRecord> {
        self.position(key).map(|position| &self.records[position])
    }

    pub(crate) fn at(&self, position: usize) -> Option<&StoredRecord> {
        self.records.get(position)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &StoredRecord> {
        self.records.iter()
    }

    /// Inserts `record`, or replaces the record with its key (keeping that one's position).
    pub(crate) fn insert(&mut self, record: &FileRecord) {
        let stored = StoredRecord::new(record);
        match self.position(&record.key) {
            Some(position) => self.records.set(position, stored),
            None => {
                let hash = self.hasher.hash_one(&record.key);
                // A state of four billion files would not fit in memory long before this.
                let position = u32::try_from(self.records.len).unwrap_or(u32::MAX);
                let (records, hasher) = (&self.records, &self.hasher);
                self.index.insert_unique(hash, position, |&p| {
                    hasher.hash_one(records[p as usize].key())
                });
                self.records.push(stored);
            }
        }
    }
}

impl Serialize for FileTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.records.iter())
    }
}

/// Decodes the snapshot's `files` straight into the table, one record at a time: a vector of
/// 100,000 [`FileRecord`]s beside the table would double the memory of opening a state. A key
/// seen twice keeps its last record, as inserting them one by one does.
impl<'de> Deserialize<'de> for FileTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Records;
        impl<'de> Visitor<'de> for Records {
            type Value = FileTable;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of file records")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FileTable, A::Error> {
                let mut table = FileTable::default();
                while let Some(record) = seq.next_element::<FileRecord>()? {
                    table.insert(&record);
                }
                Ok(table)
            }
        }
        deserializer.deserialize_seq(Records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> FileRecord {
        let mut record = FileRecord::new(
            "130072:99",
            CatalogItem::new(4201, "Realistic Vision"),
            CatalogItem::new(130072, "V6.0 B1"),
            CatalogItem::new(99, "realisticVision_v60B1.safetensors"),
            "Realistic Vision/realisticVision_v60B1.safetensors",
        );
        record.expected_size = Some(2_132_625_894);
        record.expected_sha256 =
            Some("86F35DC1FAE45B23D63284B314C96FAB76D52FE67EC84C8BA798F35E9414C98E".into());
        record.local_sha256 =
            Some("86f35dc1fae45b23d63284b314c96fab76d52fe67ec84c8ba798f35e9414c98e".into());
        record.status = RecordStatus::Done;
        record.bytes_on_disk = 2_132_625_894;
        record.pin = Some("130072 114976be5e4df0b9 1".into());
        record
    }

    fn same_json_and_back(record: &FileRecord) {
        let stored = StoredRecord::new(record);
        assert_eq!(
            serde_json::to_string(&stored).unwrap(),
            serde_json::to_string(record).unwrap()
        );
        assert_eq!(&stored.decode(), record);
    }

    #[test]
    fn values_in_any_form_serialize_and_decode_as_they_came() {
        same_json_and_back(&record());
        let mut odd = record();
        odd.expected_sha256 = Some("86f35DC1".into());
        odd.local_sha256 =
            Some("86F35DC1FAE45B23D63284B314C96FAB76D52FE67EC84C8BA798F35E9414C98e".into());
        odd.created_at = "2024-02-30T00:00:00Z".into();
        odd.updated_at = "2024-02-29T23:59:59.5+01:00".into();
        odd.last_error = Some("timed out".into());
        odd.pin = None;
        odd.expected_size = None;
        same_json_and_back(&odd);
        let mut bare = record();
        (bare.expected_sha256, bare.local_sha256) = (None, None);
        bare.key = String::new();
        same_json_and_back(&bare);
    }

    // Issue 9.6: 100,000 records as `FileRecord`s were 90 MB of a run's 172 MiB peak, 344 bytes
    // of struct and ten strings each. The compact record is one struct and one allocation for
    // its strings; 200 bytes of struct keeps 100,000 records at 20 MB plus their text.
    #[test]
    fn a_record_stays_small() {
        assert!(
            size_of::<StoredRecord>() <= 200,
            "{}",
            size_of::<StoredRecord>()
        );
        let stored = StoredRecord::new(&record());
        let strings = ["130072:99", "Realistic Vision", "V6.0 B1"];
        let names = strings.iter().map(|s| s.len()).sum::<usize>()
            + "realisticVision_v60B1.safetensors".len()
            + "Realistic Vision/realisticVision_v60B1.safetensors".len()
            + "130072 114976be5e4df0b9 1".len();
        assert_eq!(stored.text.len(), names, "hashes and times take no text");
    }

    #[test]
    fn the_table_finds_records_by_key_and_keeps_positions() {
        let mut table = FileTable::default();
        for n in 0..3000 {
            let mut record = record();
            record.key = format!("k{n}");
            table.insert(&record);
        }
        let mut again = record();
        again.key = "k500".into();
        again.attempts = 9;
        table.insert(&again);
        assert_eq!(table.len(), 3000);
        assert_eq!(table.position("k500"), Some(500));
        assert_eq!(table.get("k500").unwrap().decode().attempts, 9);
        assert_eq!(
            table.at(2049).unwrap().key(),
            "k2049",
            "past the first chunks"
        );
        assert!(table.at(3000).is_none());
        assert!(table.get("k3000").is_none());
        let keys: Vec<&str> = table.iter().map(StoredRecord::key).collect();
        assert_eq!(keys.len(), 3000);
        assert_eq!((keys[0], keys[1024], keys[2999]), ("k0", "k1024", "k2999"));
    }
}
