//! `verify`: does each file still hold what Civitai published? The expected hashes come from the
//! `<stem>.civitai.info` sidecar beside the file (the version JSON our downloads and Civitai
//! Helper write), else, for a file a scan identified, from Civitai itself through a
//! [`Published`] the caller provides (the library makes no requests of its own); the lockfile is
//! a later source. The sidecar goes first: it is what the user's tools trust, and it costs no
//! request.
//!
//! The verdict is a pure function of the file's digest and the published hashes, so every case is
//! a line in a table test. `ok-tensor` exists because SwarmUI (by default) and metadata editors
//! rewrite safetensors headers: the full SHA-256 then differs while AutoV3, computed over the
//! tensors only, still matches, and calling that file damaged would be wrong.
//!
//! Quarantine moves a mismatching file to `<root>/.civitai-dl/quarantine/<relative path>`, inside
//! the same root so the move is a rename on one file system; nothing is ever deleted, and a file
//! already in quarantine is never overwritten.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use civitai_dl_engine::sidecar::SidecarKind;
use serde::{Deserialize, Serialize};

use crate::digest::{AUTOV3_HEX_DIGITS, DigestError, FileDigest};
use crate::index::{Identity, Index, IndexError, MatchStatus};
use crate::scan::{HashJobs, HashSource, ScanProblem, ScanReporter, hash_on_pool};
use crate::walk::{Candidate, INFO_SUFFIX, OWN_FOLDER, walk};

/// The verdict on one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The full SHA-256 matches.
    Ok,
    /// The full SHA-256 differs (or is not published) but AutoV3 matches: the header was
    /// edited, the weights are intact.
    OkTensor,
    /// The bytes differ from what was published.
    Mismatch,
    /// The sidecar lists the file but with no hash to check it against.
    NoPublishedHash,
    /// No sidecar names this file: nothing to compare with.
    Unknown,
    /// The file is not there.
    Missing,
}

impl Verdict {
    /// Whether the file passes (`ok` or `ok-tensor`).
    pub fn passes(self) -> bool {
        matches!(self, Verdict::Ok | Verdict::OkTensor)
    }

    /// The word shown to people and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::OkTensor => "ok-tensor",
            Verdict::Mismatch => "mismatch",
            Verdict::NoPublishedHash => "no-published-hash",
            Verdict::Unknown => "unknown",
            Verdict::Missing => "missing",
        }
    }
}

/// The published hashes of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// `hashes.SHA256`.
    pub sha256: Option<String>,
    /// `hashes.AutoV3`.
    pub autov3: Option<String>,
}

/// Judge a file: `actual` is its digest (`None`: the file is missing), `expected` what its
/// sidecar lists for it (`None`: no sidecar lists it). Hex is compared without case.
pub fn judge(actual: Option<&FileDigest>, expected: Option<&Expected>) -> Verdict {
    let Some(actual) = actual else {
        return Verdict::Missing;
    };
    let Some(expected) = expected else {
        return Verdict::Unknown;
    };
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let tensors_match = match (&expected.autov3, &actual.autov3) {
        (Some(published), Some(ours)) => Some(same(
            truncate(published, AUTOV3_HEX_DIGITS),
            truncate(ours, AUTOV3_HEX_DIGITS),
        )),
        _ => None,
    };
    match (&expected.sha256, tensors_match) {
        (Some(published), _) if same(published, &actual.sha256) => Verdict::Ok,
        (_, Some(true)) => Verdict::OkTensor,
        (Some(_), _) | (None, Some(false)) => Verdict::Mismatch,
        (None, None) => Verdict::NoPublishedHash,
    }
}

fn truncate(hex: &str, digits: usize) -> &str {
    hex.get(..digits).unwrap_or(hex)
}

/// What a sidecar says about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SidecarFinding {
    /// There is no `<stem>.civitai.info`.
    Absent,
    /// The sidecar cannot be read or is not the JSON we expect.
    Unreadable(String),
    /// The sidecar exists but none of its `files[]` is this one (by name, then by size).
    NotListed,
    /// The sidecar's entry for the file.
    Listed(Expected),
}

