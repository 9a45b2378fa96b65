//! A finished file whose planned path changed since it was downloaded (another `--layout`, say)
//! moves there with its sidecars, so the app the new layout serves finds it; reporting it
//! "present" at the old path would leave ComfyUI or Forge blind to it.
//!
//! Nothing is overwritten and nothing is copied: a path that is already taken keeps the file
//! where it is, and a move that cannot be a rename (another file system) is left undone with a
//! warning rather than spending the disk on a second copy of a multi-GB file.

use std::io;
use std::path::{Path, PathBuf};

use crate::fs::{parent_dir, sync_dir};

/// How a move ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Relocated {
    /// The model file is at its new path (with whichever sidecars existed).
    Moved,
    /// Something is already at the new path: the file stays where it is.
    Taken,
}

/// Move `from` to `to`, then each sidecar `(old, new)` that exists and whose new path is free.
/// The model file moves first: a sidecar left behind is rewritten or fetched again, the model
/// file is the one that matters.
pub(super) fn relocate(
    from: &Path,
    to: &Path,
    sidecars: &[(PathBuf, PathBuf)],
) -> io::Result<Relocated> {
    if to.symlink_metadata().is_ok() {
        return Ok(Relocated::Taken);
    }
    std::fs::create_dir_all(parent_dir(to))?;
    std::fs::rename(from, to)?;
    for (old, new) in sidecars {
        if old.exists()
            && new.symlink_metadata().is_err()
            && let Err(error) = std::fs::rename(old, new)
        {
            tracing::debug!("{} not moved: {error}", old.display());
        }
    }
    // Both folders' entries changed: a power cut must not lose the file from both.
    sync_dir(parent_dir(to))?;
    sync_dir(parent_dir(from))?;
    Ok(Relocated::Moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_the_file_and_existing_sidecars_but_never_over_a_taken_path() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (
            dir.path().join("a.safetensors"),
            dir.path().join("x/y/a.safetensors"),
        );
        std::fs::write(&from, b"model").unwrap();
        std::fs::write(dir.path().join("a.civitai.info"), b"{}").unwrap();
        let sidecars = [
            (
                dir.path().join("a.civitai.info"),
                dir.path().join("x/y/a.civitai.info"),
            ),
            (
                dir.path().join("a.preview.png"),
                dir.path().join("x/y/a.preview.png"),
            ),
        ];
        assert_eq!(relocate(&from, &to, &sidecars).unwrap(), Relocated::Moved);
        assert_eq!(std::fs::read(&to).unwrap(), b"model");
        assert!(!from.exists());
        assert!(sidecars[0].1.exists() && !sidecars[0].0.exists());
        assert!(!sidecars[1].1.exists(), "a missing sidecar is not invented");

        std::fs::write(&from, b"other").unwrap();
        assert_eq!(relocate(&from, &to, &[]).unwrap(), Relocated::Taken);
        assert_eq!(std::fs::read(&to).unwrap(), b"model", "never overwritten");
        assert_eq!(std::fs::read(&from).unwrap(), b"other");
    }
}
