//! The persistent hash cache: what a rescan reuses instead of reading a terabyte again.
//!
//! SQLite (through rusqlite, compiled in with its `bundled` feature so nothing has to be installed)
//! because it is what this field's tools already use for the same job (ComfyUI-Lora-Manager's
//! `model_cache.sqlite`, A1111's diskcache): a user can open it with the `sqlite3` command-line
//! tool, and every file's row is its own transaction, so a scan killed at any moment keeps every
//! hash it finished and the next one resumes there. WAL mode with `synchronous = NORMAL` makes
//! that commit cheap (no fsync per file); a committed row survives a crash of the process, and at
//! worst the last few rows are lost on a power cut, which only costs re-reading those files.
//!
//! A row is keyed by the file's canonical path and is valid while its size, modification time
//! (nanoseconds) and, on Unix, device and inode are what they were when it was hashed. The
//! identification columns (`match_status`, `model_id`, `version_id`, `file_id`) are for the
//! identify step; a new hash resets them to `pending`. `PRAGMA user_version` numbers the schema so
//! a later release can migrate it: schema 2 adds how a match was found (`matched_by`) and the
//! model's and version's names, so a warm rescan can show what each file is without asking
//! Civitai again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::digest::FileDigest;
use crate::walk::Stamp;

/// The schema this build writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

/// Milliseconds a second scan waits for another one holding the write lock.
const BUSY_TIMEOUT_MS: u64 = 5_000;

const SCHEMA: &str = "
CREATE TABLE files (
    path         BLOB PRIMARY KEY,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    dev          INTEGER,
    inode        INTEGER,
    sha256       TEXT NOT NULL,
    autov3       TEXT,
    hashed_at    INTEGER NOT NULL,
    match_status TEXT NOT NULL DEFAULT 'pending'
                 CHECK (match_status IN ('matched', 'unmatched', 'pending')),
    model_id     INTEGER,
    version_id   INTEGER,
    file_id      INTEGER
) WITHOUT ROWID;
";

/// Schema 1 to 2: the identification details beside the ids.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE files ADD COLUMN matched_by TEXT;
ALTER TABLE files ADD COLUMN model_name TEXT;
ALTER TABLE files ADD COLUMN version_name TEXT;
";

/// Where the identify step left a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatchStatus {
    /// Civitai knows the file; the ids are set.
    Matched,
    /// Civitai answered and does not know it.
    Unmatched,
    /// Not asked yet, or the answer was a failure (429, 5xx): ask again.
    #[default]
    Pending,
}

impl MatchStatus {
    fn parse(text: &str) -> MatchStatus {
        match text {
            "matched" => MatchStatus::Matched,
            "unmatched" => MatchStatus::Unmatched,
            _ => MatchStatus::Pending,
        }
    }

    /// The word stored and shown: `matched`, `unmatched` or `pending`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchStatus::Matched => "matched",
            MatchStatus::Unmatched => "unmatched",
            MatchStatus::Pending => "pending",
        }
    }
}

impl serde::Serialize for MatchStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Which hash found a match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchedBy {
    /// The SHA-256 of every byte: the file is as published.
    Sha256,
    /// Only the tensor bytes' AutoV3: a header editor (SwarmUI) rewrote the file's header.
    Autov3,
    /// A sidecar beside the file named the version and listed the file's own SHA-256.
    Sidecar,
}

impl MatchedBy {
    fn parse(text: &str) -> Option<MatchedBy> {
        match text {
            "sha256" => Some(MatchedBy::Sha256),
            "autov3" => Some(MatchedBy::Autov3),
            "sidecar" => Some(MatchedBy::Sidecar),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            MatchedBy::Sha256 => "sha256",
            MatchedBy::Autov3 => "autov3",
            MatchedBy::Sidecar => "sidecar",
        }
    }
}