impl SidecarFinding {
    /// The published hashes, when the sidecar lists the file.
    pub fn expected(&self) -> Option<&Expected> {
        match self {
            SidecarFinding::Listed(expected) => Some(expected),
            _ => None,
        }
    }
}

/// The `<stem>.civitai.info` beside `model`.
pub fn sidecar_path(model: &Path) -> PathBuf {
    SidecarKind::CivitaiInfo.path(model)
}

#[derive(Deserialize)]
struct VersionJson {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, rename = "modelId")]
    model_id: Option<u64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    model: Option<ModelJson>,
    #[serde(default)]
    files: Vec<FileJson>,
}

#[derive(Deserialize)]
struct ModelJson {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct FileJson {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "sizeKB")]
    size_kb: Option<f64>,
    #[serde(default)]
    hashes: serde_json::Map<String, serde_json::Value>,
}

/// What a version JSON says about one of its files: the ids and names that identify it, and
/// its published hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The version's `id`.
    pub version_id: Option<u64>,
    /// The version's `modelId`.
    pub model_id: Option<u64>,
    /// The file entry's `id`.
    pub file_id: Option<u64>,
    /// The version's `name`.
    pub version_name: Option<String>,
    /// The version's `model.name`.
    pub model_name: Option<String>,
    /// The entry's `hashes`.
    pub expected: Expected,
}

/// Read the sidecar of `model` (of `size` bytes) and find its entry.
pub fn read_sidecar(model: &Path, size: Option<u64>) -> SidecarFinding {
    let path = sidecar_path(model);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return SidecarFinding::Absent;
        }
        Err(error) => {
            return SidecarFinding::Unreadable(format!("cannot read {}: {error}", path.display()));
        }
    };
    let name = model.file_name().unwrap_or_default().to_string_lossy();
    find_entry(&text, &name, size).unwrap_or_else(|error| {
        SidecarFinding::Unreadable(format!(
            "{} is not a Civitai version JSON: {error}",
            path.display()
        ))
    })
}

/// The entry of `name` in a version JSON: the file of that name, else the only file whose
/// `sizeKB` is within a kilobyte of `size` (renamed files keep their size).
pub fn find_entry(
    version_json: &str,
    name: &str,
    size: Option<u64>,
) -> Result<SidecarFinding, serde_json::Error> {
    Ok(
        find_listing(version_json, name, size)?.map_or(SidecarFinding::NotListed, |listing| {
            SidecarFinding::Listed(listing.expected)
        }),
    )
}

