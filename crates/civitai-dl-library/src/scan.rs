//! The scan driver: walk the roots, reuse every cached hash that still holds, hash the rest on a
//! bounded pool of blocking threads, commit each new hash as it lands, prune rows of files that
//! are gone, and report every step through a `ScanReporter`.
//!
//! The pool is plain threads, not async tasks: hashing is CPU and disk work that would starve an
//! async runtime, and the caller runs the whole scan on one blocking thread. By default it has
//! one reader per device (the files' `st_dev`), each reading its device's files one after
//! another: a library spread over several disks reads them all at once, while a spinning disk
//! never has two readers seeking against each other (slower than one). A number of readers
//! overall (`--hash-jobs N`, one shared queue) is the opt-in for SSDs, where parallel reads pay.
//! Only the calling thread touches the index (SQLite connections are not shared between threads),
//! so the workers send finished digests back over a channel and the caller commits them in order
//! of completion.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::digest::{DigestError, Digester, FileDigest};
use crate::index::{CachedHash, Index, IndexError};
use crate::walk::{Candidate, Stamp, WalkProblem, Walked, walk};

/// What the scan is asked to do.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// Folders (or single files) to scan.
    pub roots: Vec<PathBuf>,
    /// How many files are read at once.
    pub hash_jobs: HashJobs,
}

/// How many files are read at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashJobs {
    /// One reader per device, each reading its device's files in walk order.
    PerDevice,
    /// This many readers overall (at least 1) on one queue, whatever the devices.
    Total(usize),
}

/// Where a file's hashes came from in this scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashSource {
    /// The cache held a row that still matches the file.
    Cached,
    /// Read now.
    Hashed,
}

/// One file with its hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScannedFile {
    /// Canonical path.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Uppercase SHA-256.
    pub sha256: String,
    /// Uppercase AutoV3 (safetensors only).
    pub autov3: Option<String>,
    /// Cached or hashed.
    pub source: HashSource,
}

/// Something that went wrong with one path; the scan goes on.
#[derive(Debug)]
pub enum ScanProblem {
    /// The walk could not read a folder or file, or did not enter a symlink loop.
    Walk(WalkProblem),
    /// A file could not be read to its end.
    Unreadable(DigestError),
    /// The file changed while it was read; its hash is not recorded.
    Changed(PathBuf),
}

impl ScanProblem {
    /// Whether the problem means the scan did not cover everything (a loop does not).
    pub fn is_error(&self) -> bool {
        match self {
            ScanProblem::Walk(problem) => problem.hides_files(),
            ScanProblem::Unreadable(_) | ScanProblem::Changed(_) => true,
        }
    }

    /// The path concerned.
    pub fn path(&self) -> &Path {
        match self {
            ScanProblem::Walk(WalkProblem::Unreadable { path, .. })
            | ScanProblem::Walk(WalkProblem::Loop { path, .. })
            | ScanProblem::Changed(path) => path,
            ScanProblem::Unreadable(DigestError::Read { path, .. })
            | ScanProblem::Unreadable(DigestError::Stopped { path }) => path,
        }
    }
}

impl std::fmt::Display for ScanProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanProblem::Walk(problem) => problem.fmt(f),
            ScanProblem::Unreadable(error) => error.fmt(f),
            ScanProblem::Changed(path) => write!(
                f,
                "{} changed while it was read; its hash is not recorded (scan again once it is \
                 no longer being written)",
                path.display()
            ),
        }
    }
}

/// The counts at the end of a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScanSummary {
    /// Model files found.
    pub files: u64,
    /// Files read and hashed now.
    pub hashed: u64,
    /// Files whose cached hashes still held.
    pub reused: u64,
    /// Bytes read to hash them.
    pub bytes_hashed: u64,
    /// Paths that could not be read (folders or files), or changed while read.
    pub errors: u64,
    /// Rows of vanished files removed from the cache.
    pub pruned: u64,
    /// Whether a stop request ended the scan early (what was hashed is kept).
    pub stopped: bool,
    /// The roots scanned, canonical: where an identify step looks for unidentified rows.
    pub roots: Vec<PathBuf>,
}

/// The events of a scan. Every method has an empty default; `on_hash_started` and
/// `on_bytes_hashed` come from the hashing threads, the others from the caller's.
pub trait ScanReporter: Send + Sync {
    /// The walk is done: `files` found, `to_hash` of them (`bytes_to_hash` bytes) need reading.
    fn on_walked(&self, _files: u64, _to_hash: u64, _bytes_to_hash: u64) {}
    /// A file is being read.
    fn on_hash_started(&self, _path: &Path, _size: u64) {}
    /// Bytes of a file read and hashed.
    fn on_bytes_hashed(&self, _bytes: u64) {}
    /// A file's hashes are known (and, when hashed now, committed).
    fn on_file_done(&self, _file: &ScannedFile) {}
    /// A path had a problem; the scan goes on.
    fn on_problem(&self, _problem: &ScanProblem) {}
}

