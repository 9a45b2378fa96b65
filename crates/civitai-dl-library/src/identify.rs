//! The identify step: ask Civitai what the files the cache has not settled are, and remember the
//! answer, so a rescan asks only about new or changed files.
//!
//! SHA-256s go to Civitai a hundred per request (the batch route is the only one that takes many
//! hashes; one request per file is what makes other tools take hours). A file the batches did not
//! find but that has an AutoV3 is then looked up alone by it: that hash covers only the tensor
//! bytes, so it still finds a file whose header a tool such as SwarmUI rewrote. A lookup that
//! failed (429, 5xx, a maintenance page, the network) says nothing about the file, which stays
//! `pending` and is asked again by the next scan; only a successful answer that lacks a hash makes
//! it `unmatched`. Each batch's answers are committed before the next is asked, so an interrupted
//! scan keeps what it learnt. When the same bytes are in several versions, the version the
//! file's `.civitai.info` names wins, else the lowest version id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use civitai_dl_engine::civitai::identify::{
    FileRef, HashMatch, SHA256_BATCH, match_hashes, match_single,
};
use civitai_dl_engine::civitai::wire::ModelVersion;
use civitai_dl_engine::civitai::{ApiClient, WithRaw};
use serde::Serialize;

use crate::index::{Identity, Index, IndexError, Learnt, MatchStatus, MatchedBy, Unidentified};
use crate::verify::sidecar_path;

/// One file's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Identified {
    /// Canonical path.
    pub path: PathBuf,
    /// What was learnt (and recorded).
    #[serde(flatten)]
    pub identity: Identity,
    /// Why a file stayed pending.
    pub reason: Option<String>,
    /// The version the file belongs to, as Civitai answered (for sidecars).
    #[serde(skip)]
    pub version: Option<Arc<WithRaw<ModelVersion>>>,
}

/// The counts of one identify step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IdentifySummary {
    /// Files asked about.
    pub asked: u64,
    /// Found on Civitai.
    pub matched: u64,
    /// Of those, found only by AutoV3 (header rewritten).
    pub matched_by_autov3: u64,
    /// Civitai answered and knows none.
    pub unmatched: u64,
    /// The lookup failed: asked again by the next scan.
    pub pending: u64,
    /// Why the first failed lookup failed, for the one line that tells the user.
    pub failure: Option<String>,
    /// Whether a stop request ended the step early.
    pub stopped: bool,
}

impl IdentifySummary {
    fn count(&mut self, identity: &Identity) {
        match identity.status {
            MatchStatus::Matched => {
                self.matched += 1;
                self.matched_by_autov3 += u64::from(identity.matched_by == Some(MatchedBy::Autov3));
            }
            MatchStatus::Unmatched => self.unmatched += 1,
            MatchStatus::Pending => self.pending += 1,
        }
    }

    fn count_reason(&mut self, reason: Option<&String>) {
        if self.failure.is_none() {
            self.failure = reason.cloned();
        }
    }
}

/// What an identify step learnt: the counts, and every version Civitai answered with (for
/// sidecars, which would otherwise cost a request per version).
#[derive(Debug, Default)]
pub struct Identification {
    /// The counts.
    pub summary: IdentifySummary,
    /// The versions the answers held, by id.
    pub versions: HashMap<u64, Arc<WithRaw<ModelVersion>>>,
}

/// The events of an identify step.
pub trait IdentifyReporter: Send + Sync {
    /// A file's outcome is known and recorded.
    fn on_identified(&self, _file: &Identified) {}
}

