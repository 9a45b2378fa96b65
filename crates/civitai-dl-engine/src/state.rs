//! The run's state file: every planned file and how far it got.
//!
//! Archivists run civitai-dl over lists of thousands of files for hours, and the process can die at
//! any instant (kill -9, power loss, Ctrl-C). Rerunning the same command must carry on where the
//! last run stopped: finished files skipped, partial ones continued, failed ones retried. This
//! module is that memory; the `--json` report and the summaries read from it too.
//!
//! # Files on disk
//!
//! Beside the state file (by default `<output>/.civitai-dl/state.json`):
//!
//! - `state.json`: the snapshot, `{"version": 1, "files": [...]}`. It is only ever replaced
//!   whole: written to `state.json.tmp`, fsynced, renamed over `state.json`, then the directory is
//!   fsynced. A kill at any instant therefore leaves either the old or the new snapshot, never a
//!   mix, and a stale `state.json.tmp` is simply overwritten by the next compaction.
//! - `state.json.journal`: one JSON record per line, appended on every update. Rewriting a
//!   10,000-file snapshot after each update would make a run quadratic, so updates land here and
//!   the snapshot is rewritten ("compacted") only after [`COMPACT_EVERY_UPDATES`] updates or a
//!   quarter of the records, whichever is more (`StateStore::compact_after`), on
//!   [`StateStore::flush`], on drop, and on open when a previous run left a journal behind. Each
//!   line holds a whole record, so replaying is idempotent: a kill between the rename and the
//!   journal truncation loses nothing. A torn last line (the append the kill interrupted) is
//!   ignored.
//! - `state.json.lock`: exclusively locked while a run uses the state, so two runs never
//!   interleave their updates.
//!
//! Appends reach the kernel before [`StateStore::upsert`] returns, which is enough to survive the
//! process being killed. They are fsynced only at compaction: a power loss can forget the updates
//! made since the last one, and the rerun then sees those files in an earlier status.
//!
//! # In memory
//!
//! Every record stays in memory while the run goes on, compact (`state::table`): the hashes as
//! bytes, the timestamps as seconds, a record's strings in one allocation, and an index of
//! positions instead of copied keys. [`StateStore::get`] and [`StateStore::records`] hand out
//! [`FileRecord`]s decoded from them; a snapshot is written from the compact records directly,
//! as the same JSON the [`FileRecord`]s would write, and read into them one record at a time.
//!
//! The API key and signed download URLs are never stored: there is no field for them. Signed URLs
//! expire anyway, and users attach state files to bug reports.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fs::{Durability, WriteError};

mod table;

use table::FileTable;

/// The snapshot format this build reads and writes; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// Updates between two snapshot rewrites while the state is small; a larger state waits for a
/// quarter of its records (`StateStore::compact_after`).
pub const COMPACT_EVERY_UPDATES: u64 = 256;

const JOURNAL_SUFFIX: &str = ".journal";
const LOCK_SUFFIX: &str = ".lock";

/// Where a planned file stands.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    /// Planned, not started yet.
    Pending,
    /// A download started; a `.part` file may hold some of it.
    Downloading,
    /// Downloaded and verified.
    Done,
    /// The last attempt failed; a rerun retries it.
    Failed,
    /// The downloaded bytes did not match the expected hash and were set aside.
    Quarantined,
}

/// A model, version or file of the Civitai catalog, as the user will recognise it in reports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatalogItem {
    /// Civitai's numeric id.
    pub id: u64,
    /// The name Civitai shows for it.
    pub name: String,
}

impl CatalogItem {
    /// Pairs an id with its display name.
    pub fn new(id: u64, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
        }
    }
}

