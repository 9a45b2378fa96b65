//! Identification from the sidecars other tools left beside the files: Civitai Helper's (and
//! our) `<stem>.civitai.info` and ComfyUI-Lora-Manager's `<stem>.metadata.json` already say
//! which Civitai version a file is. That is what makes `scan --no-remote` identify at all, and
//! it spares a remote scan the lookups of a library those tools annotated.
//!
//! A sidecar is trusted only when it lists a SHA-256 for the file and that hash is the file's:
//! sidecars are copied and renamed along with the wrong files, and a file edited since its
//! sidecar was written is not the published one any more. A sidecar without a hash for the file
//! claims nothing (`unverified-sidecar`), one with another hash neither (`sidecar-mismatch`); the
//! file stays as it was, for Civitai to answer when the scan may ask.

use std::path::{Path, PathBuf};

use civitai_dl_engine::sidecar::SidecarKind;
use serde::Deserialize;

use crate::identify::{Identified, IdentifyReporter, IdentifySummary};
use crate::index::{Identity, Index, IndexError, Learnt, MatchStatus, MatchedBy, Unidentified};
use crate::verify::{Listing, find_listing, sidecar_path};

/// What the sidecars beside one file say it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SidecarClaim {
    /// A sidecar names the file's version and lists the file's own SHA-256.
    Verified(Identity),
    /// No sidecar could identify the file; why, when one tried.
    Unproven(Option<String>),
}

/// Read the sidecars of `model`, whose SHA-256 is `sha256` and size `size`: `.civitai.info`
/// first (the version JSON itself), then `.metadata.json`.
pub fn claim(model: &Path, sha256: &str, size: Option<u64>) -> SidecarClaim {
    let from_info = civitai_info_claim(model, sha256, size);
    if matches!(from_info, SidecarClaim::Verified(_)) {
        return from_info;
    }
    match lm_metadata_claim(model, sha256) {
        SidecarClaim::Unproven(None) => from_info,
        from_metadata => from_metadata,
    }
}

fn civitai_info_claim(model: &Path, sha256: &str, size: Option<u64>) -> SidecarClaim {
    let path = sidecar_path(model);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return SidecarClaim::Unproven(None);
    };
    let name = model.file_name().unwrap_or_default().to_string_lossy();
    match find_listing(&text, &name, size) {
        Ok(Some(listing)) if listing.version_id.is_some() => {
            let published = listing.expected.sha256.clone();
            verified_or_why(&path, published.as_deref(), sha256, || identity(listing))
        }
        // `{}` is Civitai Helper's "not on Civitai" marker: it names nothing.
        Ok(_) | Err(_) => SidecarClaim::Unproven(None),
    }
}

/// The part of a LoRA Manager record that identifies the file.
#[derive(Deserialize)]
struct LmMetadata {
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    model_name: Option<String>,
    #[serde(default)]
    civitai: Option<LmCivitai>,
}

#[derive(Deserialize)]
struct LmCivitai {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, rename = "modelId")]
    model_id: Option<u64>,
    #[serde(default)]
    name: Option<String>,
}

fn lm_metadata_claim(model: &Path, sha256: &str) -> SidecarClaim {
    let path = SidecarKind::LmMetadata.path(model);
    let Some(record) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str::<LmMetadata>(&text).ok())
    else {
        return SidecarClaim::Unproven(None);
    };
    let Some(civitai) = record.civitai.filter(|c| c.id.is_some()) else {
        return SidecarClaim::Unproven(None);
    };
    let published = record.sha256.filter(|s| !s.is_empty());
    verified_or_why(&path, published.as_deref(), sha256, || Identity {
        status: MatchStatus::Matched,
        matched_by: Some(MatchedBy::Sidecar),
        model_id: civitai.model_id,
        version_id: civitai.id,
        file_id: None,
        model_name: record.model_name,
        version_name: civitai.name,
    })
}

/// The identity when the sidecar at `path` publishes the file's own hash, else why not.
fn verified_or_why(
    path: &Path,
    published: Option<&str>,
    sha256: &str,
    identity: impl FnOnce() -> Identity,
) -> SidecarClaim {
    match published {
        Some(published) if published.eq_ignore_ascii_case(sha256) => {
            SidecarClaim::Verified(identity())
        }
        Some(_) => SidecarClaim::Unproven(Some(format!(
            "sidecar-mismatch: {} lists another SHA-256 for this file; it is not the file the \
             sidecar describes",
            path.display()
        ))),
        None => SidecarClaim::Unproven(Some(format!(
            "unverified-sidecar: {} names a version but lists no SHA-256 for this file, so it \
             cannot be checked",
            path.display()
        ))),
    }
}

fn identity(listing: Listing) -> Identity {
    Identity {
        status: MatchStatus::Matched,
        matched_by: Some(MatchedBy::Sidecar),
        model_id: listing.model_id,
        version_id: listing.version_id,
        file_id: listing.file_id,
        model_name: listing.model_name,
        version_name: listing.version_name,
    }
}

/// What identification from sidecars settled and left.
#[derive(Debug, Default)]
pub struct FromSidecars {
    /// The counts (`asked`: files whose sidecars were read).
    pub summary: IdentifySummary,
    /// Files no sidecar proved, with why when a sidecar tried: for Civitai, or pending offline.
    pub unproven: Vec<(Unidentified, Option<String>)>,
}

