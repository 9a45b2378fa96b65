//! From roots to the model files under them: the first step of a scan and of `verify`.
//!
//! Libraries are shared between apps through symlinks (a ComfyUI `models/loras` linked into an
//! A1111 tree, a store linked into both), so links are followed and loops are cut (walkdir keeps
//! the chain of ancestors and refuses to enter one again); a file reached twice is listed once,
//! under its canonical path. What is not the user's model goes: hidden entries (`.git`, macOS's
//! `._*` files, our own `.civitai-dl/` with its quarantine and state), and every name without a
//! model extension, which also leaves out our `.part` and `.part.json` files. A folder that cannot
//! be read is reported and the walk goes on; the prune step must then leave what it held alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The file extensions of model weights, compared without case.
pub const MODEL_EXTENSIONS: [&str; 7] = ["safetensors", "sft", "ckpt", "pt", "pth", "bin", "gguf"];

/// Our own folder inside a library root: quarantine and state live there.
pub const OWN_FOLDER: &str = ".civitai-dl";

/// What decides whether a cached hash still holds: the file's size and modification time, and
/// on Unix the device and inode (a file replaced by another with the same size and time, as a
/// copy with preserved times does, has another inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Length in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Device number, where the platform has one.
    pub dev: Option<u64>,
    /// Inode number, where the platform has one.
    pub inode: Option<u64>,
}

impl Stamp {
    /// The stamp of a file's metadata (followed through symlinks).
    pub fn of(metadata: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Stamp {
                size: metadata.len(),
                mtime_ns: metadata
                    .mtime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(metadata.mtime_nsec()),
                dev: Some(metadata.dev()),
                inode: Some(metadata.ino()),
            }
        }
        #[cfg(not(unix))]
        {
            let mtime_ns = metadata
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            Stamp {
                size: metadata.len(),
                mtime_ns,
                dev: None,
                inode: None,
            }
        }
    }
}

/// One model file found under a root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Canonical path: the key of the hash cache.
    pub path: PathBuf,
    /// The root (canonical) the walk found it under first.
    pub root: PathBuf,
    /// Size, time and identity when it was found.
    pub stamp: Stamp,
}

/// Something the walk could not look at, or chose not to enter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkProblem {
    /// A folder or file that could not be read (permissions, a dangling symlink, a vanished
    /// mount); what is under it was not seen.
    Unreadable {
        /// Where.
        path: PathBuf,
        /// What the operating system said.
        message: String,
    },
    /// A symlink leading back into one of its own ancestors; not entered again.
    Loop {
        /// The link.
        path: PathBuf,
        /// The folder it leads back to.
        ancestor: PathBuf,
    },
}

impl WalkProblem {
    /// Whether this problem means some files went unseen (a loop hides nothing).
    pub fn hides_files(&self) -> bool {
        matches!(self, WalkProblem::Unreadable { .. })
    }
}

impl std::fmt::Display for WalkProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkProblem::Unreadable { path, message } => {
                write!(f, "cannot read {}: {message}", path.display())
            }
            WalkProblem::Loop { path, ancestor } => write!(
                f,
                "{} links back to {}; not followed again",
                path.display(),
                ancestor.display()
            ),
        }
    }
}

/// Everything a walk found.
#[derive(Debug, Default)]
pub struct Walked {
    /// Model files, sorted by canonical path, each once.
    pub files: Vec<Candidate>,
    /// `<stem>.civitai.info` sidecars seen on the way (for `verify`'s "missing" verdict).
    pub info_files: Vec<PathBuf>,
    /// The roots that could be read, canonical.
    pub roots: Vec<PathBuf>,
    /// What could not be read or was not entered, in walk order.
    pub problems: Vec<WalkProblem>,
    /// Whether a stop request cut the walk short.
    pub stopped: bool,
}

impl Walked {
    /// Whether `path` (canonical) may have been hidden by an unreadable folder or root, so that a
    /// missing row for it proves nothing.
    pub fn may_have_missed(&self, path: &Path) -> bool {
        self.stopped
            || self.problems.iter().any(|problem| match problem {
                WalkProblem::Unreadable { path: dir, .. } => path.starts_with(dir),
                WalkProblem::Loop { .. } => false,
            })
    }
}

/// Whether a file name has a model extension.
pub fn is_model_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| MODEL_EXTENSIONS.iter().any(|m| e.eq_ignore_ascii_case(m)))
}

/// The sidecar suffix Civitai Helper and our downloads write: `<stem>.civitai.info`.
pub const INFO_SUFFIX: &str = ".civitai.info";