/// The version's ids and the entry of `name`, found as [`find_entry`] finds it; `None` when no
/// entry is this file.
pub fn find_listing(
    version_json: &str,
    name: &str,
    size: Option<u64>,
) -> Result<Option<Listing>, serde_json::Error> {
    let version: VersionJson = serde_json::from_str(version_json)?;
    let by_name = version
        .files
        .iter()
        .find(|f| f.name.as_deref() == Some(name));
    let by_size = || {
        let size = size? as f64;
        let mut near = version.files.iter().filter(|f| {
            f.size_kb
                .is_some_and(|kb| (kb * 1024.0 - size).abs() < 1024.0)
        });
        let first = near.next()?;
        near.next().is_none().then_some(first)
    };
    let Some(entry) = by_name.or_else(by_size) else {
        return Ok(None);
    };
    let hash = |key: &str| {
        entry
            .hashes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Ok(Some(Listing {
        version_id: version.id,
        model_id: version.model_id,
        file_id: entry.id,
        version_name: version.name.clone(),
        model_name: version.model.as_ref().and_then(|m| m.name.clone()),
        expected: Expected {
            sha256: hash("SHA256"),
            autov3: hash("AutoV3"),
        },
    }))
}

/// A quarantine move that did not happen.
#[derive(Debug, thiserror::Error)]
#[error("cannot move {} to quarantine {}: {source}", from.display(), to.display())]
pub struct QuarantineError {
    /// The file.
    pub from: PathBuf,
    /// Where it was to go.
    pub to: PathBuf,
    /// What the operating system said.
    #[source]
    pub source: std::io::Error,
}

/// Where quarantine keeps `file` found under `root`: `<root>/.civitai-dl/quarantine/<relative>`,
/// with `.1`, `.2`, … added when that name is taken.
pub fn quarantine_path(root: &Path, file: &Path) -> PathBuf {
    let relative = file
        .strip_prefix(root)
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .map_or_else(
            || PathBuf::from(file.file_name().unwrap_or_default()),
            Path::to_path_buf,
        );
    let base = root.join(OWN_FOLDER).join("quarantine").join(relative);
    let mut candidate = base.clone();
    let mut n = 0u32;
    while candidate.symlink_metadata().is_ok() {
        n += 1;
        candidate = civitai_dl_engine::fs::with_suffix(&base, &n.to_string());
    }
    candidate
}

/// Move `file` (under `root`) into quarantine; where it went.
pub fn quarantine(root: &Path, file: &Path) -> Result<PathBuf, QuarantineError> {
    let to = quarantine_path(root, file);
    let error = |source| QuarantineError {
        from: file.to_path_buf(),
        to: to.clone(),
        source,
    };
    std::fs::create_dir_all(civitai_dl_engine::fs::parent_dir(&to)).map_err(error)?;
    // A hard link then an unlink would also refuse to overwrite, but a rename is one step: the
    // name is fresh (checked above) and the folder is ours.
    std::fs::rename(file, &to).map_err(error)?;
    Ok(to)
}

/// What `verify` is asked to do.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Files or folders.
    pub paths: Vec<PathBuf>,
    /// Trust a cached hash whose row still matches the file instead of reading it again.
    pub cached: bool,
    /// Move mismatching files to quarantine.
    pub quarantine: bool,
}

/// Where the published hashes of a file came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedFrom {
    /// Its `.civitai.info`.
    Sidecar,
    /// Civitai, for the version the index matched it to.
    Api,
}

/// The published hashes of files identified on Civitai, for files without a sidecar.
pub trait Published: Sync {
    /// The hashes Civitai publishes for `file_id` of `version_id`; `Err` says why they could
    /// not be had (the file is then judged `unknown`, with the reason as its note).
    fn expected(&self, version_id: u64, file_id: u64) -> Result<Option<Expected>, String>;
}

/// No published hashes beyond the sidecars (`--no-remote`).
pub struct SidecarsOnly;

impl Published for SidecarsOnly {
    fn expected(&self, _version_id: u64, _file_id: u64) -> Result<Option<Expected>, String> {
        Ok(None)
    }
}

/// The outcome for one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// The file (canonical when it exists, as given or as the sidecar names it when missing).
    pub path: PathBuf,
    /// The verdict.
    pub verdict: Verdict,
    /// Its SHA-256 now, when it exists.
    pub sha256: Option<String>,
    /// Its AutoV3 now.
    pub autov3: Option<String>,
    /// The published SHA-256.
    pub expected_sha256: Option<String>,
    /// The published AutoV3.
    pub expected_autov3: Option<String>,
    /// Where the published hashes came from.
    pub expected_from: Option<ExpectedFrom>,
    /// Whether the hash was read now or trusted from the cache.
    pub source: Option<HashSource>,
    /// Where quarantine moved it.
    pub quarantined_to: Option<PathBuf>,
    /// Why the sidecar could not be used, when it could not.
    pub note: Option<String>,
}

/// The events of `verify`: the scan's (walk, hashing progress, problems) and one per verdict.
pub trait VerifyReporter: ScanReporter {
    /// A file's verdict (after any quarantine move).
    fn on_verdict(&self, _checked: &Checked) {}
}