/// Everything the state remembers about one planned file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileRecord {
    /// The caller's identity for the file, e.g. `"{version_id}:{file_id}"`; unique in a state.
    pub key: String,
    /// The model the file belongs to.
    pub model: CatalogItem,
    /// The model version the file belongs to.
    pub version: CatalogItem,
    /// The file itself (its Civitai file id and name).
    pub file: CatalogItem,
    /// Where the file goes, relative to the output directory.
    pub relative_path: PathBuf,
    /// Size announced by the API, when it gave an exact one.
    pub expected_size: Option<u64>,
    /// SHA-256 announced by the API (hex), when it gave one.
    pub expected_sha256: Option<String>,
    /// SHA-256 of the bytes on disk (hex), recorded once they were hashed.
    pub local_sha256: Option<String>,
    /// Where the file stands.
    pub status: RecordStatus,
    /// Download attempts made so far, across runs.
    pub attempts: u32,
    /// Why the last attempt failed, for the summary.
    pub last_error: Option<String>,
    /// Bytes of the file (or its `.part`) on disk at the last update.
    pub bytes_on_disk: u64,
    /// When the file was first recorded (RFC 3339, UTC).
    pub created_at: String,
    /// When the record last changed (RFC 3339, UTC).
    pub updated_at: String,
    /// The pinned target that planned the file, with its settings and file count (see
    /// `plan::Job::pin`); absent for files of targets that must be asked about every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

impl FileRecord {
    /// A freshly planned file: pending, no attempts, nothing known about its content yet.
    pub fn new(
        key: impl Into<String>,
        model: CatalogItem,
        version: CatalogItem,
        file: CatalogItem,
        relative_path: impl Into<PathBuf>,
    ) -> Self {
        let now = now_rfc3339();
        Self {
            key: key.into(),
            model,
            version,
            file,
            relative_path: relative_path.into(),
            expected_size: None,
            expected_sha256: None,
            local_sha256: None,
            status: RecordStatus::Pending,
            attempts: 0,
            last_error: None,
            bytes_on_disk: 0,
            created_at: now.clone(),
            updated_at: now,
            pin: None,
        }
    }
}

/// Why the state could not be opened or saved. Each names the file and what the user can do.
#[derive(thiserror::Error, Debug)]
pub enum StateError {
    /// Another process holds the lock on this state.
    #[error(
        "another civitai-dl run is using {}; wait for it to finish, then run this command again",
        path.display()
    )]
    Locked {
        /// The state file in use.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error(
        "cannot {operation} {}: {cause}; check that its directory is writable and the disk is not full",
        path.display()
    )]
    Io {
        /// What was being done, e.g. "write" or "rename".
        operation: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        cause: io::Error,
    },
    /// The snapshot is not a state file this build understands.
    #[error(
        "state file {} is damaged: {cause}; move it away to start fresh",
        path.display()
    )]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What the JSON parser found.
        cause: serde_json::Error,
    },
    /// A complete journal line (not the torn last one) cannot be read.
    #[error(
        "state journal {} is damaged at line {line}: {cause}; move it away to continue from the last snapshot",
        path.display()
    )]
    CorruptJournal {
        /// The journal file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What the JSON parser found.
        cause: serde_json::Error,
    },
    /// The snapshot was written by a civitai-dl with a different format.
    #[error(
        "state file {} has format version {found}, but this civitai-dl reads only version {FORMAT_VERSION}; use a newer civitai-dl or move the file away to start fresh",
        path.display()
    )]
    UnsupportedVersion {
        /// The snapshot file.
        path: PathBuf,
        /// The version it declares.
        found: u64,
    },
    /// A record cannot be represented as JSON (a path that is not valid UTF-8).
    #[error(
        "cannot save a record to {}: {cause}; output paths must be valid UTF-8",
        path.display()
    )]
    Encode {
        /// The state file.
        path: PathBuf,
        /// What the JSON serializer found.
        cause: serde_json::Error,
    },
    /// `update` was asked for a file that was never recorded.
    #[error(
        "no file {key} in {}; a file must be recorded with upsert before it is updated",
        path.display()
    )]
    UnknownFile {
        /// The state file.
        path: PathBuf,
        /// The key that was looked up.
        key: String,
    },
}

/// The on-disk snapshot as written: borrowed, so compaction copies no record.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u32,
    files: &'a FileTable,
    /// Creators whose listing broke part-way: where a rerun resumes it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    listings: &'a BTreeMap<String, String>,
}

/// The on-disk snapshot as read: its records go straight into the table.
#[derive(Deserialize)]
struct SnapshotIn {
    version: u32,
    files: FileTable,
    #[serde(default)]
    listings: BTreeMap<String, String>,
}

