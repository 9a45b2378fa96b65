//! `civitai-dl identify FILE|HASH...`: what is this file, and how do I get it again? A file's
//! hashes come from the scan cache when it is unchanged since it was hashed (a multi-GB
//! checkpoint is not read twice), else from one read pass, which the cache then keeps. Each hash
//! is looked up alone (`GET /by-hash/{hash}`, any kind), the SHA-256 first and, when Civitai does
//! not know it, the AutoV3, which still finds a file whose header a tool rewrote.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::scan::{index_path, open_index};
use super::{Exit, build_api, usage, watch_ctrl_c};
use crate::cli::IdentifyArgs;
use crate::settings::Settings;
use crate::ui::output;
use civitai_dl_engine::civitai::ApiClient;
use civitai_dl_engine::civitai::identify::{FileRef, HashMatch, match_single};
use civitai_dl_engine::observe::metrics::Metrics;
use civitai_dl_library::digest::Digester;
use civitai_dl_library::identify::identity_of;
use civitai_dl_library::index::{Index, Learnt, MatchStatus, MatchedBy};
use civitai_dl_library::walk::Stamp;

/// Fewest hex digits taken as a hash: an AutoV1 is 8.
const MIN_HASH_DIGITS: usize = 8;

/// One answer, as printed.
#[derive(Debug, Serialize)]
struct Answer {
    /// What was asked: the path or the hash as given.
    item: String,
    /// `matched`, `unmatched` or `pending` (the lookup failed).
    status: MatchStatus,
    /// The hash that found it: `sha256`, `autov3`, or `hash` (the one given).
    matched_by: Option<&'static str>,
    sha256: Option<String>,
    autov3: Option<String>,
    model_id: Option<u64>,
    version_id: Option<u64>,
    file_id: Option<u64>,
    model: Option<String>,
    version: Option<String>,
    file_name: Option<String>,
    base_model: Option<String>,
    #[serde(rename = "type")]
    model_type: Option<String>,
    /// The command that downloads this version.
    download: Option<String>,
    /// Why a lookup failed.
    reason: Option<String>,
}

/// The hashes of one item.
struct Hashes {
    /// A hash given as such, of a kind only Civitai can tell.
    given: Option<String>,
    sha256: Option<String>,
    autov3: Option<String>,
    /// The file and its stamp, when the item is a file (to record what was learnt).
    file: Option<(PathBuf, String)>,
}

pub(super) async fn identify(
    settings: Settings,
    args: IdentifyArgs,
    json: bool,
) -> anyhow::Result<Exit> {
    let mut items = Vec::new();
    for item in &args.items {
        let path = Path::new(item);
        if path.is_file() {
            items.push((item.clone(), None));
        } else if is_hash(item) {
            items.push((item.clone(), Some(item.to_ascii_uppercase())));
        } else {
            return Err(usage(format!(
                "{item} is neither a file nor a hash: give a model file or a SHA256, AutoV2 \
                 or AutoV3 (hex digits)"
            )));
        }
    }
    let needs_index = items.iter().any(|(_, hash)| hash.is_none());
    let mut index = if needs_index {
        Some(open_index(&index_path(&args.index)?)?)
    } else {
        None
    };
    let cancel = CancellationToken::new();
    watch_ctrl_c(cancel.clone());
    let api = build_api(&settings, cancel, std::sync::Arc::new(Metrics::new()), None)?;
    let mut answers = Vec::new();
    for (item, hash) in items {
        let hashes = match (hash, index.as_ref()) {
            (None, Some(index)) => file_hashes(index, Path::new(&item)).await?,
            (given, _) => Hashes {
                given,
                sha256: None,
                autov3: None,
                file: None,
            },
        };
        let answer = look_up(&api, item, &hashes).await;
        if let (Some(index), Some((path, sha256))) = (index.as_mut(), &hashes.file)
            && let (MatchStatus::Matched, Some(version_id)) = (answer.status, answer.version_id)
        {
            let chosen = FileRef {
                version_id,
                file_id: answer.file_id.unwrap_or_default(),
                model_id: answer.model_id,
            };
            let by = if answer.matched_by == Some("autov3") {
                MatchedBy::Autov3
            } else {
                MatchedBy::Sha256
            };
            let mut identity = identity_of(&chosen, by, None);
            identity.model_name = answer.model.clone();
            identity.version_name = answer.version.clone();
            index.record(&[Learnt {
                path: path.clone(),
                sha256: sha256.clone(),
                identity,
            }])?;
        }
        answers.push(answer);
    }
    let found = answers
        .iter()
        .filter(|a| a.status == MatchStatus::Matched)
        .count();
    if json {
        output::line(json!({"results": answers, "found": found,
            "not_found": answers.len() - found}))?;
    } else {
        for answer in &answers {
            output::line(describe(answer))?;
        }
    }
    Ok(if found == answers.len() {
        Exit::Success
    } else {
        Exit::SomeFailed
    })
}

