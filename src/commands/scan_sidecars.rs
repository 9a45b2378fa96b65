//! `scan --write-sidecars`: give files other tools downloaded the sidecars the user's apps read,
//! from what identification learnt. Only missing sidecars are written; one that exists (the
//! user's card, another tool's record) is never touched, whatever it holds.
//!
//! A preview is the version's first image (images before videos, as `download` picks), fetched
//! through the download path (limiter, retries, a staging name) and named
//! `<stem>.preview.<ext>` by its bytes' format; it is fetched before the metadata, so LoRA
//! Manager's record names it.
//!
//! The content comes from the engine's writers, exactly as `download` writes it. The version JSON
//! is the one the lookup answered with; for files matched by an earlier scan it is fetched once per
//! version (`GET /model-versions/{id}`), and each parent model once, a hundred per request
//! (`GET /models?ids=`), for the description, tags and licence fields the formats carry.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use civitai_dl_engine::civitai::wire::ModelVersion;
use civitai_dl_engine::civitai::{ApiClient, PAGE_LIMIT, WithRaw};
use civitai_dl_engine::fetch::{Connections, Downloader};
use civitai_dl_engine::observe::NoProgress;
use civitai_dl_engine::plan::naming::sidecar_path;
use civitai_dl_engine::plan::{FileKind, PlannedFile, Source, preview_candidates, preview_path};
use civitai_dl_engine::sidecar::preview;
use civitai_dl_engine::sidecar::{OnDisk, SavedPreview, SidecarKind, SidecarPlan, write_all};
use civitai_dl_library::index::{Index, MatchStatus, MatchedBy};

use crate::cli::ScanSidecar;

/// What writing sidecars did.
#[derive(Debug, Default, serde::Serialize)]
pub(super) struct SidecarCounts {
    /// Sidecars written.
    pub written: u64,
    /// Matched files whose requested sidecars were all there already.
    pub complete: u64,
    /// Sidecars not written (another version's file, an unreadable one, a failed request).
    pub failed: u64,
}

/// One matched file lacking some of the sidecars asked for.
struct Lacking {
    path: PathBuf,
    size: u64,
    sha256: String,
    verified: bool,
    version_id: u64,
    file_id: u64,
    model_id: Option<u64>,
    kinds: Vec<SidecarKind>,
    preview: bool,
}

/// Write the missing `wanted` beside every matched file under `roots`; previews are fetched
/// with `downloader`.
pub(super) async fn write_missing(
    api: &ApiClient,
    downloader: &Downloader,
    index: &Index,
    roots: &[PathBuf],
    wanted: &[ScanSidecar],
    known: &HashMap<u64, Arc<WithRaw<ModelVersion>>>,
) -> anyhow::Result<SidecarCounts> {
    let kinds: Vec<SidecarKind> = wanted.iter().filter_map(|w| w.format()).collect();
    let wants_preview = wanted.contains(&ScanSidecar::Preview);
    let mut counts = SidecarCounts::default();
    let mut lacking: Vec<Lacking> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for root in roots {
        for (path, row) in index.rows_under(root)? {
            if !seen.insert(path.clone()) {
                continue;
            }
            let Some(identity) = index.identity(&path)? else {
                continue;
            };
            let (MatchStatus::Matched, Some(version_id), Some(file_id)) =
                (identity.status, identity.version_id, identity.file_id)
            else {
                continue;
            };
            let missing: Vec<SidecarKind> = kinds
                .iter()
                .copied()
                .filter(|kind| kind.path(&path).symlink_metadata().is_err())
                .collect();
            let preview = wants_preview && existing_preview(&path).is_none();
            if missing.is_empty() && !preview {
                counts.complete += 1;
                continue;
            }
            lacking.push(Lacking {
                path,
                size: row.stamp.size,
                sha256: row.sha256.to_ascii_lowercase(),
                verified: matches!(
                    identity.matched_by,
                    Some(MatchedBy::Sha256 | MatchedBy::Sidecar)
                ),
                version_id,
                file_id,
                model_id: identity.model_id,
                kinds: missing,
                preview,
            });
        }
    }
    if lacking.is_empty() {
        return Ok(counts);
    }
    let versions = versions_of(api, &lacking, known).await;
    let models = models_of(api, &lacking).await;
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    for file in lacking {
        let Some(version) = versions.get(&file.version_id) else {
            counts.failed += file.kinds.len() as u64 + u64::from(file.preview);
            continue;
        };
        let preview = if file.preview {
            let saved = fetch_preview(downloader, &file.path, version).await;
            match &saved {
                Some(_) => counts.written += 1,
                None => counts.failed += 1,
            }
            saved
        } else {
            existing_preview(&file.path)
        };
        if file.kinds.is_empty() {
            continue;
        }
        let plan = SidecarPlan {
            kinds: file.kinds.clone(),
            version: version.clone(),
            model: file.model_id.and_then(|id| models.get(&id).cloned()),
            file_id: file.file_id,
            vae: None,
        };
        let on_disk = OnDisk {
            path: file.path.clone(),
            size: file.size,
            sha256: file.sha256.clone(),
            verified: file.verified,
            preview,
            now_unix,
            now_rfc3339: civitai_dl_engine::state::now_rfc3339(),
        };
        let errors = write_all(&plan, &on_disk).await;
        for error in &errors {
            tracing::warn!("{error}");
        }
        counts.failed += errors.len() as u64;
        counts.written += (file.kinds.len() - errors.len()) as u64;
    }
    Ok(counts)
}