/// Read before the full snapshot, so a future format is reported as such rather than as damage.
#[derive(Deserialize)]
struct FormatProbe {
    version: u64,
}

/// The open state of one run: records in memory, journal and lock on disk.
///
/// Dropping it compacts any pending updates and releases the lock.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    table: FileTable,
    journal: File,
    /// Length of the journal's complete lines, to cut off a failed append.
    journal_len: u64,
    updates_since_compaction: u64,
    compactions: u64,
    /// Creator (lowercase) → the cursor their broken listing resumes at.
    listings: BTreeMap<String, String>,
    /// Never read: holding the handle holds the lock, dropping it releases it.
    _lock: File,
}

impl StateStore {
    /// Locks and loads the state at `path`, creating its directory; a missing file is an empty
    /// state. A journal left by an interrupted run is replayed and folded into the snapshot.
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        let dir = crate::fs::parent_dir(path);
        fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        let lock = acquire_lock(path)?;
        let (mut table, listings) = load_snapshot(path)?;
        let journal_path = sibling(path, JOURNAL_SUFFIX);
        let left_behind = replay_journal(&journal_path, &mut table)?;
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(io_error("open", &journal_path))?;
        let mut store = StateStore {
            path: path.to_owned(),
            table,
            journal,
            journal_len: 0,
            updates_since_compaction: 0,
            compactions: 0,
            listings,
            _lock: lock,
        };
        // Compacting now also cuts a torn last line, which the next append would otherwise extend
        // into a damaged line in the middle of the journal.
        if left_behind {
            store.compact()?;
        }
        Ok(store)
    }

    /// The snapshot file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record for `key`, if the file was ever recorded.
    pub fn get(&self, key: &str) -> Option<FileRecord> {
        self.table.get(key).map(table::StoredRecord::decode)
    }

    /// Whether the record for `record.key` is `record` already (then an upsert changes nothing).
    pub fn holds(&self, record: &FileRecord) -> bool {
        self.table
            .get(&record.key)
            .is_some_and(|stored| *stored == table::StoredRecord::new(record))
    }

    /// All records, in the order their files were first recorded.
    pub fn records(&self) -> impl Iterator<Item = FileRecord> + '_ {
        self.table.iter().map(table::StoredRecord::decode)
    }

    /// Each record's position and pin, for an index that names records without copying their
    /// keys (positions never change while the store is open).
    pub(crate) fn pins(&self) -> impl Iterator<Item = (usize, Option<&str>)> {
        self.table
            .iter()
            .enumerate()
            .map(|(position, stored)| (position, stored.pin()))
    }

    /// The record at a position [`StateStore::pins`] gave.
    pub(crate) fn record_at(&self, position: usize) -> Option<FileRecord> {
        self.table.at(position).map(table::StoredRecord::decode)
    }

    /// Inserts or replaces the record with `record.key`; stamps `updated_at` (and `created_at` on
    /// first insert, keeping the original otherwise) and appends it to the journal.
    pub fn upsert(&mut self, mut record: FileRecord) -> Result<(), StateError> {
        let now = now_rfc3339();
        record.created_at = match self.table.get(&record.key) {
            Some(existing) => existing.created_at(),
            None => now.clone(),
        };
        record.updated_at = now;
        self.append_to_journal(&record)?;
        self.table.insert(&record);
        self.updates_since_compaction += 1;
        if self.updates_since_compaction >= self.compact_after() {
            self.compact()?;
        }
        Ok(())
    }

    /// Changes an existing record (status, error, bytes…) through `change`, then saves it like
    /// [`StateStore::upsert`]. Changing the key inside `change` records a new file.
    pub fn update(
        &mut self,
        key: &str,
        change: impl FnOnce(&mut FileRecord),
    ) -> Result<(), StateError> {
        let mut record = self.get(key).ok_or_else(|| StateError::UnknownFile {
            path: self.path.clone(),
            key: key.to_owned(),
        })?;
        change(&mut record);
        self.upsert(record)
    }

    /// Where the listing of `username` resumes, when an earlier run's walk broke part-way.
    pub fn listing_cursor(&self, username: &str) -> Option<&str> {
        self.listings
            .get(&username.to_lowercase())
            .map(String::as_str)
    }

    /// Record where the listing of `username` resumes (`None`: it completed). Rare, so it is
    /// written at once with the snapshot rather than journalled.
    pub fn set_listing_cursor(
        &mut self,
        username: &str,
        cursor: Option<String>,
    ) -> Result<(), StateError> {
        let key = username.to_lowercase();
        let changed = match cursor {
            Some(cursor) => self.listings.insert(key, cursor.clone()) != Some(cursor),
            None => self.listings.remove(&key).is_some(),
        };
        if changed { self.compact() } else { Ok(()) }
    }

    /// Rewrites the snapshot now and empties the journal.
    pub fn flush(&mut self) -> Result<(), StateError> {
        self.compact()
    }

    /// How many times this store rewrote the snapshot; shows that updates stay cheap.
    pub fn compactions(&self) -> u64 {
        self.compactions
    }

    fn append_to_journal(&mut self, record: &FileRecord) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(record).map_err(|cause| StateError::Encode {
            path: self.path.clone(),
            cause,
        })?;
        line.push(b'\n');
        // An unbuffered write: once it returns, the line is in the kernel and survives a kill.
        if let Err(cause) = self.journal.write_all(&line) {
            // Best effort: a half-written line left here would sit before the next append and
            // make the journal unreadable; if the cut fails too, the error below still reports.
            let _ = self.journal.set_len(self.journal_len);
            return Err(io_error("append to", &sibling(&self.path, JOURNAL_SUFFIX))(
                cause,
            ));
        }
        self.journal_len += line.len() as u64;
        Ok(())
    }

    /// Updates the journal takes before the snapshot is rewritten: [`COMPACT_EVERY_UPDATES`], or a
    /// quarter of the records once there are more. A fixed count made a run quadratic: at 100,000
    /// files, 390 rewrites of a 100 MB snapshot (39 GB written for 100 MB of state). Growing with
    /// the table keeps the rewrites of a whole run to about four times the final snapshot, and
    /// the journal a rerun replays to a quarter of it.
    fn compact_after(&self) -> u64 {
        COMPACT_EVERY_UPDATES.max(self.table.len() as u64 / 4)
    }

    fn compact(&mut self) -> Result<(), StateError> {
        let snapshot = SnapshotOut {
            version: FORMAT_VERSION,
            files: &self.table,
            listings: &self.listings,
        };
        // Durable: the journal is truncated next, so the snapshot must be on disk first. Streamed
        // and compact: at 100,000 files a pretty snapshot in memory was a 100 MB buffer.
        crate::fs::write_atomic_with(&self.path, Durability::Durable, |out| {
            serde_json::to_writer(out, &snapshot).map_err(io::Error::from)
        })?;
        let journal_path = sibling(&self.path, JOURNAL_SUFFIX);
        self.journal
            .set_len(0)
            .and_then(|()| self.journal.sync_all())
            .map_err(io_error("truncate", &journal_path))?;
        self.journal_len = 0;
        self.updates_since_compaction = 0;
        self.compactions += 1;
        Ok(())
    }
}

