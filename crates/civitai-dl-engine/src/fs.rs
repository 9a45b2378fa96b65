//! The file-system steps every writer shares, so each place that replaces a file says how durable
//! the replacement must be instead of inheriting whatever a local copy happened to do.
//!
//! An atomic write is: temp file beside the target, rename over it. [`Durability::Durable`] adds
//! an fsync of the data before the rename and of the directory after it, so the new content
//! survives a power cut; [`Durability::Replace`] only guarantees that a reader sees the old
//! content or the new one, never half of either (for records rewritten every second, where an
//! fsync each time would compete with the transfer it records).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How far a replacement must survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Data and directory entry on disk before the call returns.
    Durable,
    /// Atomic for readers; may be lost (leaving the previous content) on a power cut.
    Replace,
}

/// A write that failed, with the step and the path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct WriteError {
    /// The step that failed, e.g. "write" or "rename into".
    pub action: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

/// Replace `path` with `bytes` atomically (creating its folder), as durable as asked.
pub fn write_atomic_blocking(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), WriteError> {
    write_atomic_with(path, durability, |out| out.write_all(bytes))
}

/// Replace `path` atomically with what `write` puts out, streamed through a buffer: a snapshot of
/// 100,000 records is never held in memory whole.
pub fn write_atomic_with(
    path: &Path,
    durability: Durability,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), WriteError> {
    let fail = |action, at: &Path| {
        let at = at.to_path_buf();
        move |source| WriteError {
            action,
            path: at,
            source,
        }
    };
    let parent = parent_dir(path);
    std::fs::create_dir_all(parent).map_err(fail("create folder", parent))?;
    let tmp = with_suffix(path, "tmp");
    let file = File::create(&tmp).map_err(fail("create", &tmp))?;
    let mut out = io::BufWriter::with_capacity(1024 * 1024, file);
    write(&mut out).map_err(fail("write", &tmp))?;
    let file = out
        .into_inner()
        .map_err(|e| fail("write", &tmp)(e.into_error()))?;
    if durability == Durability::Durable {
        file.sync_all().map_err(fail("sync", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(fail("rename into", path))?;
    if durability == Durability::Durable {
        sync_dir(parent).map_err(fail("sync folder", parent))?;
    }
    Ok(())
}

/// [`write_atomic_blocking`] on the blocking pool.
pub async fn write_atomic(
    path: &Path,
    bytes: Vec<u8>,
    durability: Durability,
) -> Result<(), WriteError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_atomic_blocking(&owned, &bytes, durability))
        .await
        .map_err(|e| WriteError {
            action: "write",
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })?
}

/// Make a rename in `dir` durable: on unix the new directory entry is only on disk once the
/// directory is.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file; its renames are made durable by the file system.
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// The folder a path is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// `dir/name.ext` → `dir/name.ext.<suffix>`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// The length of a regular file, `None` when there is none.
pub async fn file_len(path: &Path) -> Option<u64> {
    tokio::fs::metadata(path)
        .await
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_parents() {
        assert_eq!(
            with_suffix(Path::new("/m/a.safetensors"), "part"),
            PathBuf::from("/m/a.safetensors.part")
        );
        assert_eq!(parent_dir(Path::new("state.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/o/state.json")), Path::new("/o"));
    }

    #[tokio::test]
    async fn an_atomic_write_creates_the_folder_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("x.civitai.info");
        for (content, durability) in [
            (&b"{}"[..], Durability::Durable),
            (b"[1]", Durability::Replace),
        ] {
            write_atomic(&path, content.to_vec(), durability)
                .await
                .unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), content);
            assert!(!with_suffix(&path, "tmp").exists());
        }
    }

    #[test]
    fn a_failed_write_names_the_step_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let error =
            write_atomic_blocking(&blocker.join("x"), b"", Durability::Durable).unwrap_err();
        assert_eq!(error.action, "create folder");
        assert!(error.to_string().contains("file"), "{error}");
    }
}
