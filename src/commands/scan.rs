//! `civitai-dl scan`: hash every model file under the roots (reusing the cache), identify what
//! the cache has not settled from the sidecars beside the files, then on Civitai (unless
//! `--no-remote`), and list them. Read-only on the
//! model files: the only file written is the hash index.
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

use super::{Exit, build_api, scan_sidecars, usage, watch_ctrl_c};
use crate::cli::{IndexArgs, ScanArgs};
use crate::settings::Settings;
use crate::ui::library::{LibraryView, scan_summary, summary_event};
use crate::ui::output;
use crate::ui::progress::Progress;
use civitai_dl_engine::civitai::ApiClient;
use civitai_dl_engine::fetch::{DownloadOptions, Downloader};
use civitai_dl_engine::observe::metrics::Metrics;
use civitai_dl_library::comfy;
use civitai_dl_library::identify::{Identification, IdentifySummary, identify};
use civitai_dl_library::index::{Index, MatchStatus, Unidentified};
use civitai_dl_library::scan::{HashJobs, ScanOptions, ScanSummary};
use civitai_dl_library::sidecars::{FromSidecars, identify_from_sidecars, report_unproven};

pub(super) async fn scan(
    args: ScanArgs,
    settings: Option<Settings>,
    json: bool,
    progress: Progress,
) -> anyhow::Result<Exit> {
    let roots = scan_roots(&args)?;
    let index_path = index_path(&args.index)?;
    let mut index = open_index(&index_path)?;
    let (stop, cancel) = stop_on_signal();
    let view = Arc::new(LibraryView::new(&progress, json));
    let started = Instant::now();
    let options = ScanOptions {
        roots,
        hash_jobs: args.hash_jobs.map_or(HashJobs::PerDevice, HashJobs::Total),
    };
    let (listener, flag) = (view.clone(), stop.clone());
    let (summary, mut index) = tokio::task::spawn_blocking(move || {
        let summary =
            civitai_dl_library::scan::scan(&mut index, &options, listener.as_ref(), &flag);
        (summary, index)
    })
    .await
    .context("the scan thread failed")?;
    let summary = summary?;
    let mut sidecars = None;
    // Sidecars first, with and without the network: a file Civitai Helper or LoRA Manager
    // already annotated (and whose hash its sidecar confirms) costs no request.
    let from_sidecars = if summary.stopped {
        FromSidecars::default()
    } else {
        let unidentified = index.unidentified(&summary.roots, args.retry_unmatched)?;
        identify_from_sidecars(&mut index, unidentified, view.as_ref())?
    };
    let by_sidecar = from_sidecars.summary.matched;
    let mut unproven = IdentifySummary::default();
    let identified = match &settings {
        Some(settings) if !summary.stopped => {
            let unidentified: Vec<Unidentified> = from_sidecars
                .unproven
                .into_iter()
                .map(|(file, _)| file)
                .collect();
            let needs_api = !unidentified.is_empty() || !args.write_sidecars.is_empty();
            let api = if needs_api {
                Some(build_api(
                    settings,
                    cancel.clone(),
                    Arc::new(Metrics::new()),
                    None,
                )?)
            } else {
                None
            };
            let found = match &api {
                Some(api) if !unidentified.is_empty() => {
                    identify(&mut index, api, &unidentified, view.as_ref(), &stop).await?
                }
                _ => Identification::default(),
            };
            if let Some(api) = &api
                && !args.write_sidecars.is_empty()
                && !found.summary.stopped
            {
                let downloader = previews_downloader(settings, api, &cancel)?;
                sidecars = Some(
                    scan_sidecars::write_missing(
                        api,
                        &downloader,
                        &index,
                        &summary.roots,
                        &args.write_sidecars,
                        &found.versions,
                    )
                    .await?,
                );
            }
            Some(found.summary)
        }
        _ => {
            unproven = report_unproven(&from_sidecars.unproven, view.as_ref());
            None
        }
    };
    view.finish();
    progress.finish();
    view.print_table(|path| index.identity(path).ok().flatten())?;
    let statuses = statuses(&index, &summary.roots)?;
    eprintln!("{}", scan_summary(&summary, started.elapsed(), &index_path));
    eprintln!(
        "{}",
        identify_line(&statuses, by_sidecar, identified.as_ref(), &unproven)
    );
    if let Some(counts) = &sidecars {
        eprintln!(
            "sidecars: {} written, {} identified files had them all, {} not written",
            counts.written, counts.complete, counts.failed
        );
    }
    if json {
        output::line(summary_event(
            &summary,
            json!({"index": index_path, "matched": statuses.matched,
                "unmatched": statuses.unmatched, "pending": statuses.pending,
                "identify": if identified.is_some() { "remote" } else { "offline" },
                "asked": identified.as_ref().map_or(0, |i| i.asked), "by_sidecar": by_sidecar,
                "sidecars": sidecars}),
        ))?;
    }
    let stopped = summary.stopped || identified.as_ref().is_some_and(|i| i.stopped);
    Ok(if stopped {
        Exit::Interrupted
    } else {
        exit(&summary)
    })
}