impl Drop for StateStore {
    fn drop(&mut self) {
        if self.updates_since_compaction == 0 {
            return;
        }
        // Nothing is lost if this fails: the journal still holds every update for the next open.
        if let Err(error) = self.compact() {
            tracing::warn!("could not compact the state on exit: {error}");
        }
    }
}

/// Now, as an RFC 3339 UTC timestamp with second precision (`2024-02-29T23:59:59Z`).
pub fn now_rfc3339() -> String {
    // A clock before 1970 is a broken machine; stamping the epoch beats failing the run.
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    rfc3339_from_unix_secs(secs)
}

fn rfc3339_from_unix_secs(secs: u64) -> String {
    const SECS_PER_DAY: u64 = 86_400;
    let (year, month, day) = civil_from_days(secs / SECS_PER_DAY);
    let secs_of_day = secs % SECS_PER_DAY;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

/// The seconds of a timestamp in the form [`rfc3339_from_unix_secs`] writes, or `None` for any
/// other text. Out-of-range fields (a 30 February) give some number; callers that must get the
/// same text back compare it with [`rfc3339_from_unix_secs`] of the result.
fn unix_secs_from_rfc3339(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let shape = b"0000-00-00T00:00:00Z";
    let same_shape = bytes.len() == shape.len()
        && bytes.iter().zip(shape).all(|(&b, &s)| match s {
            b'0' => b.is_ascii_digit(),
            _ => b == s,
        });
    if !same_shape {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> u64 {
        bytes[range]
            .iter()
            .fold(0, |n, &digit| n * 10 + u64::from(digit - b'0'))
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    if year < 1970 || !(1..=12).contains(&month) || day == 0 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + number(11..13) * 3600 + number(14..16) * 60 + number(17..19))
}

/// Days since 1970-01-01 of a date from 1970 on: the inverse of [`civil_from_days`], by the same
/// author (<https://howardhinnant.github.io/date_algorithms.html#days_from_civil>).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_from_march = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).saturating_sub(719_468)
}

/// Year, month and day of a day count since 1970-01-01, by Howard Hinnant's `civil_from_days`
/// (<https://howardhinnant.github.io/date_algorithms.html#civil_from_days>), unsigned because
/// timestamps never precede the epoch here. Eras of 400 years (146,097 days) start on 1 March so
/// the leap day falls at the end of the computed year.
fn civil_from_days(days_since_epoch: u64) -> (u64, u64, u64) {
    let days = days_since_epoch + 719_468;
    let era = days / 146_097;
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn acquire_lock(path: &Path) -> Result<File, StateError> {
    let lock_path = sibling(path, LOCK_SUFFIX);
    let lock = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_error("open", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(StateError::Locked {
            path: path.to_owned(),
        }),
        Err(TryLockError::Error(cause)) => Err(io_error("lock", &lock_path)(cause)),
    }
}

/// Read the snapshot straight from the file into the table: at 100,000 files, the whole file in a
/// buffer beside the records it decodes to, and the records copied into the table, made the
/// peak memory of a run three times the state it holds.
fn load_snapshot(path: &Path) -> Result<(FileTable, BTreeMap<String, String>), StateError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(cause) if cause.kind() == io::ErrorKind::NotFound => {
            return Ok((FileTable::default(), BTreeMap::new()));
        }
        Err(cause) => return Err(io_error("read", path)(cause)),
    };
    let reader = io::BufReader::with_capacity(1024 * 1024, file);
    let unsupported = |found| StateError::UnsupportedVersion {
        path: path.to_owned(),
        found,
    };
    match serde_json::from_reader::<_, SnapshotIn>(reader) {
        Ok(snapshot) if snapshot.version == FORMAT_VERSION => {
            Ok((snapshot.files, snapshot.listings))
        }
        Ok(snapshot) => Err(unsupported(u64::from(snapshot.version))),
        Err(cause) => {
            // A later format may not decode as this one: say so rather than call it damaged.
            let bytes = read_if_exists(path)?.unwrap_or_default();
            match serde_json::from_slice::<FormatProbe>(&bytes) {
                Ok(probe) if probe.version != u64::from(FORMAT_VERSION) => {
                    Err(unsupported(probe.version))
                }
                _ => Err(StateError::CorruptSnapshot {
                    path: path.to_owned(),
                    cause,
                }),
            }
        }
    }
}

