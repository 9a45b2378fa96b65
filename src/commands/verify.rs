//! `civitai-dl verify`: re-hash model files (or trust the cache with `--cached`) and judge each
//! against its `.civitai.info` sidecar, else (unless `--no-remote`) against the hashes Civitai
//! publishes for the version a scan matched it to; `--quarantine` moves mismatches aside. Exit 0
//! only when every file is `ok` or `ok-tensor`.
//!
//! The judging runs on a blocking thread; it asks for a version's hashes through the runtime's
//! handle, one `GET /model-versions/{id}` per version however many of its files are checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde_json::json;

use super::scan::{index_path, open_index, stop_on_signal};
use super::{Exit, build_api};
use crate::cli::VerifyArgs;
use crate::settings::Settings;
use crate::ui::library::{LibraryView, summary_event, verify_summary};
use crate::ui::output;
use crate::ui::progress::Progress;
use civitai_dl_engine::civitai::ApiClient;
use civitai_dl_engine::observe::metrics::Metrics;
use civitai_dl_library::verify::{Expected, Published, SidecarsOnly, VerifyOptions};

pub(super) async fn verify(
    args: VerifyArgs,
    settings: Option<Settings>,
    json: bool,
    progress: Progress,
) -> anyhow::Result<Exit> {
    let index_path = index_path(&args.index)?;
    let index = open_index(&index_path)?;
    let (stop, cancel) = stop_on_signal();
    let view = Arc::new(LibraryView::new(&progress, json));
    let options = VerifyOptions {
        paths: args.paths,
        cached: args.cached,
        quarantine: args.quarantine,
    };
    let published: Box<dyn Published + Send> = match &settings {
        Some(settings) => Box::new(FromCivitai {
            api: build_api(settings, cancel, Arc::new(Metrics::new()), None)?,
            runtime: tokio::runtime::Handle::current(),
            versions: Mutex::new(HashMap::new()),
        }),
        None => Box::new(SidecarsOnly),
    };
    let (listener, flag) = (view.clone(), stop.clone());
    let summary = tokio::task::spawn_blocking(move || {
        civitai_dl_library::verify::verify(
            &index,
            &options,
            published.as_ref(),
            listener.as_ref(),
            &flag,
        )
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

/// Published hashes from `GET /model-versions/{id}`, each version asked for once.
struct FromCivitai {
    api: Arc<ApiClient>,
    runtime: tokio::runtime::Handle,
    /// Per version: each file's hashes, or why the version could not be had.
    versions: Mutex<HashMap<u64, VersionHashes>>,
}

/// A version's files' published hashes by file id, or why they could not be had.
type VersionHashes = Result<HashMap<u64, Expected>, String>;

impl Published for FromCivitai {
    fn expected(&self, version_id: u64, file_id: u64) -> Result<Option<Expected>, String> {
        let mut versions = self
            .versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let files = versions.entry(version_id).or_insert_with(|| {
            match self.runtime.block_on(self.api.version(version_id)) {
                Ok(version) => Ok(version
                    .value
                    .files
                    .iter()
                    .map(|file| {
                        let expected = Expected {
                            sha256: file.hashes.sha256.clone(),
                            autov3: file.hashes.auto_v3.clone(),
                        };
                        (file.id, expected)
                    })
                    .collect()),
                Err(error) => Err(format!(
                    "cannot get the published hashes of version {version_id} from Civitai: {error}"
                )),
            }
        });
        match files {
            Ok(files) => Ok(files.get(&file_id).cloned()),
            Err(why) => Err(why.clone()),
        }
    }
}