/// What identification knows of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// Matched, unmatched or pending.
    pub status: MatchStatus,
    /// The hash that found the match.
    pub matched_by: Option<MatchedBy>,
    /// Civitai's model.
    pub model_id: Option<u64>,
    /// Civitai's version.
    pub version_id: Option<u64>,
    /// Civitai's file within the version.
    pub file_id: Option<u64>,
    /// The model's name, as the answer gave it.
    pub model_name: Option<String>,
    /// The version's name.
    pub version_name: Option<String>,
}

/// One row of the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedHash {
    /// The file as it was hashed.
    pub stamp: Stamp,
    /// Uppercase SHA-256 of every byte.
    pub sha256: String,
    /// Uppercase AutoV3, for safetensors files.
    pub autov3: Option<String>,
    /// When it was hashed, seconds since the Unix epoch.
    pub hashed_at: i64,
    /// What identification found.
    pub match_status: MatchStatus,
}

impl CachedHash {
    /// Whether the row still describes the file with `stamp`.
    pub fn is_valid_for(&self, stamp: &Stamp) -> bool {
        self.stamp == *stamp
    }
}

/// A file the identify step still has to ask Civitai about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unidentified {
    /// Canonical path.
    pub path: PathBuf,
    /// Uppercase SHA-256.
    pub sha256: String,
    /// Uppercase AutoV3, when the file has one.
    pub autov3: Option<String>,
}

/// What to learn about one file, for [`Index::record`]: its hash as asked (a row hashed again
/// since then is left alone) and what Civitai said.
#[derive(Clone, Debug)]
pub struct Learnt {
    /// Canonical path.
    pub path: PathBuf,
    /// The SHA-256 the identity belongs to.
    pub sha256: String,
    /// What identification found.
    pub identity: Identity,
}