/// Walk `roots` (folders, or single files, taken whatever their extension) to their model files.
/// `stop` is checked per entry.
pub fn walk(roots: &[PathBuf], stop: &AtomicBool) -> Walked {
    let mut found: BTreeMap<PathBuf, Candidate> = BTreeMap::new();
    let mut walked = Walked::default();
    for root in roots {
        let canonical_root = match std::fs::canonicalize(root) {
            Ok(path) => path,
            Err(error) => {
                walked.problems.push(WalkProblem::Unreadable {
                    path: root.clone(),
                    message: error.to_string(),
                });
                continue;
            }
        };
        if !walked.roots.contains(&canonical_root) {
            walked.roots.push(canonical_root.clone());
        }
        let entries = walkdir::WalkDir::new(&canonical_root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|entry| entry.depth() == 0 || !is_hidden(entry.file_name()));
        for entry in entries {
            if stop.load(Ordering::Relaxed) {
                walked.stopped = true;
                break;
            }
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    walked.problems.push(problem(&error, &canonical_root));
                    continue;
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let path = entry.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(INFO_SUFFIX))
            {
                walked.info_files.push(path.to_path_buf());
                continue;
            }
            // A file given as a root is taken whatever its name: the user named it.
            if entry.depth() > 0 && !is_model_file(path) {
                continue;
            }
            let seen = std::fs::canonicalize(path).and_then(|canonical| {
                let metadata = std::fs::metadata(&canonical)?;
                Ok((canonical, metadata))
            });
            match seen {
                Ok((canonical, metadata)) => {
                    found.entry(canonical.clone()).or_insert(Candidate {
                        path: canonical,
                        root: canonical_root.clone(),
                        stamp: Stamp::of(&metadata),
                    });
                }
                Err(error) => walked.problems.push(WalkProblem::Unreadable {
                    path: path.to_path_buf(),
                    message: error.to_string(),
                }),
            }
        }
        if walked.stopped {
            break;
        }
    }
    walked.files = found.into_values().collect();
    walked.info_files.sort();
    walked.info_files.dedup();
    walked
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with('.'))
}

fn problem(error: &walkdir::Error, root: &Path) -> WalkProblem {
    let path = error.path().unwrap_or(root).to_path_buf();
    match error.loop_ancestor() {
        Some(ancestor) => WalkProblem::Loop {
            path,
            ancestor: ancestor.to_path_buf(),
        },
        None => WalkProblem::Unreadable {
            path,
            message: error
                .io_error()
                .map_or_else(|| error.to_string(), |io| io.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    fn names(walked: &Walked, root: &Path) -> Vec<String> {
        let root = std::fs::canonicalize(root).unwrap();
        walked
            .files
            .iter()
            .map(|c| c.path.strip_prefix(&root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn model_files_only_sorted_and_without_hidden_or_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in [
            "b/z.GGUF",
            "a.safetensors",
            "a.safetensors.part",
            "a.safetensors.part.json",
            "a.civitai.info",
            "a.preview.png",
            "c/model.Pt",
            ".hidden/x.ckpt",
            "._x.safetensors",
            ".civitai-dl/quarantine/q.safetensors",
            "d/e.sft",
            "d/f.pth",
            "d/g.bin",
            "d/h.ckpt",
        ] {
            touch(&root.join(name));
        }
        let walked = walk(&[root.to_path_buf()], &AtomicBool::new(false));
        assert_eq!(
            names(&walked, root),
            [
                "a.safetensors",
                "b/z.GGUF",
                "c/model.Pt",
                "d/e.sft",
                "d/f.pth",
                "d/g.bin",
                "d/h.ckpt"
            ]
        );
        assert_eq!(walked.info_files.len(), 1);
        assert!(walked.problems.is_empty(), "{:?}", walked.problems);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_loop_ends_and_a_linked_file_is_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("loras/a.safetensors"));
        std::os::unix::fs::symlink(root, root.join("loras/back")).unwrap();
        std::os::unix::fs::symlink(
            root.join("loras/a.safetensors"),
            root.join("alias.safetensors"),
        )
        .unwrap();
        let walked = walk(&[root.to_path_buf()], &AtomicBool::new(false));
        assert_eq!(names(&walked, root), ["loras/a.safetensors"]);
        assert!(
            walked
                .problems
                .iter()
                .any(|p| matches!(p, WalkProblem::Loop { .. })),
            "{:?}",
            walked.problems
        );
        assert!(!walked.may_have_missed(&walked.files[0].path));
    }

    #[test]
    fn a_missing_root_is_reported_and_the_others_are_walked() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("ok/a.ckpt"));
        let missing = dir.path().join("gone");
        let walked = walk(
            &[missing.clone(), dir.path().join("ok")],
            &AtomicBool::new(false),
        );
        assert_eq!(walked.files.len(), 1);
        assert!(
            matches!(&walked.problems[..], [WalkProblem::Unreadable { path, .. }] if *path == missing)
        );
        assert!(walked.may_have_missed(&missing.join("x.ckpt")));
    }

    #[test]
    fn a_root_may_be_a_single_file_of_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("one.model");
        touch(&file);
        let walked = walk(std::slice::from_ref(&file), &AtomicBool::new(false));
        assert_eq!(walked.files.len(), 1);
    }
}