/// The downloader previews are fetched with: download's network settings, one connection.
fn previews_downloader(
    settings: &Settings,
    api: &Arc<ApiClient>,
    cancel: &CancellationToken,
) -> anyhow::Result<Downloader> {
    let options = DownloadOptions {
        accept_hash_mismatch: false,
        min_speed: settings.network.min_speed,
        min_speed_window: settings.network.min_speed_window,
        connect_timeout: settings.network.connect_timeout,
        read_timeout: settings.network.read_timeout,
        segments: 1,
        segment_threshold: u64::MAX,
        connections: 1,
    };
    Downloader::new(
        api.clone(),
        settings.retry.clone(),
        options,
        cancel.clone(),
        Arc::new(Metrics::new()),
    )
    .context("cannot set up the HTTP client")
}

/// How the files under the scanned roots stand, identification-wise.
#[derive(Default)]
struct Statuses {
    matched: u64,
    unmatched: u64,
    pending: u64,
}

fn statuses(index: &Index, roots: &[PathBuf]) -> anyhow::Result<Statuses> {
    let mut seen = std::collections::HashSet::new();
    let mut counts = Statuses::default();
    for root in roots {
        for (path, row) in index.rows_under(root)? {
            if seen.insert(path) {
                match row.match_status {
                    MatchStatus::Matched => counts.matched += 1,
                    MatchStatus::Unmatched => counts.unmatched += 1,
                    MatchStatus::Pending => counts.pending += 1,
                }
            }
        }
    }
    Ok(counts)
}

/// `identify: 248 matched, 2 unmatched, 0 pending; 3 proven by their sidecars; 247 asked now`.
fn identify_line(
    statuses: &Statuses,
    by_sidecar: u64,
    identified: Option<&IdentifySummary>,
    unproven: &IdentifySummary,
) -> String {
    let mut line = format!(
        "identify: {} matched, {} unmatched, {} pending",
        statuses.matched, statuses.unmatched, statuses.pending
    );
    if by_sidecar > 0 {
        line.push_str(&format!("; {by_sidecar} proven by their sidecars"));
    }
    match identified {
        Some(now) => {
            line.push_str(&format!("; {} asked now", now.asked));
            if now.matched_by_autov3 > 0 {
                line.push_str(&format!(
                    " ({} found by AutoV3: header rewritten, weights as published)",
                    now.matched_by_autov3
                ));
            }
            if now.pending > 0 {
                line.push_str(&format!(
                    "; {} pending: a lookup failed ({}), the next scan asks again",
                    now.pending,
                    now.failure.as_deref().unwrap_or("no answer")
                ));
            }
        }
        None => {
            line.push_str(
                " (offline: --no-remote identifies only from sidecars that list the file's hash)",
            );
            if let Some(why) = &unproven.failure {
                line.push_str(&format!(
                    "; {} sidecars prove nothing, e.g. {why}",
                    unproven.pending
                ));
            }
        }
    }
    line
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
/// that checks it between reads, and the token the API client stops on.
pub(super) fn stop_on_signal() -> (Arc<AtomicBool>, CancellationToken) {
    let cancel = CancellationToken::new();
    watch_ctrl_c(cancel.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, token) = (stop.clone(), cancel.clone());
    tokio::spawn(async move {
        token.cancelled().await;
        flag.store(true, Ordering::Relaxed);
    });
    (stop, cancel)
}