/// The counts at the end of `verify`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifySummary {
    /// Files judged.
    pub files: u64,
    /// Verdict counts.
    pub ok: u64,
    #[serde(rename = "ok-tensor")]
    pub ok_tensor: u64,
    pub mismatch: u64,
    #[serde(rename = "no-published-hash")]
    pub no_published_hash: u64,
    pub unknown: u64,
    pub missing: u64,
    /// Files moved to quarantine.
    pub quarantined: u64,
    /// Paths that could not be read, and quarantine moves that failed.
    pub errors: u64,
    /// Whether a stop request ended it early.
    pub stopped: bool,
}

impl VerifySummary {
    fn count(&mut self, verdict: Verdict) {
        self.files += 1;
        *match verdict {
            Verdict::Ok => &mut self.ok,
            Verdict::OkTensor => &mut self.ok_tensor,
            Verdict::Mismatch => &mut self.mismatch,
            Verdict::NoPublishedHash => &mut self.no_published_hash,
            Verdict::Unknown => &mut self.unknown,
            Verdict::Missing => &mut self.missing,
        } += 1;
    }

    /// Whether every file passed and nothing failed: the exit status.
    pub fn all_pass(&self) -> bool {
        self.files == self.ok + self.ok_tensor && self.errors == 0 && !self.stopped
    }
}

/// Verify `options.paths`: hash each model file (or take a valid cached hash with `cached`),
/// judge it against its sidecar, and quarantine mismatches when asked. Fresh hashes go into the
/// index, so a later scan reuses them.
pub fn verify(
    index: &Index,
    options: &VerifyOptions,
    published: &dyn Published,
    reporter: &dyn VerifyReporter,
    stop: &AtomicBool,
) -> Result<VerifySummary, IndexError> {
    let mut summary = VerifySummary::default();
    let mut to_hash: Vec<(Candidate, PathBuf)> = Vec::new();
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for given in &options.paths {
        if given.symlink_metadata().is_err() {
            missing.push(given.clone());
            continue;
        }
        let walked = walk(std::slice::from_ref(given), stop);
        for problem in &walked.problems {
            let problem = ScanProblem::Walk(problem.clone());
            summary.errors += u64::from(problem.is_error());
            reporter.on_problem(&problem);
        }
        summary.stopped |= walked.stopped;
        let Some(root) = walked.roots.first().cloned() else {
            continue;
        };
        // Quarantine stays inside the folder given (the folder of a file given alone).
        let root = if root.is_dir() {
            root
        } else {
            civitai_dl_engine::fs::parent_dir(&root).to_path_buf()
        };
        missing.extend(
            walked
                .info_files
                .iter()
                .filter_map(|info| named_model(info))
                .filter(|model| !model.exists()),
        );
        // A file under two of the paths given is judged once.
        to_hash.extend(
            walked
                .files
                .into_iter()
                .filter(|c| seen.insert(c.path.clone()))
                .map(|c| (c, root.clone())),
        );
    }
    for path in missing {
        let checked = checked_file(path, Verdict::Missing, None, None);
        summary.count(checked.verdict);
        reporter.on_verdict(&checked);
    }
    let mut roots = std::collections::HashMap::new();
    let mut fresh = Vec::new();
    for (candidate, root) in to_hash {
        let cached = if options.cached {
            index
                .get(&candidate.path)?
                .filter(|row| row.is_valid_for(&candidate.stamp))
        } else {
            None
        };
        match cached {
            Some(row) => {
                let digest = FileDigest {
                    sha256: row.sha256,
                    autov3: row.autov3,
                    bytes: candidate.stamp.size,
                };
                let known = index.identity(&candidate.path)?;
                let checked = conclude(
                    &candidate.path,
                    &root,
                    digest,
                    HashSource::Cached,
                    (known.as_ref(), published),
                    options,
                    &mut summary,
                );
                reporter.on_verdict(&checked);
            }
            None => {
                roots.insert(candidate.path.clone(), root);
                fresh.push(candidate);
            }
        }
    }
    reporter.on_walked(
        summary.files + fresh.len() as u64,
        fresh.len() as u64,
        fresh.iter().map(|c| c.stamp.size).sum(),
    );
    let hashed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    hash_on_pool(
        fresh,
        HashJobs::Total(1),
        reporter,
        stop,
        |candidate, result| {
            match result {
                Ok(digest) => {
                    // Before the store: a changed hash resets the identity, and the version the
                    // file was matched to is exactly what a damaged file must be judged against.
                    let known = index.identity(&candidate.path)?;
                    index.store(&candidate.path, &candidate.stamp, &digest, hashed_at)?;
                    let root = roots.remove(&candidate.path).unwrap_or_default();
                    let checked = conclude(
                        &candidate.path,
                        &root,
                        digest,
                        HashSource::Hashed,
                        (known.as_ref(), published),
                        options,
                        &mut summary,
                    );
                    reporter.on_verdict(&checked);
                }
                Err(DigestError::Stopped { .. }) => {}
                Err(error) => {
                    summary.errors += 1;
                    reporter.on_problem(&ScanProblem::Unreadable(error));
                }
            }
            Ok(())
        },
    )?;
    summary.stopped |= stop.load(Ordering::Relaxed);
    Ok(summary)
}

