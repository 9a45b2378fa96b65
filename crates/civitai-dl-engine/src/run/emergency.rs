//! The emergency stop: a file whose appearance stops a run cleanly (no new work; work in flight
//! ends as soon as it can, keeping its `.part`; the state is saved). A file, not a signal, so it
//! works from another terminal, a cron job or a file manager, for unattended runs of many hours.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the emergency stop file is looked for.
pub const EMERGENCY_POLL: Duration = Duration::from_millis(500);

/// Where to look for `path`: as given when it names a directory, otherwise in the working
/// directory and in the output directory.
pub fn candidates(path: PathBuf, output: &Path) -> Vec<PathBuf> {
    if path.components().count() > 1 || path.is_absolute() {
        vec![path]
    } else {
        vec![path.clone(), output.join(&path)]
    }
}

/// Wait until one of `candidates` exists (and return it) or `cancel` fires (and return `None`).
pub async fn watch(candidates: &[PathBuf], cancel: &CancellationToken) -> Option<PathBuf> {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(EMERGENCY_POLL) => {}
        }
        if let Some(found) = candidates.iter().find(|p| p.exists()) {
            tracing::error!(
                "emergency stop: {} exists; stopping new work and saving state",
                found.display()
            );
            return Some(found.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_looked_for_here_and_in_the_output() {
        let out = Path::new("/out");
        assert_eq!(
            candidates("STOP".into(), out),
            [PathBuf::from("STOP"), PathBuf::from("/out/STOP")]
        );
        assert_eq!(
            candidates("/tmp/STOP".into(), out),
            [PathBuf::from("/tmp/STOP")]
        );
        assert_eq!(candidates("a/STOP".into(), out), [PathBuf::from("a/STOP")]);
    }

    #[tokio::test]
    async fn the_watch_sees_the_file_or_ends_on_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let stop = dir.path().join("STOP");
        let cancel = CancellationToken::new();
        let watching = tokio::spawn({
            let (stop, cancel) = (stop.clone(), cancel.clone());
            async move { watch(&[stop], &cancel).await }
        });
        std::fs::write(&stop, b"").unwrap();
        assert_eq!(watching.await.unwrap(), Some(stop));
        cancel.cancel();
        assert_eq!(watch(&[dir.path().join("never")], &cancel).await, None);
    }
}