/// Scan `options.roots` into `index`. Stops between reads once `stop` is set, keeping every hash
/// committed so far. Only a failing index ends it with an error.
pub fn scan(
    index: &mut Index,
    options: &ScanOptions,
    reporter: &dyn ScanReporter,
    stop: &AtomicBool,
) -> Result<ScanSummary, IndexError> {
    let walked = walk(&options.roots, stop);
    let mut summary = ScanSummary {
        files: walked.files.len() as u64,
        stopped: walked.stopped,
        roots: walked.roots.clone(),
        ..ScanSummary::default()
    };
    for problem in &walked.problems {
        let problem = ScanProblem::Walk(problem.clone());
        summary.errors += u64::from(problem.is_error());
        reporter.on_problem(&problem);
    }
    let cached = cached_rows(index, &walked)?;
    summary.pruned = prune_vanished(index, &walked, &cached)?;
    let (reused, misses) = split_by_cache(&walked.files, &cached);
    reporter.on_walked(
        summary.files,
        misses.len() as u64,
        misses.iter().map(|c| c.stamp.size).sum(),
    );
    for file in reused {
        summary.reused += 1;
        reporter.on_file_done(&file);
    }
    let hashed_at = unix_now();
    hash_on_pool(
        misses,
        options.hash_jobs,
        reporter,
        stop,
        |candidate, result| {
            match result {
                Ok(digest) if still_the_same(&candidate, &digest) => {
                    index.store(&candidate.path, &candidate.stamp, &digest, hashed_at)?;
                    summary.hashed += 1;
                    summary.bytes_hashed += digest.bytes;
                    reporter.on_file_done(&ScannedFile {
                        path: candidate.path,
                        size: digest.bytes,
                        sha256: digest.sha256,
                        autov3: digest.autov3,
                        source: HashSource::Hashed,
                    });
                }
                Ok(_) => {
                    summary.errors += 1;
                    reporter.on_problem(&ScanProblem::Changed(candidate.path));
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

/// The cache rows under every root, by canonical path, one range query per root; then the rows
/// of files found through symlinks to folders outside the roots (a shared store), which are keyed
/// by where they really are, one by one.
fn cached_rows(index: &Index, walked: &Walked) -> Result<HashMap<PathBuf, CachedHash>, IndexError> {
    let mut rows = HashMap::new();
    for root in &walked.roots {
        rows.extend(index.rows_under(root)?);
    }
    for candidate in &walked.files {
        if !rows.contains_key(&candidate.path)
            && let Some(row) = index.get(&candidate.path)?
        {
            rows.insert(candidate.path.clone(), row);
        }
    }
    Ok(rows)
}

/// Remove rows of files under the roots that the walk did not find, unless an unreadable folder
/// (or a stop) may have hidden them: an unplugged disk must not cost the user their cache. Rows
/// outside the roots (files linked in from a shared store) are pruned by a scan of that store.
fn prune_vanished(
    index: &mut Index,
    walked: &Walked,
    cached: &HashMap<PathBuf, CachedHash>,
) -> Result<u64, IndexError> {
    let present: HashSet<&Path> = walked.files.iter().map(|c| c.path.as_path()).collect();
    let mut gone: Vec<PathBuf> = cached
        .keys()
        .filter(|path| !present.contains(path.as_path()) && !walked.may_have_missed(path))
        .cloned()
        .collect();
    gone.sort();
    Ok(index.prune(&gone)? as u64)
}

/// Files whose cached row still holds (as results), and the rest (to hash), both in walk order.
fn split_by_cache(
    files: &[Candidate],
    cached: &HashMap<PathBuf, CachedHash>,
) -> (Vec<ScannedFile>, Vec<Candidate>) {
    let mut reused = Vec::new();
    let mut misses = Vec::new();
    for candidate in files {
        match cached.get(&candidate.path) {
            Some(row) if row.is_valid_for(&candidate.stamp) => reused.push(ScannedFile {
                path: candidate.path.clone(),
                size: candidate.stamp.size,
                sha256: row.sha256.clone(),
                autov3: row.autov3.clone(),
                source: HashSource::Cached,
            }),
            _ => misses.push(candidate.clone()),
        }
    }
    (reused, misses)
}

/// Whether the file still has the size and time it had when the walk saw it, and all its bytes
/// were read: a file being written (a download in progress) must not be cached half-done.
fn still_the_same(candidate: &Candidate, digest: &FileDigest) -> bool {
    digest.bytes == candidate.stamp.size
        && std::fs::metadata(&candidate.path).is_ok_and(|m| Stamp::of(&m) == candidate.stamp)
}

/// The queues the readers take files from, each with its number of readers: per device, the
/// files of each device (in walk order, devices in order of their first file) with one reader
/// each; otherwise one queue of all files with `n` readers, never more than there are files.
/// Files whose device is unknown (no `st_dev` on the platform) share one queue.
fn queues(files: Vec<Candidate>, jobs: HashJobs) -> Vec<(Vec<Candidate>, usize)> {
    match jobs {
        HashJobs::Total(n) => {
            let readers = n.clamp(1, files.len().max(1));
            vec![(files, readers)]
        }
        HashJobs::PerDevice => {
            let mut by_device: Vec<(Option<u64>, Vec<Candidate>)> = Vec::new();
            for file in files {
                match by_device.iter_mut().find(|(dev, _)| *dev == file.stamp.dev) {
                    Some((_, queue)) => queue.push(file),
                    None => by_device.push((file.stamp.dev, vec![file])),
                }
            }
            by_device.into_iter().map(|(_, queue)| (queue, 1)).collect()
        }
    }
}

/// Hash `files` with `jobs` readers; `settle` runs on the calling thread for each result, in
/// order of completion. A `settle` error stops the workers and is returned.
pub fn hash_on_pool(
    files: Vec<Candidate>,
    jobs: HashJobs,
    reporter: &dyn ScanReporter,
    stop: &AtomicBool,
    mut settle: impl FnMut(Candidate, Result<FileDigest, DigestError>) -> Result<(), IndexError>,
) -> Result<(), IndexError> {
    let queues: Vec<(Mutex<std::vec::IntoIter<Candidate>>, usize)> = queues(files, jobs)
        .into_iter()
        .map(|(queue, readers)| (Mutex::new(queue.into_iter()), readers))
        .collect();
    let readers: usize = queues.iter().map(|(_, readers)| readers).sum();
    let abort = AtomicBool::new(false);
    let halted = || stop.load(Ordering::Relaxed) || abort.load(Ordering::Relaxed);
    std::thread::scope(|scope| {
        // Bounded, so finished digests wait for the committer instead of piling up.
        let (sender, receiver) = mpsc::sync_channel(readers.max(1));
        for (queue, readers) in &queues {
            for _ in 0..*readers {
                let sender = sender.clone();
                let halted = &halted;
                scope.spawn(move || {
                    let mut digester = Digester::new();
                    loop {
                        let next = queue
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .next();
                        let Some(candidate) = next else { break };
                        if halted() {
                            break;
                        }
                        reporter.on_hash_started(&candidate.path, candidate.stamp.size);
                        let result = digester.digest(&candidate.path, halted, &mut |bytes| {
                            reporter.on_bytes_hashed(bytes)
                        });
                        if sender.send((candidate, result)).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        drop(sender);
        for (candidate, result) in receiver {
            if let Err(error) = settle(candidate, result) {
                abort.store(true, Ordering::Relaxed);
                return Err(error);
            }
        }
        Ok(())
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what a scan reported.
    #[derive(Default)]
    struct Recorder {
        done: Mutex<Vec<ScannedFile>>,
        problems: Mutex<Vec<String>>,
    }

    impl ScanReporter for Recorder {
        fn on_file_done(&self, file: &ScannedFile) {
            self.done.lock().unwrap().push(file.clone());
        }
        fn on_problem(&self, problem: &ScanProblem) {
            self.problems.lock().unwrap().push(problem.to_string());
        }
    }

    fn library() -> (tempfile::TempDir, PathBuf, Index) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("models");
        for (name, len) in [("a.safetensors", 100), ("b/c.ckpt", 5000), ("d.gguf", 0)] {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![1u8; len]).unwrap();
        }
        let index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        (dir, root, index)
    }

    fn run(index: &mut Index, root: &Path, jobs: HashJobs) -> (ScanSummary, Recorder) {
        let recorder = Recorder::default();
        let options = ScanOptions {
            roots: vec![root.to_path_buf()],
            hash_jobs: jobs,
        };
        let summary = scan(index, &options, &recorder, &AtomicBool::new(false)).unwrap();
        (summary, recorder)
    }

    #[test]
    fn a_rescan_reuses_every_hash_and_a_touched_file_is_read_again() {
        let (_dir, root, mut index) = library();
        let (cold, recorder) = run(&mut index, &root, HashJobs::Total(2));
        assert_eq!((cold.files, cold.hashed, cold.reused), (3, 3, 0));
        assert_eq!(cold.bytes_hashed, 5100);
        let hashed = recorder.done.into_inner().unwrap();
        let (warm, recorder) = run(&mut index, &root, HashJobs::PerDevice);
        assert_eq!((warm.hashed, warm.reused, warm.errors), (0, 3, 0));
        let mut reused = recorder.done.into_inner().unwrap();
        for file in &mut reused {
            file.source = HashSource::Hashed;
        }
        let mut hashed = hashed;
        hashed.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(reused, hashed, "the cache gives back what was hashed");

        std::fs::write(root.join("b/c.ckpt"), vec![2u8; 5000]).unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(root.join("b/c.ckpt"))
            .unwrap();
        file.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        let (touched, _) = run(&mut index, &root, HashJobs::PerDevice);
        assert_eq!((touched.hashed, touched.reused), (1, 2));
    }

    #[test]
    fn rows_of_removed_files_are_pruned_and_a_missing_root_prunes_nothing() {
        let (dir, root, mut index) = library();
        run(&mut index, &root, HashJobs::PerDevice);
        std::fs::remove_file(root.join("d.gguf")).unwrap();
        let (after, _) = run(&mut index, &root, HashJobs::PerDevice);
        assert_eq!((after.files, after.pruned), (2, 1));
        let moved = dir.path().join("unplugged");
        std::fs::rename(&root, &moved).unwrap();
        let (gone, recorder) = run(&mut index, &root, HashJobs::PerDevice);
        assert_eq!((gone.files, gone.pruned, gone.errors), (0, 0, 1));
        assert_eq!(recorder.problems.into_inner().unwrap().len(), 1);
    }

    // Regression: a file reached through a symlink to a folder outside the root (a shared store)
    // is keyed by its canonical path, outside the root's rows, and was hashed again every scan.
    #[cfg(unix)]
    #[test]
    fn a_file_linked_in_from_outside_the_root_is_reused_too() {
        let (dir, root, mut index) = library();
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("shared.safetensors"), [4u8; 64]).unwrap();
        std::os::unix::fs::symlink(&store, root.join("linked")).unwrap();
        let (cold, _) = run(&mut index, &root, HashJobs::PerDevice);
        assert_eq!((cold.files, cold.hashed), (4, 4));
        let (warm, _) = run(&mut index, &root, HashJobs::PerDevice);
        assert_eq!((warm.hashed, warm.reused, warm.pruned), (0, 4, 0));
    }

    #[test]
    fn a_stopped_scan_hashes_nothing_more_and_says_so() {
        let (_dir, root, mut index) = library();
        let options = ScanOptions {
            roots: vec![root],
            hash_jobs: HashJobs::PerDevice,
        };
        let summary = scan(
            &mut index,
            &options,
            &Recorder::default(),
            &AtomicBool::new(true),
        )
        .unwrap();
        assert!(summary.stopped);
        assert_eq!(summary.hashed, 0);
    }

    fn on_device(name: &str, dev: Option<u64>) -> Candidate {
        Candidate {
            path: PathBuf::from(name),
            root: PathBuf::from("/"),
            stamp: Stamp {
                size: 1,
                mtime_ns: 0,
                dev,
                inode: None,
            },
        }
    }

    fn names(queues: Vec<(Vec<Candidate>, usize)>) -> Vec<(Vec<String>, usize)> {
        queues
            .into_iter()
            .map(|(queue, readers)| {
                let names = queue.iter().map(|c| c.path.display().to_string()).collect();
                (names, readers)
            })
            .collect()
    }

    #[test]
    fn each_device_gets_one_reader_taking_its_files_in_walk_order() {
        let files = vec![
            on_device("a", Some(1)),
            on_device("b", Some(2)),
            on_device("c", Some(1)),
            on_device("d", None),
            on_device("e", Some(2)),
            on_device("f", None),
        ];
        let owned = |q: &[&str], n| (q.iter().map(|s| s.to_string()).collect::<Vec<_>>(), n);
        assert_eq!(
            names(queues(files.clone(), HashJobs::PerDevice)),
            vec![
                owned(&["a", "c"], 1),
                owned(&["b", "e"], 1),
                owned(&["d", "f"], 1)
            ]
        );
        assert_eq!(
            names(queues(files.clone(), HashJobs::Total(4))),
            vec![owned(&["a", "b", "c", "d", "e", "f"], 4)],
            "--hash-jobs N: N readers overall, devices mixed"
        );
        assert_eq!(
            names(queues(files[..2].to_vec(), HashJobs::Total(8))),
            vec![owned(&["a", "b"], 2)],
            "never more readers than files"
        );
        assert_eq!(names(queues(files, HashJobs::Total(0)))[0].1, 1);
        assert!(queues(Vec::new(), HashJobs::PerDevice).is_empty());
    }
}