/// The index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// It cannot be opened, or is not an index (corrupt, another kind of file, a folder).
    #[error(
        "cannot use the hash index {}: {source}; it is only a cache: delete it (the next scan \
         rebuilds it) or give another file with --index",
        path.display()
    )]
    Unusable {
        /// The index file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// Its folder cannot be created.
    #[error(
        "cannot create the folder of the hash index {}: {source}; give another file with --index",
        path.display()
    )]
    Folder {
        /// The index file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A newer civitai-dl wrote it.
    #[error(
        "the hash index {} has schema {found}, newer than this civitai-dl's {SCHEMA_VERSION}: \
         upgrade civitai-dl, or give another file with --index",
        path.display()
    )]
    Newer {
        /// The index file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
    /// A read or write failed while scanning (a full disk, a lock held too long).
    #[error("hash index {}: {source}", path.display())]
    Query {
        /// The index file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
}

/// The open hash cache.
pub struct Index {
    connection: Connection,
    path: PathBuf,
}

impl Index {
    /// `$XDG_CACHE_HOME/civitai-dl/index.sqlite`, else `~/.cache/civitai-dl/index.sqlite`;
    /// `None` when neither variable is set.
    pub fn default_path() -> Option<PathBuf> {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|home| PathBuf::from(home).join(".cache"))
            })?;
        Some(cache.join("civitai-dl").join("index.sqlite"))
    }

    /// Open (or create) the index at `path`, checking that it is one this build can use.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let unusable = |source| IndexError::Unusable {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| IndexError::Folder {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let connection = Connection::open(path).map_err(unusable)?;
        connection
            .busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(unusable)?;
        // The first statement that reads the file: a file that is not SQLite fails here.
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(unusable)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(unusable)?;
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(unusable)?;
        match version {
            0 => {
                connection
                    .execute_batch(&format!(
                        "BEGIN; {SCHEMA} {MIGRATE_1_TO_2} PRAGMA user_version = {SCHEMA_VERSION}; \
                         COMMIT;"
                    ))
                    .map_err(unusable)?;
            }
            1 => {
                connection
                    .execute_batch(&format!(
                        "BEGIN; {MIGRATE_1_TO_2} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                    ))
                    .map_err(unusable)?;
            }
            SCHEMA_VERSION => {
                // A file with our version number but not our table is damaged.
                connection
                    .prepare("SELECT path, size, mtime_ns, dev, inode, sha256, autov3, hashed_at, match_status, matched_by, model_name, version_name FROM files LIMIT 0")
                    .map_err(unusable)?;
            }
            found => {
                return Err(IndexError::Newer {
                    path: path.to_path_buf(),
                    found,
                });
            }
        }
        Ok(Index {
            connection,
            path: path.to_path_buf(),
        })
    }

    /// The file this index lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn query_error(&self) -> impl Fn(rusqlite::Error) -> IndexError + '_ {
        |source| failed(&self.path, source)
    }

    /// Every row for `root` itself and the files under it (canonical paths).
    pub fn rows_under(&self, root: &Path) -> Result<HashMap<PathBuf, CachedHash>, IndexError> {
        let (low, high) = subtree_range(root);
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT path, size, mtime_ns, dev, inode, sha256, autov3, hashed_at, match_status
                 FROM files WHERE path = ?1 OR (path >= ?2 AND path < ?3)",
            )
            .map_err(self.query_error())?;
        let rows = statement
            .query_map(params![key(root), low, high], |row| {
                Ok((path_of(row.get::<_, Vec<u8>>(0)?), cached_hash(row)?))
            })
            .map_err(self.query_error())?;
        rows.collect::<Result<_, _>>().map_err(self.query_error())
    }

    /// The row of one file, valid or not.
    pub fn get(&self, path: &Path) -> Result<Option<CachedHash>, IndexError> {
        self.connection
            .prepare_cached(
                "SELECT path, size, mtime_ns, dev, inode, sha256, autov3, hashed_at, match_status
                 FROM files WHERE path = ?1",
            )
            .and_then(|mut s| s.query_row([key(path)], cached_hash).optional())
            .map_err(self.query_error())
    }

    /// Record a fresh hash, committed at once. Identification survives only if the hash is the
    /// same as before (a touched but unchanged file).
    pub fn store(
        &self,
        path: &Path,
        stamp: &Stamp,
        digest: &FileDigest,
        hashed_at: i64,
    ) -> Result<(), IndexError> {
        let (dev, inode) = (stamp.dev.map(to_sql_u64), stamp.inode.map(to_sql_u64));
        self.connection
            .prepare_cached(
                "INSERT INTO files (path, size, mtime_ns, dev, inode, sha256, autov3, hashed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (path) DO UPDATE SET
                     size = excluded.size, mtime_ns = excluded.mtime_ns,
                     dev = excluded.dev, inode = excluded.inode, autov3 = excluded.autov3,
                     hashed_at = excluded.hashed_at,
                     match_status = CASE WHEN sha256 = excluded.sha256 THEN match_status
                                         ELSE 'pending' END,
                     model_id = CASE WHEN sha256 = excluded.sha256 THEN model_id END,
                     version_id = CASE WHEN sha256 = excluded.sha256 THEN version_id END,
                     file_id = CASE WHEN sha256 = excluded.sha256 THEN file_id END,
                     matched_by = CASE WHEN sha256 = excluded.sha256 THEN matched_by END,
                     model_name = CASE WHEN sha256 = excluded.sha256 THEN model_name END,
                     version_name = CASE WHEN sha256 = excluded.sha256 THEN version_name END,
                     sha256 = excluded.sha256",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key(path),
                    to_sql_u64(stamp.size),
                    stamp.mtime_ns,
                    dev,
                    inode,
                    digest.sha256,
                    digest.autov3,
                    hashed_at
                ])
            })
            .map(drop)
            .map_err(self.query_error())
    }

    /// Delete the rows of `paths` (files that are gone), in one transaction; how many went.
    pub fn prune(&mut self, paths: &[PathBuf]) -> Result<usize, IndexError> {
        let path = self.path.clone();
        let error = |source| failed(&path, source);
        let transaction = self.connection.transaction().map_err(error)?;
        let mut removed = 0;
        {
            let mut statement = transaction
                .prepare_cached("DELETE FROM files WHERE path = ?1")
                .map_err(error)?;
            for gone in paths {
                removed += statement.execute([key(gone)]).map_err(error)?;
            }
        }
        transaction.commit().map_err(error)?;
        Ok(removed)
    }

    /// Files under `roots` that identification has not settled (pending), and with
    /// `retry_unmatched` those Civitai did not know (unmatched), sorted by path: what the
    /// identify step hands to Civitai. Matched files are never asked again while unchanged.
    pub fn unidentified(
        &self,
        roots: &[PathBuf],
        retry_unmatched: bool,
    ) -> Result<Vec<Unidentified>, IndexError> {
        let mut found = Vec::new();
        for root in roots {
            for (path, row) in self.rows_under(root)? {
                let ask = match row.match_status {
                    MatchStatus::Pending => true,
                    MatchStatus::Unmatched => retry_unmatched,
                    MatchStatus::Matched => false,
                };
                if ask {
                    found.push(Unidentified {
                        path,
                        sha256: row.sha256,
                        autov3: row.autov3,
                    });
                }
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        found.dedup_by(|a, b| a.path == b.path);
        Ok(found)
    }

    /// What identification knows of the file at `path`, if it has a row.
    pub fn identity(&self, path: &Path) -> Result<Option<Identity>, IndexError> {
        self.connection
            .prepare_cached(
                "SELECT match_status, matched_by, model_id, version_id, file_id, model_name,
                        version_name
                 FROM files WHERE path = ?1",
            )
            .and_then(|mut s| {
                s.query_row([key(path)], |row| {
                    Ok(Identity {
                        status: MatchStatus::parse(&row.get::<_, String>(0)?),
                        matched_by: row
                            .get::<_, Option<String>>(1)?
                            .as_deref()
                            .and_then(MatchedBy::parse),
                        model_id: row.get::<_, Option<i64>>(2)?.map(from_sql_u64),
                        version_id: row.get::<_, Option<i64>>(3)?.map(from_sql_u64),
                        file_id: row.get::<_, Option<i64>>(4)?.map(from_sql_u64),
                        model_name: row.get(5)?,
                        version_name: row.get(6)?,
                    })
                })
                .optional()
            })
            .map_err(self.query_error())
    }

    /// Record what identification learnt, in one transaction (an interrupted identify keeps
    /// every batch it finished). A row whose hash changed since it was asked is left alone.
    pub fn record(&mut self, learnt: &[Learnt]) -> Result<(), IndexError> {
        let path = self.path.clone();
        let error = |source| failed(&path, source);
        let transaction = self.connection.transaction().map_err(error)?;
        {
            let mut statement = transaction
                .prepare_cached(
                    "UPDATE files SET match_status = ?3, matched_by = ?4, model_id = ?5,
                         version_id = ?6, file_id = ?7, model_name = ?8, version_name = ?9
                     WHERE path = ?1 AND sha256 = ?2",
                )
                .map_err(error)?;
            for item in learnt {
                let id = &item.identity;
                statement
                    .execute(params![
                        key(&item.path),
                        item.sha256,
                        id.status.as_str(),
                        id.matched_by.map(MatchedBy::as_str),
                        id.model_id.map(to_sql_u64),
                        id.version_id.map(to_sql_u64),
                        id.file_id.map(to_sql_u64),
                        id.model_name,
                        id.version_name
                    ])
                    .map_err(error)?;
            }
        }
        transaction.commit().map_err(error)
    }
}

/// A failed read or write; damage found only now (a page past the header) gets the same advice
/// as damage found at open.
fn failed(path: &Path, source: rusqlite::Error) -> IndexError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match source.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => IndexError::Unusable {
            path: path.to_path_buf(),
            source,
        },
        _ => IndexError::Query {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn cached_hash(row: &rusqlite::Row<'_>) -> rusqlite::Result<CachedHash> {
    Ok(CachedHash {
        stamp: Stamp {
            size: from_sql_u64(row.get(1)?),
            mtime_ns: row.get(2)?,
            dev: row.get::<_, Option<i64>>(3)?.map(from_sql_u64),
            inode: row.get::<_, Option<i64>>(4)?.map(from_sql_u64),
        },
        sha256: row.get(5)?,
        autov3: row.get(6)?,
        hashed_at: row.get(7)?,
        match_status: MatchStatus::parse(&row.get::<_, String>(8)?),
    })
}

/// SQLite integers are signed 64-bit; device and inode numbers use the whole u64 range, so they
/// are stored as their bit pattern.
fn to_sql_u64(value: u64) -> i64 {
    value as i64
}

fn from_sql_u64(value: i64) -> u64 {
    value as u64
}

/// The key of a path: its bytes (so any file name, UTF-8 or not, has a row).
fn key(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().into_owned().into_bytes()
    }
}

fn path_of(bytes: Vec<u8>) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        PathBuf::from(std::ffi::OsString::from_vec(bytes))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Keys strictly inside `root`: from `root/` up to, not including, `root0` (the byte after the
/// separator), so `/m/lora` does not take in `/m/loras`.
fn subtree_range(root: &Path) -> (Vec<u8>, Vec<u8>) {
    let separator = std::path::MAIN_SEPARATOR as u8;
    let mut low = key(root);
    if low.last() != Some(&separator) {
        low.push(separator);
    }
    let mut high = low.clone();
    if let Some(last) = high.last_mut() {
        *last = separator + 1;
    }
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(size: u64, mtime_ns: i64) -> Stamp {
        Stamp {
            size,
            mtime_ns,
            dev: Some(u64::MAX),
            inode: Some(7),
        }
    }

    fn digest(sha: &str) -> FileDigest {
        FileDigest {
            sha256: sha.into(),
            autov3: Some("ABCDEF012345".into()),
            bytes: 1,
        }
    }

    #[test]
    fn rows_survive_reopening_and_stay_inside_their_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache/index.sqlite");
        {
            let index = Index::open(&path).unwrap();
            index
                .store(
                    Path::new("/m/lora/a.safetensors"),
                    &stamp(1, 2),
                    &digest("AA"),
                    10,
                )
                .unwrap();
            index
                .store(
                    Path::new("/m/loras/b.safetensors"),
                    &stamp(1, 2),
                    &digest("BB"),
                    10,
                )
                .unwrap();
        }
        let index = Index::open(&path).unwrap();
        let rows = index.rows_under(Path::new("/m/lora")).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let row = &rows[Path::new("/m/lora/a.safetensors")];
        assert_eq!(row.stamp, stamp(1, 2), "u64::MAX device round-trips");
        assert!(row.is_valid_for(&stamp(1, 2)));
        assert!(!row.is_valid_for(&stamp(1, 3)));
        assert_eq!(index.rows_under(Path::new("/m")).unwrap().len(), 2);
        assert_eq!(
            index
                .rows_under(Path::new("/m/lora/a.safetensors"))
                .unwrap()
                .len(),
            1,
            "a single-file root finds its own row"
        );
    }

    #[test]
    fn a_new_hash_resets_identification_and_prune_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("i.sqlite")).unwrap();
        let file = Path::new("/m/a.ckpt");
        index.store(file, &stamp(1, 1), &digest("AA"), 1).unwrap();
        index
            .connection
            .execute(
                "UPDATE files SET match_status = 'matched', model_id = 5",
                [],
            )
            .unwrap();
        index.store(file, &stamp(1, 2), &digest("AA"), 2).unwrap();
        assert_eq!(
            index.get(file).unwrap().unwrap().match_status,
            MatchStatus::Matched
        );
        assert!(
            index
                .unidentified(&[PathBuf::from("/m")], false)
                .unwrap()
                .is_empty()
        );
        index.store(file, &stamp(2, 3), &digest("CC"), 3).unwrap();
        assert_eq!(
            index.get(file).unwrap().unwrap().match_status,
            MatchStatus::Pending
        );
        assert_eq!(
            index
                .unidentified(&[PathBuf::from("/m")], false)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(index.prune(&[file.to_path_buf()]).unwrap(), 1);
        assert!(index.get(file).unwrap().is_none());
    }

    #[test]
    fn a_file_that_is_not_an_index_names_itself_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let message = Index::open(&path).err().unwrap().to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("--index"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
        let folder = Index::open(dir.path()).err().unwrap();
        assert!(matches!(folder, IndexError::Unusable { .. }), "{folder}");
    }

    #[test]
    fn damage_found_after_opening_gets_the_same_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        {
            let index = Index::open(&path).unwrap();
            for i in 0..400 {
                let file = PathBuf::from(format!("/m/{i:04}-{}.safetensors", "x".repeat(60)));
                index
                    .store(&file, &stamp(1, 1), &digest(&"A".repeat(64)), 1)
                    .unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 16 * 1024, "the rows span several pages");
        bytes[8 * 1024..].fill(0x5A);
        std::fs::write(&path, bytes).unwrap();
        let error = Index::open(&path)
            .and_then(|index| index.rows_under(Path::new("/m")).map(drop))
            .unwrap_err();
        assert!(matches!(error, IndexError::Unusable { .. }), "{error}");
        assert!(error.to_string().contains("delete it"), "{error}");
    }

    #[test]
    fn a_schema_1_index_keeps_its_rows_and_learns_the_identity_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "{SCHEMA} INSERT INTO files (path, size, mtime_ns, sha256, hashed_at)
                 VALUES (CAST('/m/a.ckpt' AS BLOB), 1, 1, 'AA', 1); PRAGMA user_version = 1;"
            ))
            .unwrap();
        let mut index = Index::open(&path).unwrap();
        let file = Path::new("/m/a.ckpt");
        assert_eq!(index.identity(file).unwrap(), Some(Identity::default()));
        let found = Identity {
            status: MatchStatus::Matched,
            matched_by: Some(MatchedBy::Autov3),
            model_id: Some(u64::MAX),
            version_id: Some(2),
            file_id: Some(3),
            model_name: Some("M".into()),
            version_name: Some("v1".into()),
        };
        let learnt = |sha: &str| Learnt {
            path: file.to_path_buf(),
            sha256: sha.into(),
            identity: found.clone(),
        };
        index.record(&[learnt("BB")]).unwrap();
        assert_eq!(
            index.identity(file).unwrap(),
            Some(Identity::default()),
            "an answer about other bytes is not recorded"
        );
        index.record(&[learnt("AA")]).unwrap();
        drop(index);
        let index = Index::open(&path).unwrap();
        assert_eq!(index.identity(file).unwrap(), Some(found));
        assert!(
            index
                .unidentified(&[PathBuf::from("/m")], true)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unmatched_files_are_asked_again_only_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("i.sqlite")).unwrap();
        let file = Path::new("/m/a.ckpt");
        index.store(file, &stamp(1, 1), &digest("AA"), 1).unwrap();
        let unmatched = Identity {
            status: MatchStatus::Unmatched,
            ..Identity::default()
        };
        index
            .record(&[Learnt {
                path: file.to_path_buf(),
                sha256: "AA".into(),
                identity: unmatched,
            }])
            .unwrap();
        let roots = [PathBuf::from("/m")];
        assert!(index.unidentified(&roots, false).unwrap().is_empty());
        assert_eq!(index.unidentified(&roots, true).unwrap().len(), 1);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        assert!(matches!(
            Index::open(&path),
            Err(IndexError::Newer { found: 99, .. })
        ));
    }

    #[test]
    fn subtree_ranges_exclude_siblings_with_a_longer_name() {
        let (low, high) = subtree_range(Path::new("/m/lora"));
        assert_eq!(
            (low.as_slice(), high.as_slice()),
            (&b"/m/lora/"[..], &b"/m/lora0"[..])
        );
        let (low, high) = subtree_range(Path::new("/"));
        assert_eq!((low.as_slice(), high.as_slice()), (&b"/"[..], &b"0"[..]));
    }
}