fn checked_file(
    path: PathBuf,
    verdict: Verdict,
    digest: Option<&FileDigest>,
    source: Option<HashSource>,
) -> Checked {
    Checked {
        path,
        verdict,
        sha256: digest.map(|d| d.sha256.clone()),
        autov3: digest.and_then(|d| d.autov3.clone()),
        expected_sha256: None,
        expected_autov3: None,
        expected_from: None,
        source,
        quarantined_to: None,
        note: None,
    }
}

/// Judge one file against its sidecar and act on a mismatch.
fn conclude(
    path: &Path,
    root: &Path,
    digest: FileDigest,
    source: HashSource,
    (known, published): (Option<&Identity>, &dyn Published),
    options: &VerifyOptions,
    summary: &mut VerifySummary,
) -> Checked {
    let finding = read_sidecar(path, Some(digest.bytes));
    let mut note = match &finding {
        SidecarFinding::Unreadable(note) => Some(note.clone()),
        _ => None,
    };
    let mut from = finding.expected().map(|_| ExpectedFrom::Sidecar);
    let mut expected = finding.expected().cloned();
    if expected.is_none()
        && let Some(Identity {
            status: MatchStatus::Matched,
            version_id: Some(version_id),
            file_id: Some(file_id),
            ..
        }) = known
    {
        match published.expected(*version_id, *file_id) {
            Ok(Some(found)) => {
                expected = Some(found);
                from = Some(ExpectedFrom::Api);
            }
            Ok(None) => {}
            Err(why) => note = Some(why),
        }
    }
    let verdict = judge(Some(&digest), expected.as_ref());
    let mut checked = checked_file(path.to_path_buf(), verdict, Some(&digest), Some(source));
    if let Some(expected) = &expected {
        checked.expected_sha256 = expected.sha256.clone();
        checked.expected_autov3 = expected.autov3.clone();
    }
    checked.expected_from = from;
    checked.note = note;
    if verdict == Verdict::Mismatch && options.quarantine {
        match quarantine(root, path) {
            Ok(to) => {
                summary.quarantined += 1;
                checked.quarantined_to = Some(to);
            }
            Err(error) => {
                summary.errors += 1;
                checked.note = Some(error.to_string());
            }
        }
    }
    summary.count(verdict);
    checked
}