/// Applies the journal's complete lines to `table`, one line in memory at a time; returns
/// whether the journal held anything.
fn replay_journal(path: &Path, table: &mut FileTable) -> Result<bool, StateError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(cause) if cause.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(cause) => return Err(io_error("read", path)(cause)),
    };
    let mut reader = io::BufReader::with_capacity(1024 * 1024, file);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(io_error("read", path))?;
        if read == 0 {
            return Ok(number > 0);
        }
        number += 1;
        // Every append ends with a newline, so a last line without one is an interrupted append.
        if line.pop() != Some(b'\n') {
            tracing::warn!(
                "ignoring the incomplete last line of {}, left by an interrupted run",
                path.display()
            );
            return Ok(true);
        }
        let record: FileRecord =
            serde_json::from_slice(&line).map_err(|cause| StateError::CorruptJournal {
                path: path.to_owned(),
                line: number,
                cause,
            })?;
        table.insert(&record);
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(cause) if cause.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(io_error("read", path)(cause)),
    }
}

impl From<WriteError> for StateError {
    fn from(error: WriteError) -> Self {
        StateError::Io {
            operation: error.action,
            path: error.path,
            cause: error.source,
        }
    }
}

/// `state.json` + `.journal` → `state.json.journal` (not `state.journal`, as `with_extension` would).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// The directory holding `path`; `.` for a bare file name, whose parent is the empty path.
fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_owned();
    move |cause| StateError::Io {
        operation,
        path,
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_listings_resume_cursor_survives_a_reopen_until_it_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        {
            let mut store = StateStore::open(&path).unwrap();
            store.upsert(record("a")).unwrap();
            store
                .set_listing_cursor("Alice", Some("10|2".into()))
                .unwrap();
        }
        let mut store = StateStore::open(&path).unwrap();
        assert_eq!(store.listing_cursor("alice"), Some("10|2"));
        assert!(store.get("a").is_some(), "the records are kept beside it");
        store.set_listing_cursor("ALICE", None).unwrap();
        drop(store);
        assert_eq!(
            StateStore::open(&path).unwrap().listing_cursor("alice"),
            None
        );
    }

    fn record(key: &str) -> FileRecord {
        FileRecord::new(
            key,
            CatalogItem::new(4201, "Realistic Vision"),
            CatalogItem::new(130072, "V6.0 B1"),
            CatalogItem::new(99, "realisticVision_v60B1.safetensors"),
            "Realistic Vision/realisticVision_v60B1.safetensors",
        )
    }

    fn state_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join(".civitai-dl").join("state.json")
    }

    /// Leaves the store as a kill -9 would: journal as written, no compaction, lock released.
    fn kill(mut store: StateStore) {
        store.updates_since_compaction = 0;
    }

    fn read_snapshot(path: &Path) -> Vec<FileRecord> {
        #[derive(Deserialize)]
        struct Files {
            files: Vec<FileRecord>,
        }
        let snapshot: Files = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        snapshot.files
    }

    fn journal_len(path: &Path) -> u64 {
        fs::metadata(sibling(path, JOURNAL_SUFFIX)).unwrap().len()
    }

    #[test]
    fn round_trip_keeps_every_field_in_plan_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let mut first = record("130072:99");
        first.expected_size = Some(2_132_625_894);
        first.expected_sha256 = Some("ABCDEF".into());
        first.local_sha256 = Some("abcdef".into());
        first.status = RecordStatus::Quarantined;
        first.attempts = 3;
        first.last_error = Some("hash mismatch".into());
        first.bytes_on_disk = 2_132_625_894;
        let mut store = StateStore::open(&path).unwrap();
        store.upsert(first).unwrap();
        store.upsert(record("1:2")).unwrap();
        store.flush().unwrap();
        let saved: Vec<FileRecord> = store.records().collect();
        drop(store);

        let reopened = StateStore::open(&path).unwrap();
        let loaded: Vec<FileRecord> = reopened.records().collect();
        assert_eq!(loaded, saved);
        assert_eq!(loaded[0].key, "130072:99");
        assert_eq!(loaded[1].key, "1:2");
        assert_eq!(reopened.path(), path);
    }

    #[test]
    fn a_key_twice_in_a_snapshot_keeps_its_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let (first, mut last) = (record("a"), record("a"));
        last.attempts = 7;
        let snapshot = serde_json::json!({
            "version": FORMAT_VERSION,
            "files": [first, record("b"), last],
        });
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, serde_json::to_vec(&snapshot).unwrap()).unwrap();
        let store = StateStore::open(&path).unwrap();
        assert_eq!(store.records().count(), 2);
        assert_eq!(store.get("a").unwrap().attempts, 7);
    }

    #[test]
    fn snapshot_names_statuses_in_lowercase() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let mut store = StateStore::open(&path).unwrap();
        store.upsert(record("a")).unwrap();
        store
            .update("a", |file| file.status = RecordStatus::Downloading)
            .unwrap();
        store.flush().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"status\":\"downloading\""), "{text}");
        assert!(text.contains("\"version\":1"), "{text}");
    }

    #[test]
    fn upsert_keeps_created_at_and_update_changes_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(&state_path(&dir)).unwrap();
        store.upsert(record("a")).unwrap();
        let created = store.get("a").unwrap().created_at.clone();
        let mut replacement = record("a");
        replacement.created_at = "2000-01-01T00:00:00Z".into();
        store.upsert(replacement).unwrap();
        store
            .update("a", |file| {
                file.status = RecordStatus::Failed;
                file.attempts += 1;
                file.last_error = Some("timed out".into());
            })
            .unwrap();
        let stored = store.get("a").unwrap();
        assert_eq!(stored.created_at, created);
        assert_eq!(stored.status, RecordStatus::Failed);
        assert_eq!(stored.attempts, 1);
        assert_eq!(stored.last_error.as_deref(), Some("timed out"));
        assert_eq!(store.records().count(), 1);
    }

    #[test]
    fn update_of_unknown_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(&state_path(&dir)).unwrap();
        let error = store.update("nope", |_| {}).unwrap_err();
        assert!(matches!(error, StateError::UnknownFile { ref key, .. } if key == "nope"));
    }

    #[test]
    fn reopen_after_kill_replays_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let mut store = StateStore::open(&path).unwrap();
        store.upsert(record("a")).unwrap();
        store.upsert(record("b")).unwrap();
        store
            .update("a", |file| file.status = RecordStatus::Done)
            .unwrap();
        kill(store);
        assert!(!path.exists(), "no snapshot should have been written");

        let reopened = StateStore::open(&path).unwrap();
        assert_eq!(reopened.get("a").unwrap().status, RecordStatus::Done);
        assert_eq!(reopened.get("b").unwrap().status, RecordStatus::Pending);
        assert_eq!(reopened.compactions(), 1, "open folds the journal in");
        assert_eq!(journal_len(&path), 0);
    }

    #[test]
    fn torn_last_journal_line_is_ignored_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let mut store = StateStore::open(&path).unwrap();
        store.upsert(record("a")).unwrap();
        kill(store);
        let mut journal = OpenOptions::new()
            .append(true)
            .open(sibling(&path, JOURNAL_SUFFIX))
            .unwrap();
        journal
            .write_all(b"{\"key\":\"b\",\"model\":{\"id\":1,")
            .unwrap();
        drop(journal);

        let mut reopened = StateStore::open(&path).unwrap();
        assert!(reopened.get("a").is_some());
        assert!(reopened.get("b").is_none());
        reopened.upsert(record("c")).unwrap();
        kill(reopened);
        let again = StateStore::open(&path).unwrap();
        let keys: Vec<String> = again.records().map(|file| file.key).collect();
        assert_eq!(keys, ["a", "c"]);
    }

    #[test]
    fn damaged_complete_journal_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let good = serde_json::to_string(&record("a")).unwrap();
        fs::write(
            sibling(&path, JOURNAL_SUFFIX),
            format!("{good}\nnot json\n"),
        )
        .unwrap();
        let error = StateStore::open(&path).unwrap_err();
        assert!(matches!(error, StateError::CorruptJournal { line: 2, .. }));
        assert!(error.to_string().contains("move it away"), "{error}");
    }

    #[test]
    fn crash_before_rename_leaves_the_old_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let mut store = StateStore::open(&path).unwrap();
        store.upsert(record("a")).unwrap();
        store.flush().unwrap();
        kill(store);
        fs::write(
            crate::fs::with_suffix(&path, "tmp"),
            b"{\"version\":1,\"files\":[{\"ke",
        )
        .unwrap();

        let mut reopened = StateStore::open(&path).unwrap();
        assert_eq!(reopened.records().count(), 1);
        reopened.upsert(record("b")).unwrap();
        reopened.flush().unwrap();
        drop(reopened);
        assert_eq!(StateStore::open(&path).unwrap().records().count(), 2);
    }

    #[test]
    fn compaction_rewrites_the_snapshot_and_truncates_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let mut store = StateStore::open(&path).unwrap();
        for n in 1..COMPACT_EVERY_UPDATES {
            store.upsert(record(&n.to_string())).unwrap();
        }
        assert_eq!(store.compactions(), 0);
        assert!(journal_len(&path) > 0);
        assert!(!path.exists());

        store.upsert(record("last")).unwrap();
        assert_eq!(store.compactions(), 1);
        assert_eq!(journal_len(&path), 0);
        let snapshot = read_snapshot(&path);
        assert_eq!(snapshot.len() as u64, COMPACT_EVERY_UPDATES);
    }

    #[test]
    fn drop_compacts_pending_updates() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let mut store = StateStore::open(&path).unwrap();
        store.upsert(record("a")).unwrap();
        drop(store);
        assert_eq!(journal_len(&path), 0);
        let snapshot = read_snapshot(&path);
        assert_eq!(snapshot[0].key, "a");
    }

    #[test]
    fn second_open_fails_while_the_first_is_alive() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let first = StateStore::open(&path).unwrap();
        let error = StateStore::open(&path).unwrap_err();
        assert!(matches!(error, StateError::Locked { .. }));
        let message = error.to_string();
        assert!(
            message.contains("another civitai-dl run is using"),
            "{message}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
        drop(first);
        assert!(StateStore::open(&path).is_ok(), "drop releases the lock");
    }

    #[test]
    fn unreadable_snapshots_are_reported() {
        // (content, Some(declared version) when it is a future format, None when damaged)
        let cases = [
            (r#"{"version":2,"files":[]}"#, Some(2)),
            (r#"{"version":2,"files":"a future layout"}"#, Some(2)),
            (r#"{"files":[]}"#, None),
            (r#"{"version":1,"files":[{"key":"#, None),
        ];
        for (content, future_version) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = state_path(&dir);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            let error = StateStore::open(&path).unwrap_err();
            match (&error, future_version) {
                (StateError::UnsupportedVersion { found, .. }, Some(version)) => {
                    assert_eq!(*found, version)
                }
                (StateError::CorruptSnapshot { .. }, None) => {}
                _ => panic!("{content}: unexpected {error:?}"),
            }
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("move the file away") || message.contains("move it away"));
        }
    }

    // Issue 9.6: a rewrite every 256 updates made a run quadratic in its files: 390 rewrites of
    // a 100 MB snapshot at 100,000 files. Rewrites now come after a quarter of the records.
    #[test]
    fn snapshot_rewrites_grow_with_the_logarithm_of_the_files() {
        const FILES: u64 = 20_000;
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(&state_path(&dir)).unwrap();
        for n in 0..FILES {
            store.upsert(record(&n.to_string())).unwrap();
        }
        // 4 while small, then one each time the table grew by a quarter: 4 + log(20000/1024)/log(1.25).
        assert!(store.compactions() <= 18, "{}", store.compactions());
    }

    #[test]
    fn ten_thousand_upserts_stay_cheap() {
        const FILES: u64 = 10_000;
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let started = Instant::now();
        let mut store = StateStore::open(&path).unwrap();
        for n in 0..FILES {
            store.upsert(record(&n.to_string())).unwrap();
        }
        assert!(store.compactions() <= FILES / COMPACT_EVERY_UPDATES);
        drop(store);
        // Generous for a debug build on a busy 2-core machine; a rewrite per update takes minutes.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            StateStore::open(&path).unwrap().records().count() as u64,
            FILES
        );
    }

    #[test]
    fn rfc3339_known_values() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_234_567_890, "2009-02-13T23:31:30Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (4_107_456_000, "2100-02-28T00:00:00Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ];
        for (secs, expected) in cases {
            assert_eq!(rfc3339_from_unix_secs(secs), expected, "{secs}");
        }
    }

    #[test]
    fn rfc3339_parses_back_to_its_seconds() {
        for secs in [
            0,
            951_782_400,
            1_709_251_199,
            4_107_542_400,
            253_402_300_799,
        ] {
            let text = rfc3339_from_unix_secs(secs);
            assert_eq!(unix_secs_from_rfc3339(&text), Some(secs), "{text}");
        }
        for other in [
            "",
            "1969-12-31T23:59:59Z",
            "2024-13-01T00:00:00Z",
            "2024-02-29 23:59:59Z",
            "2024-02-29T23:59:59.5Z",
            "2024-02-29T23:59:59+00:00",
        ] {
            assert_eq!(unix_secs_from_rfc3339(other), None, "{other}");
        }
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-01-01T00:00:00Z".len(), "{now}");
        assert!(now.as_str() > "2026-01-01T00:00:00Z", "{now}");
    }
}

#[cfg(test)]
mod props;