/// Match every file of `files` a sidecar proves, recording them in `index` in one transaction
/// and reporting each; the rest come back.
pub fn identify_from_sidecars(
    index: &mut Index,
    files: Vec<Unidentified>,
    reporter: &dyn IdentifyReporter,
) -> Result<FromSidecars, IndexError> {
    let mut found = FromSidecars::default();
    let mut learnt = Vec::new();
    let mut matched = Vec::new();
    for file in files {
        let size = std::fs::metadata(&file.path).ok().map(|m| m.len());
        found.summary.asked += 1;
        match claim(&file.path, &file.sha256, size) {
            SidecarClaim::Verified(identity) => {
                learnt.push(Learnt {
                    path: file.path.clone(),
                    sha256: file.sha256.clone(),
                    identity: identity.clone(),
                });
                matched.push(identified(file.path, identity, None));
            }
            SidecarClaim::Unproven(why) => found.unproven.push((file, why)),
        }
    }
    index.record(&learnt)?;
    found.summary.matched = matched.len() as u64;
    for file in &matched {
        reporter.on_identified(file);
    }
    Ok(found)
}

/// Report the files left unproven offline: pending, with why when a sidecar tried. The count
/// is of the files whose sidecar tried, `failure` the first reason.
pub fn report_unproven(
    unproven: &[(Unidentified, Option<String>)],
    reporter: &dyn IdentifyReporter,
) -> IdentifySummary {
    let mut summary = IdentifySummary::default();
    for (file, why) in unproven {
        if why.is_some() {
            summary.pending += 1;
        }
        if summary.failure.is_none() {
            summary.failure.clone_from(why);
        }
        reporter.on_identified(&identified(
            file.path.clone(),
            Identity::default(),
            why.clone(),
        ));
    }
    summary
}

fn identified(path: PathBuf, identity: Identity, reason: Option<String>) -> Identified {
    Identified {
        path,
        identity,
        reason,
        version: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789";

    fn info(files: &str) -> String {
        format!(
            r#"{{"id": 70, "modelId": 7, "name": "v1.0", "model": {{"name": "Ink"}},
                "files": [{files}]}}"#
        )
    }

    fn claim_of(dir: &Path, sidecar: &str, text: &str) -> SidecarClaim {
        std::fs::write(dir.join(sidecar), text).unwrap();
        let found = claim(&dir.join("ink.safetensors"), SHA, Some(4096));
        std::fs::remove_file(dir.join(sidecar)).unwrap();
        found
    }

    fn why(claim: SidecarClaim) -> String {
        match claim {
            SidecarClaim::Unproven(Some(why)) => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_civitai_info_proves_a_file_only_with_the_files_own_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let with_hash = info(&format!(
            r#"{{"id": 700, "name": "ink.safetensors", "hashes": {{"SHA256": "{}"}}}}"#,
            SHA.to_lowercase()
        ));
        assert_eq!(
            claim_of(dir.path(), "ink.civitai.info", &with_hash),
            SidecarClaim::Verified(Identity {
                status: MatchStatus::Matched,
                matched_by: Some(MatchedBy::Sidecar),
                model_id: Some(7),
                version_id: Some(70),
                file_id: Some(700),
                model_name: Some("Ink".into()),
                version_name: Some("v1.0".into()),
            })
        );
        let no_hash = info(r#"{"id": 700, "name": "ink.safetensors", "hashes": {}}"#);
        assert!(
            why(claim_of(dir.path(), "ink.civitai.info", &no_hash))
                .starts_with("unverified-sidecar: ")
        );
        let other = info(r#"{"id": 700, "name": "ink.safetensors", "hashes": {"SHA256": "00"}}"#);
        assert!(
            why(claim_of(dir.path(), "ink.civitai.info", &other)).starts_with("sidecar-mismatch: ")
        );
        assert_eq!(
            claim_of(dir.path(), "ink.civitai.info", "{}"),
            SidecarClaim::Unproven(None),
            "Civitai Helper's 'not on Civitai' marker names nothing"
        );
        assert_eq!(
            claim(&dir.path().join("ink.safetensors"), SHA, None),
            SidecarClaim::Unproven(None)
        );
    }

    #[test]
    fn a_lora_manager_record_proves_a_file_by_its_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let record = |sha: &str| {
            format!(
                r#"{{"sha256": "{sha}", "model_name": "Ink",
                    "civitai": {{"id": 70, "modelId": 7, "name": "v1.0"}}}}"#
            )
        };
        let SidecarClaim::Verified(found) = claim_of(
            dir.path(),
            "ink.metadata.json",
            &record(&SHA.to_lowercase()),
        ) else {
            panic!("not verified");
        };
        assert_eq!(
            (found.model_id, found.version_id, found.matched_by),
            (Some(7), Some(70), Some(MatchedBy::Sidecar))
        );
        assert!(why(claim_of(dir.path(), "ink.metadata.json", &record(""))).contains("unverified"));
        assert!(why(claim_of(dir.path(), "ink.metadata.json", &record("11"))).contains("mismatch"));
        assert_eq!(
            claim_of(dir.path(), "ink.metadata.json", r#"{"sha256": "x"}"#),
            SidecarClaim::Unproven(None),
            "a record of a file not from Civitai"
        );
    }
}