/// The version id a `.civitai.info` beside `model` names, if any: the user (or the tool that
/// downloaded it) already said which version this file is.
pub fn sidecar_version(model: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(sidecar_path(model)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("id")?.as_u64()
}

/// Identify `files` through `api`, recording each batch's outcomes in `index` as it lands.
/// Paths with the same SHA-256 are asked about once.
pub async fn identify(
    index: &mut Index,
    api: &ApiClient,
    files: &[Unidentified],
    reporter: &dyn IdentifyReporter,
    stop: &AtomicBool,
) -> Result<Identification, IndexError> {
    let mut found = Identification::default();
    let summary = &mut found.summary;
    let mut by_hash: HashMap<String, Vec<&Unidentified>> = HashMap::new();
    let mut order = Vec::new();
    for file in files {
        let paths = by_hash.entry(file.sha256.clone()).or_default();
        if paths.is_empty() {
            order.push(file.sha256.clone());
        }
        paths.push(file);
    }
    let mut for_autov3: Vec<&Unidentified> = Vec::new();
    // Once a lookup has failed past the retry policy, Civitai is down, limiting us or
    // unreachable: the rest are left pending instead of each waiting out the same retries.
    let mut failing: Option<String> = None;
    for batch in order.chunks(SHA256_BATCH) {
        if stop.load(Ordering::Relaxed) {
            summary.stopped = true;
            return Ok(found);
        }
        if let Some(reason) = &failing {
            let not_asked = HashMatch::Pending {
                reason: not_asked(reason),
            };
            let done = batch
                .iter()
                .flat_map(|hash| by_hash.get(hash).map(Vec::as_slice).unwrap_or_default())
                .map(|file| outcome_of(file, &not_asked, MatchedBy::Sha256, &HashMap::new()))
                .collect();
            settle(index, done, reporter, summary)?;
            continue;
        }
        let answers = api.lookup_sha256(batch).await;
        failing = answers.failed.first().map(|f| f.error.to_string());
        let versions: HashMap<u64, Arc<WithRaw<ModelVersion>>> = answers
            .versions
            .iter()
            .map(|v| (v.value.id, Arc::new(v.clone())))
            .collect();
        let outcomes = match_hashes(batch, &answers, |_| None);
        let mut done = Vec::new();
        for (hash, outcome) in batch.iter().zip(outcomes) {
            let paths = by_hash.get(hash).map(Vec::as_slice).unwrap_or_default();
            for &file in paths {
                if outcome == HashMatch::Unmatched && file.autov3.is_some() {
                    for_autov3.push(file);
                } else {
                    let outcome = preferring_sidecar(&outcome, &file.path);
                    done.push(outcome_of(file, &outcome, MatchedBy::Sha256, &versions));
                }
            }
        }
        settle(index, done, reporter, summary)?;
        found.versions.extend(versions);
    }
    for file in for_autov3 {
        if stop.load(Ordering::Relaxed) {
            summary.stopped = true;
            return Ok(found);
        }
        let Some(autov3) = &file.autov3 else { continue };
        if let Some(reason) = &failing {
            let not_asked = HashMatch::Pending {
                reason: not_asked(reason),
            };
            let done = vec![outcome_of(
                file,
                &not_asked,
                MatchedBy::Autov3,
                &HashMap::new(),
            )];
            settle(index, done, reporter, summary)?;
            continue;
        }
        let answer = api.version_by_hash(autov3).await;
        let outcome = match_single(autov3, &answer);
        if let HashMatch::Pending { reason } = &outcome {
            failing = Some(reason.clone());
        }
        let versions: HashMap<u64, Arc<WithRaw<ModelVersion>>> = answer
            .ok()
            .flatten()
            .map(|v| (v.value.id, Arc::new(v)))
            .into_iter()
            .collect();
        settle(
            index,
            vec![outcome_of(file, &outcome, MatchedBy::Autov3, &versions)],
            reporter,
            summary,
        )?;
        found.versions.extend(versions);
    }
    // A stop during the last lookup failed it (pending); the caller must still hear of it.
    found.summary.stopped |= stop.load(Ordering::Relaxed);
    Ok(found)
}

/// Why a file was not asked about after an earlier lookup failed.
fn not_asked(reason: &str) -> String {
    format!("not asked after an earlier lookup failed ({reason})")
}

/// `outcome` with the version the sidecar beside `path` names chosen, when it is a candidate:
/// each copy of the same bytes keeps the version its own sidecar says it is.
fn preferring_sidecar(outcome: &HashMatch, path: &Path) -> HashMatch {
    if let HashMatch::Matched { candidates, .. } = outcome
        && let Some(named) = sidecar_version(path)
        && let Some(chosen) = candidates.iter().find(|c| c.version_id == named)
    {
        return HashMatch::Matched {
            chosen: *chosen,
            candidates: candidates.clone(),
        };
    }
    outcome.clone()
}

/// Commit `done`, then report and count it.
fn settle(
    index: &mut Index,
    done: Vec<(Learnt, Identified)>,
    reporter: &dyn IdentifyReporter,
    summary: &mut IdentifySummary,
) -> Result<(), IndexError> {
    let learnt: Vec<Learnt> = done.iter().map(|(l, _)| l.clone()).collect();
    index.record(&learnt)?;
    for (_, identified) in done {
        summary.asked += 1;
        summary.count(&identified.identity);
        summary.count_reason(identified.reason.as_ref());
        reporter.on_identified(&identified);
    }
    Ok(())
}

fn outcome_of(
    file: &Unidentified,
    outcome: &HashMatch,
    by: MatchedBy,
    versions: &HashMap<u64, Arc<WithRaw<ModelVersion>>>,
) -> (Learnt, Identified) {
    let (identity, reason, version) = match outcome {
        HashMatch::Matched { chosen, .. } => {
            let version = versions.get(&chosen.version_id).cloned();
            (identity_of(chosen, by, version.as_deref()), None, version)
        }
        HashMatch::Unmatched => (
            Identity {
                status: MatchStatus::Unmatched,
                ..Identity::default()
            },
            None,
            None,
        ),
        HashMatch::Pending { reason } => (Identity::default(), Some(reason.clone()), None),
    };
    let learnt = Learnt {
        path: file.path.clone(),
        sha256: file.sha256.clone(),
        identity: identity.clone(),
    };
    let identified = Identified {
        path: file.path.clone(),
        identity,
        reason,
        version,
    };
    (learnt, identified)
}

/// The identity of a matched file, with the names the version answer carries.
pub fn identity_of(
    chosen: &FileRef,
    by: MatchedBy,
    version: Option<&WithRaw<ModelVersion>>,
) -> Identity {
    let version = version.map(|v| &v.value);
    Identity {
        status: MatchStatus::Matched,
        matched_by: Some(by),
        model_id: chosen.model_id.or(version.and_then(|v| v.model_id)),
        version_id: Some(chosen.version_id),
        file_id: Some(chosen.file_id),
        model_name: version.and_then(|v| v.model.as_ref()?.name.clone()),
        version_name: version.map(|v| v.name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_copy_keeps_the_version_its_own_sidecar_names() {
        let dir = tempfile::tempdir().unwrap();
        let (named, plain) = (dir.path().join("a.pt"), dir.path().join("b.pt"));
        std::fs::write(dir.path().join("a.civitai.info"), r#"{"id": 11}"#).unwrap();
        let at = |version_id| FileRef {
            version_id,
            file_id: version_id * 10,
            model_id: Some(1),
        };
        let both = HashMatch::Matched {
            chosen: at(10),
            candidates: vec![at(10), at(11)],
        };
        let chosen = |outcome: HashMatch| match outcome {
            HashMatch::Matched { chosen, .. } => chosen.version_id,
            other => panic!("{other:?}"),
        };
        assert_eq!(chosen(preferring_sidecar(&both, &named)), 11);
        assert_eq!(chosen(preferring_sidecar(&both, &plain)), 10);
        std::fs::write(dir.path().join("b.civitai.info"), r#"{"id": 99}"#).unwrap();
        assert_eq!(
            chosen(preferring_sidecar(&both, &plain)),
            10,
            "a version that is no candidate changes nothing"
        );
    }

    #[test]
    fn a_sidecar_names_its_version_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("a.safetensors");
        assert_eq!(sidecar_version(&model), None);
        std::fs::write(
            dir.path().join("a.civitai.info"),
            r#"{"id": 42, "modelId": 7}"#,
        )
        .unwrap();
        assert_eq!(sidecar_version(&model), Some(42));
        std::fs::write(dir.path().join("a.civitai.info"), "{}").unwrap();
        assert_eq!(
            sidecar_version(&model),
            None,
            "CH's 'not on Civitai' marker"
        );
    }
}
