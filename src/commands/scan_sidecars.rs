//! `scan --write-sidecars`: give files other tools downloaded the sidecars the user's apps read,
//! from what identification learnt. Only missing sidecars are written; one that exists (the
//! user's card, another tool's record) is never touched, whatever it holds.
//!
//! The content comes from the engine's writers, exactly as `download` writes it. The version JSON
//! is the one the lookup answered with; for files matched by an earlier scan it is fetched once per
//! version (`GET /model-versions/{id}`), and each parent model once, a hundred per request
//! (`GET /models?ids=`), for the description, tags and licence fields the formats carry.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use civitai_dl_engine::civitai::wire::ModelVersion;
use civitai_dl_engine::civitai::{ApiClient, PAGE_LIMIT, WithRaw};
use civitai_dl_engine::sidecar::{OnDisk, SidecarKind, SidecarPlan, write_all};
use civitai_dl_library::index::{Index, MatchStatus, MatchedBy};

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
}

/// Write the missing `kinds` beside every matched file under `roots`.
pub(super) async fn write_missing(
    api: &ApiClient,
    index: &Index,
    roots: &[PathBuf],
    kinds: &[SidecarKind],
    known: &HashMap<u64, Arc<WithRaw<ModelVersion>>>,
) -> anyhow::Result<SidecarCounts> {
    let mut counts = SidecarCounts::default();
    let mut lacking = Vec::new();
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
            if missing.is_empty() {
                counts.complete += 1;
                continue;
            }
            lacking.push(Lacking {
                path,
                size: row.stamp.size,
                sha256: row.sha256.to_ascii_lowercase(),
                verified: identity.matched_by == Some(MatchedBy::Sha256),
                version_id,
                file_id,
                model_id: identity.model_id,
                kinds: missing,
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
            counts.failed += file.kinds.len() as u64;
            continue;
        };
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
            preview: None,
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
