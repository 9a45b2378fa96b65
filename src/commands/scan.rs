//! `civitai-dl scan`: hash every model file under the roots (reusing the cache), list them, and
//! hand what is still unidentified to the identify step. Read-only on the model files: the only
//! file written is the hash index.
//!
//! The scan itself is blocking work (disk reads, SQLite commits), so it runs on a blocking thread
//! with its own hashing pool, off the async runtime; Ctrl-C and SIGTERM set the flag it checks
//! between reads.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Exit, usage, watch_ctrl_c};
use crate::cli::{IndexArgs, ScanArgs};
use crate::ui::library::{LibraryView, scan_summary, summary_event};
use crate::ui::output;
use crate::ui::progress::Progress;
use civitai_dl_library::comfy;
use civitai_dl_library::index::{Index, Unidentified};
use civitai_dl_library::scan::{ScanOptions, ScanSummary};

pub(super) async fn scan(args: ScanArgs, json: bool, progress: Progress) -> anyhow::Result<Exit> {
    let roots = scan_roots(&args)?;
    let index_path = index_path(&args.index)?;
    let mut index = open_index(&index_path)?;
    let stop = stop_on_signal();
    let view = Arc::new(LibraryView::new(&progress, json));
    let started = Instant::now();
    let options = ScanOptions {
        roots,
        hash_jobs: args.hash_jobs,
    };
    let (listener, flag) = (view.clone(), stop.clone());
    let (summary, index) = tokio::task::spawn_blocking(move || {
        let summary =
            civitai_dl_library::scan::scan(&mut index, &options, listener.as_ref(), &flag);
        (summary, index)
    })
    .await
    .context("the scan thread failed")?;
    let summary = summary?;
    let unidentified = index.unidentified(&summary.roots)?;
    view.finish();
    progress.finish();
    view.print_table()?;
    eprintln!("{}", scan_summary(&summary, started.elapsed(), &index_path));
    eprintln!("{}", identify_offline(&unidentified));
    if json {
        output::line(summary_event(
            &summary,
            json!({"index": index_path, "unidentified": unidentified.len(), "identify": "offline"}),
        ))?;
    }
    Ok(exit(&summary))
}

/// The identify step's place in the pipeline: the files the cache has no Civitai match for.
/// Asking Civitai (batched `POST /model-versions/by-hash`, then one AutoV3 lookup each) is not in
/// this release, so `scan` works offline (`--no-remote`) and says how many wait.
fn identify_offline(unidentified: &[Unidentified]) -> String {
    let autov3 = unidentified.iter().filter(|u| u.autov3.is_some()).count();
    format!(
        "{} files not identified on Civitai ({autov3} with an AutoV3): scan works offline \
         (--no-remote) in this release",
        unidentified.len()
    )
}

fn exit(summary: &ScanSummary) -> Exit {
    if summary.stopped {
        Exit::Interrupted
    } else if summary.errors > 0 {
        Exit::SomeFailed
    } else {
        Exit::Success
    }
}

/// The roots from the command line and from each `--comfy-yaml`. A root given by name must
/// exist; a folder the yaml names may not (ComfyUI skips those too), but one of them must.
fn scan_roots(args: &ScanArgs) -> anyhow::Result<Vec<PathBuf>> {
    let mut roots = Vec::new();
    for root in &args.roots {
        if root.symlink_metadata().is_err() {
            bail!(usage(format!(
                "{} does not exist: give a folder of model files (or a model file)",
                root.display()
            )));
        }
        roots.push(root.clone());
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    for yaml in &args.comfy_yaml {
        let folders = comfy::folders(yaml, &|name| std::env::var(name).ok(), home.as_deref())
            .map_err(|e| usage(e.to_string()))?;
        let before = roots.len();
        for folder in folders {
            if folder.path.is_dir() {
                roots.push(folder.path);
            } else {
                tracing::info!(
                    "{}: {}.{} names {}, which is not a folder; skipped",
                    yaml.display(),
                    folder.section,
                    folder.key,
                    folder.path.display()
                );
            }
        }
        if roots.len() == before {
            bail!(usage(format!(
                "none of the model folders {} names exists: check its base_path",
                yaml.display()
            )));
        }
    }
    if roots.is_empty() {
        bail!(usage(
            "nothing to scan: give a folder (civitai-dl scan ~/ComfyUI/models) or --comfy-yaml FILE"
        ));
    }
    roots.dedup();
    Ok(roots)
}

/// `--index`, else the default location.
pub(super) fn index_path(args: &IndexArgs) -> anyhow::Result<PathBuf> {
    match &args.index {
        Some(path) => Ok(path.clone()),
        None => Index::default_path().ok_or_else(|| {
            usage("no cache folder (neither XDG_CACHE_HOME nor HOME is set): give --index PATH")
        }),
    }
}

/// Open the index; one that cannot be used is a usage error naming the file and the way out.
pub(super) fn open_index(path: &std::path::Path) -> anyhow::Result<Index> {
    Index::open(path).map_err(|e| usage(e.to_string()))
}

/// A flag set on the first Ctrl-C or SIGTERM (a second one quits at once), for blocking work
/// that checks it between reads.
pub(super) fn stop_on_signal() -> Arc<AtomicBool> {
    let cancel = CancellationToken::new();
    watch_ctrl_c(cancel.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        cancel.cancelled().await;
        flag.store(true, Ordering::Relaxed);
    });
    stop
}
