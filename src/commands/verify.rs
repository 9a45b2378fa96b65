//! `civitai-dl verify`: re-hash model files (or trust the cache with `--cached`) and judge each
//! against its `.civitai.info` sidecar; `--quarantine` moves mismatches aside. Exit 0 only when
//! every file is `ok` or `ok-tensor`.

use std::sync::Arc;

use anyhow::Context;
use serde_json::json;

use super::Exit;
use super::scan::{index_path, open_index, stop_on_signal};
use crate::cli::VerifyArgs;
use crate::ui::library::{LibraryView, summary_event, verify_summary};
use crate::ui::output;
use crate::ui::progress::Progress;
use civitai_dl_library::verify::VerifyOptions;

pub(super) async fn verify(
    args: VerifyArgs,
    json: bool,
    progress: Progress,
) -> anyhow::Result<Exit> {
    let index_path = index_path(&args.index)?;
    let index = open_index(&index_path)?;
    let stop = stop_on_signal();
    let view = Arc::new(LibraryView::new(&progress, json));
    let options = VerifyOptions {
        paths: args.paths,
        cached: args.cached,
        quarantine: args.quarantine,
    };
    let (listener, flag) = (view.clone(), stop.clone());
    let summary = tokio::task::spawn_blocking(move || {
        civitai_dl_library::verify::verify(&index, &options, listener.as_ref(), &flag)
    })
    .await
    .context("the verify thread failed")??;
    view.finish();
    progress.finish();
    eprintln!("{}", verify_summary(&summary));
    if json {
        output::line(summary_event(&summary, json!({"index": index_path})))?;
    }
    Ok(if summary.stopped {
        Exit::Interrupted
    } else if summary.all_pass() {
        Exit::Success
    } else {
        Exit::SomeFailed
    })
}