fn is_hash(text: &str) -> bool {
    (MIN_HASH_DIGITS..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The hashes of the file at `path`: the cache's while the file is unchanged, else read now
/// (and stored, so `scan` and the next `identify` reuse them).
async fn file_hashes(index: &Index, path: &Path) -> anyhow::Result<Hashes> {
    let canonical = path
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    let metadata =
        std::fs::metadata(&canonical).with_context(|| format!("cannot read {}", path.display()))?;
    let stamp = Stamp::of(&metadata);
    let cached = index
        .get(&canonical)?
        .filter(|row| row.is_valid_for(&stamp));
    let (sha256, autov3) = match cached {
        Some(row) => (row.sha256, row.autov3),
        None => {
            let target = canonical.clone();
            let digest = tokio::task::spawn_blocking(move || {
                Digester::new().digest(&target, &|| false, &mut |_| {})
            })
            .await
            .context("the hashing thread failed")??;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            index.store(&canonical, &stamp, &digest, now)?;
            (digest.sha256, digest.autov3)
        }
    };
    Ok(Hashes {
        given: None,
        sha256: Some(sha256.clone()),
        autov3,
        file: Some((canonical, sha256)),
    })
}

/// Ask by the SHA-256, then (when Civitai knows none) by the AutoV3.
async fn look_up(api: &ApiClient, item: String, hashes: &Hashes) -> Answer {
    let mut answer = Answer {
        item,
        status: MatchStatus::Unmatched,
        matched_by: None,
        sha256: hashes.sha256.clone(),
        autov3: hashes.autov3.clone(),
        model_id: None,
        version_id: None,
        file_id: None,
        model: None,
        version: None,
        file_name: None,
        base_model: None,
        model_type: None,
        download: None,
        reason: None,
    };
    let asks = [
        (hashes.given.as_deref(), "hash"),
        (hashes.sha256.as_deref(), "sha256"),
        (hashes.autov3.as_deref(), "autov3"),
    ];
    for (hash, by) in asks {
        let Some(hash) = hash else { continue };
        let found = api.version_by_hash(hash).await;
        match match_single(hash, &found) {
            HashMatch::Matched { chosen, .. } => {
                if let Ok(Some(version)) = &found {
                    fill(&mut answer, &version.value, chosen.file_id);
                }
                answer.status = MatchStatus::Matched;
                answer.matched_by = Some(by);
                answer.version_id = Some(chosen.version_id);
                answer.file_id = Some(chosen.file_id);
                answer.model_id = answer.model_id.or(chosen.model_id);
                answer.download = answer.model_id.map(|model| {
                    format!(
                        "civitai-dl download 'https://civitai.com/models/{model}?modelVersionId={}'",
                        chosen.version_id
                    )
                });
                return answer;
            }
            HashMatch::Unmatched => {}
            HashMatch::Pending { reason } => {
                answer.status = MatchStatus::Pending;
                answer.reason = Some(reason);
                return answer;
            }
        }
    }
    answer
}

fn fill(
    answer: &mut Answer,
    version: &civitai_dl_engine::civitai::wire::ModelVersion,
    file_id: u64,
) {
    answer.model_id = version.model_id;
    answer.version = Some(version.name.clone());
    answer.base_model = version.base_model.clone();
    if let Some(model) = &version.model {
        answer.model = model.name.clone();
        answer.model_type = model.model_type.as_ref().map(|t| t.as_str().to_owned());
    }
    answer.file_name = version
        .files
        .iter()
        .find(|f| f.id == file_id)
        .map(|f| f.name.clone());
}

/// A few lines for people.
fn describe(answer: &Answer) -> String {
    match answer.status {
        MatchStatus::Matched => {
            let mut text = format!(
                "{}: {} / {} (model {}, version {})",
                answer.item,
                answer.model.as_deref().unwrap_or("?"),
                answer.version.as_deref().unwrap_or("?"),
                answer.model_id.map_or("?".to_owned(), |id| id.to_string()),
                answer
                    .version_id
                    .map_or("?".to_owned(), |id| id.to_string()),
            );
            for (label, value) in [
                ("file", &answer.file_name),
                ("base model", &answer.base_model),
                ("type", &answer.model_type),
            ] {
                if let Some(value) = value {
                    text.push_str(&format!("\n  {label}: {value}"));
                }
            }
            if answer.matched_by == Some("autov3") {
                text.push_str(
                    "\n  found by AutoV3: the header was edited, the weights are as published",
                );
            }
            if let Some(command) = &answer.download {
                text.push_str(&format!("\n  fetch it: {command}"));
            }
            text
        }
        MatchStatus::Unmatched => format!("{}: not found on Civitai", answer.item),
        MatchStatus::Pending => format!(
            "{}: lookup failed ({}); try again later",
            answer.item,
            answer.reason.as_deref().unwrap_or("unknown error")
        ),
    }
}