/// The model file a sidecar belongs to: the `files[]` entry whose stem is the sidecar's.
fn named_model(info: &Path) -> Option<PathBuf> {
    let name = info.file_name()?.to_str()?;
    let stem = name.strip_suffix(INFO_SUFFIX)?;
    let text = std::fs::read_to_string(info).ok()?;
    let version: VersionJson = serde_json::from_str(&text).ok()?;
    version
        .files
        .iter()
        .filter_map(|f| f.name.as_deref())
        .find(|n| Path::new(n).file_stem().and_then(|s| s.to_str()) == Some(stem))
        .map(|n| info.with_file_name(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(sha: &str, autov3: Option<&str>) -> FileDigest {
        FileDigest {
            sha256: sha.into(),
            autov3: autov3.map(str::to_owned),
            bytes: 1,
        }
    }

    fn expected(sha: Option<&str>, autov3: Option<&str>) -> Expected {
        Expected {
            sha256: sha.map(str::to_owned),
            autov3: autov3.map(str::to_owned),
        }
    }

    #[test]
    fn verdicts() {
        let file = digest("AA11", Some("BBBBBBBBBBBB"));
        let plain = digest("AA11", None);
        let cases = [
            (None, Some(expected(Some("AA11"), None)), Verdict::Missing),
            (Some(&file), None, Verdict::Unknown),
            (Some(&file), Some(expected(Some("aa11"), None)), Verdict::Ok),
            (
                Some(&file),
                Some(expected(Some("AA11"), Some("CCCCCCCCCCCC"))),
                Verdict::Ok,
            ),
            (
                Some(&file),
                Some(expected(Some("FF"), Some("bbbbbbbbbbbb"))),
                Verdict::OkTensor,
            ),
            (
                Some(&file),
                Some(expected(None, Some("BBBBBBBBBBBB"))),
                Verdict::OkTensor,
            ),
            (
                Some(&file),
                Some(expected(Some("FF"), Some("CCCCCCCCCCCC"))),
                Verdict::Mismatch,
            ),
            (
                Some(&file),
                Some(expected(Some("FF"), None)),
                Verdict::Mismatch,
            ),
            (
                Some(&file),
                Some(expected(None, Some("CCCCCCCCCCCC"))),
                Verdict::Mismatch,
            ),
            (
                Some(&plain),
                Some(expected(Some("FF"), Some("BBBBBBBBBBBB"))),
                Verdict::Mismatch,
            ),
            (
                Some(&plain),
                Some(expected(None, Some("BBBBBBBBBBBB"))),
                Verdict::NoPublishedHash,
            ),
            (
                Some(&file),
                Some(expected(None, None)),
                Verdict::NoPublishedHash,
            ),
        ];
        for (actual, expected, verdict) in cases {
            assert_eq!(
                judge(actual, expected.as_ref()),
                verdict,
                "{actual:?} vs {expected:?}"
            );
        }
    }

    #[test]
    fn a_sidecar_entry_is_found_by_name_then_by_unique_size() {
        let json = r#"{"id": 1, "files": [
            {"name": "a.safetensors", "sizeKB": 2.0, "hashes": {"SHA256": "AA", "AutoV3": "BB"}},
            {"name": "b.safetensors", "sizeKB": 4.0, "hashes": {}},
            {"name": "c.safetensors", "sizeKB": 4.0, "hashes": {"SHA256": "CC"}}
        ]}"#;
        let listed = |sha: Option<&str>, autov3: Option<&str>| {
            Ok(SidecarFinding::Listed(expected(sha, autov3)))
        };
        let find = |name, size| find_entry(json, name, size).map_err(|e| e.to_string());
        assert_eq!(find("a.safetensors", None), listed(Some("AA"), Some("BB")));
        assert_eq!(
            find("renamed.safetensors", Some(2048)),
            listed(Some("AA"), Some("BB"))
        );
        assert_eq!(find("b.safetensors", None), listed(None, None));
        assert_eq!(
            find("renamed.safetensors", Some(4096)),
            Ok(SidecarFinding::NotListed),
            "two files of that size: no guess"
        );
        assert_eq!(
            find_entry("{}", "x", None).unwrap(),
            SidecarFinding::NotListed
        );
        assert!(find_entry("[1", "x", None).is_err());
    }

    #[test]
    fn quarantine_keeps_the_relative_path_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for round in 0..2 {
            let file = root.join("loras/x.safetensors");
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, [round]).unwrap();
            let to = quarantine(root, &file).unwrap();
            assert!(!file.exists());
            assert_eq!(std::fs::read(&to).unwrap(), [round]);
        }
        let kept = root.join(".civitai-dl/quarantine/loras");
        assert_eq!(std::fs::read(kept.join("x.safetensors")).unwrap(), [0]);
        assert_eq!(std::fs::read(kept.join("x.safetensors.1")).unwrap(), [1]);
    }

    #[test]
    fn the_sidecar_sits_beside_the_file_under_its_stem() {
        assert_eq!(
            sidecar_path(Path::new("/m/x.v2.safetensors")),
            PathBuf::from("/m/x.v2.civitai.info")
        );
    }

    /// Records the verdicts.
    #[derive(Default)]
    struct Verdicts(std::sync::Mutex<Vec<Checked>>);

    impl ScanReporter for Verdicts {}

    impl VerifyReporter for Verdicts {
        fn on_verdict(&self, checked: &Checked) {
            self.0.lock().unwrap().push(checked.clone());
        }
    }

    fn info_for(name: &str, bytes: &[u8], autov3: Option<String>) -> String {
        let sha = crate::digest::tests::sha256_upper(bytes);
        serde_json::json!({"files": [{"name": name, "sizeKB": bytes.len() as f64 / 1024.0,
            "hashes": {"SHA256": sha, "AutoV3": autov3}}]})
        .to_string()
    }

    #[test]
    fn verify_judges_every_file_and_quarantines_the_mismatch() {
        use crate::digest::tests::{safetensors, sha256_upper};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("models");
        std::fs::create_dir_all(&root).unwrap();
        let tensors = vec![3u8; 1000];
        let original = safetensors("{}", &tensors);
        let autov3 = sha256_upper(&tensors)[..AUTOV3_HEX_DIGITS].to_string();
        let write = |name: &str, bytes: &[u8], info: Option<String>| {
            std::fs::write(root.join(name), bytes).unwrap();
            if let Some(info) = info {
                std::fs::write(sidecar_path(&root.join(name)), info).unwrap();
            }
        };
        write(
            "ok.safetensors",
            &original,
            Some(info_for("ok.safetensors", &original, None)),
        );
        let edited = safetensors(r#"{"__metadata__":{}}"#, &tensors);
        write(
            "edited.safetensors",
            &edited,
            Some(info_for("edited.safetensors", &original, Some(autov3))),
        );
        write(
            "bad.ckpt",
            b"damaged",
            Some(info_for("bad.ckpt", b"original", None)),
        );
        write("mine.ckpt", b"no sidecar", None);
        std::fs::write(
            root.join("gone.civitai.info"),
            info_for("gone.safetensors", b"x", None),
        )
        .unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let options = VerifyOptions {
            paths: vec![
                root.clone(),
                dir.path().join("nothing-here.pt"),
                root.join("ok.safetensors"),
            ],
            cached: false,
            quarantine: true,
        };
        let reporter = Verdicts::default();
        let summary = verify(
            &index,
            &options,
            &SidecarsOnly,
            &reporter,
            &AtomicBool::new(false),
        )
        .unwrap();
        let verdicts: std::collections::BTreeMap<String, Verdict> = reporter
            .0
            .into_inner()
            .unwrap()
            .into_iter()
            .map(|c| {
                (
                    c.path.file_name().unwrap().to_string_lossy().into_owned(),
                    c.verdict,
                )
            })
            .collect();
        assert_eq!(
            verdicts.into_iter().collect::<Vec<_>>(),
            [
                ("bad.ckpt".to_string(), Verdict::Mismatch),
                ("edited.safetensors".into(), Verdict::OkTensor),
                ("gone.safetensors".into(), Verdict::Missing),
                ("mine.ckpt".into(), Verdict::Unknown),
                ("nothing-here.pt".into(), Verdict::Missing),
                ("ok.safetensors".into(), Verdict::Ok),
            ]
        );
        assert_eq!(
            (summary.files, summary.quarantined, summary.errors),
            (6, 1, 0)
        );
        assert!(!summary.all_pass());
        assert!(!root.join("bad.ckpt").exists());
        assert!(root.join(".civitai-dl/quarantine/bad.ckpt").exists());
        assert!(
            index
                .get(&std::fs::canonicalize(root.join("ok.safetensors")).unwrap())
                .unwrap()
                .is_some()
        );
    }
}