/// Every version the files need, as JSON: the lookup's answers, else one request each.
async fn versions_of(
    api: &ApiClient,
    lacking: &[Lacking],
    known: &HashMap<u64, Arc<WithRaw<ModelVersion>>>,
) -> HashMap<u64, Arc<Value>> {
    let wanted: BTreeSet<u64> = lacking.iter().map(|f| f.version_id).collect();
    let mut versions = HashMap::new();
    for id in wanted {
        if let Some(version) = known.get(&id) {
            versions.insert(id, Arc::new(version.raw.clone()));
            continue;
        }
        match api.version(id).await {
            Ok(version) => {
                versions.insert(id, Arc::new(version.raw));
            }
            Err(error) => tracing::warn!(
                "no sidecars for the files of version {id}: cannot get it from Civitai ({error})"
            ),
        }
    }
    versions
}

/// The parent models, without their versions, a page of ids per request. A model the answer
/// leaves out (archived, hidden) just gives sidecars without its fields.
async fn models_of(api: &ApiClient, lacking: &[Lacking]) -> HashMap<u64, Arc<Value>> {
    let wanted: Vec<u64> = lacking
        .iter()
        .filter_map(|f| f.model_id)
        .collect::<BTreeSet<u64>>()
        .into_iter()
        .collect();
    let mut models = HashMap::new();
    for chunk in wanted.chunks(PAGE_LIMIT as usize) {
        match api.models_by_ids(chunk).await {
            Ok(found) => {
                for model in found {
                    let mut raw = model.raw;
                    if let Value::Object(map) = &mut raw {
                        map.remove("modelVersions");
                    }
                    models.insert(model.value.id, Arc::new(raw));
                }
            }
            Err(error) => tracing::warn!(
                "sidecars go without the models' descriptions and tags: cannot get {} models \
                 from Civitai ({error})",
                chunk.len()
            ),
        }
    }
    models
}

/// The preview a model file has already (ours, in any format), so it is not fetched again and
/// LoRA Manager's record can name it.
fn existing_preview(model: &std::path::Path) -> Option<SavedPreview> {
    preview::existing(model, 0).map(|path| SavedPreview {
        path,
        nsfw_level: 0,
    })
}

/// Fetch the version's first image beside `model` and name it by its bytes; `None` (with a
/// warning) when there is none or it cannot be had.
async fn fetch_preview(
    downloader: &Downloader,
    model: &std::path::Path,
    version: &Value,
) -> Option<SavedPreview> {
    let parsed = ModelVersion::deserialize(version).ok()?;
    let Some(candidate) = preview_candidates(&parsed).into_iter().next() else {
        tracing::info!(
            "{}: its version has no image for a preview",
            model.display()
        );
        return None;
    };
    let staged = PlannedFile {
        label: format!("{} preview", model.display()),
        source: Source::Direct(candidate.url.clone()),
        dest: sidecar_path(model, "preview-candidate-0.download"),
        expected_size: None,
        expected_sha256: None,
        known_sha256: None,
        kind: FileKind::Preview,
        replace_existing: true,
    };
    if let Err(error) = downloader
        .download_file(&staged, &NoProgress, Connections::One)
        .await
    {
        tracing::warn!("{}: {error}", staged.label);
        return None;
    }
    let head = preview::read_head(&staged.dest);
    let Some(media) = head.as_deref().and_then(preview::sniff) else {
        tracing::warn!(
            "{}: its bytes are no image or video format civitai-dl knows; not saved",
            staged.label
        );
        let _ = std::fs::remove_file(&staged.dest);
        return None;
    };
    let path = preview_path(model, 0, media.extension());
    if let Err(error) = std::fs::rename(&staged.dest, &path) {
        tracing::warn!("{}: not saved as {}: {error}", staged.label, path.display());
        let _ = std::fs::remove_file(&staged.dest);
        return None;
    }
    Some(SavedPreview {
        path,
        nsfw_level: candidate.nsfw_level,
    })
}
