//! Identifying local files on Civitai by their hashes.
//!
//! A library of thousands of files cannot be identified one request per file (the tools that do
//! take hours), and SHA-256 is the only kind Civitai looks up in batches: `POST
//! /api/v1/model-versions/by-hash` takes up to 100 and answers one full version per matching
//! file, in no particular order and without saying which hash each element answers. So the
//! answer is mapped back through `files[].hashes.SHA256` ([`match_hashes`]), keeping every
//! candidate when the same bytes were uploaded to several versions. Servers without that route
//! are asked through `POST /by-hash/ids` and one `GET /model-versions/{id}` per version instead.
//! Other hash kinds (AutoV3, which survives a rewritten safetensors header) go one by one to
//! `GET /by-hash/{hash}` ([`ApiClient::version_by_hash`], [`match_single`]).
//!
//! A hash is unmatched only when a successful answer left it out. A request that failed (429,
//! 5xx, a maintenance page, the network) says nothing about the file, so its hashes are
//! [`HashMatch::Pending`], to be asked again later, never reported as unknown to Civitai.
//! What this relies on is in `docs/civitai-api.md#by-hash`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;

use serde::Deserialize;
use serde_json::Value;

use crate::civitai::wire::{ModelVersion, VersionIdByHash};
use crate::civitai::{ApiClient, ApiError, WithRaw};

#[cfg(test)]
mod against_fake;

/// SHA-256s one `POST /by-hash` carries: the server's maximum.
pub const SHA256_BATCH: usize = 100;
/// SHA-256s one `POST /by-hash/ids` carries. Today's server takes 10,000 and older ones 100; 100
/// works on both, and the `GET /model-versions/{id}` that follow each answer cost more requests
/// than the batches anyway.
const IDS_BATCH: usize = 100;
/// Hex digits of a SHA-256.
const SHA256_HEX_LEN: usize = 64;

/// What [`ApiClient::lookup_sha256`] learnt.
#[derive(Debug, Default)]
pub struct Sha256Answers {
    /// The versions of every batch Civitai answered: one per matching file (so a version can
    /// appear more than once), in no order.
    pub versions: Vec<WithRaw<ModelVersion>>,
    /// The batches it did not answer.
    pub failed: Vec<FailedBatch>,
}

/// A batch of SHA-256s whose lookup failed: its hashes are pending.
#[derive(Debug)]
pub struct FailedBatch {
    /// The hashes asked for, uppercase.
    pub hashes: Vec<String>,
    /// Why, after the retry policy gave up.
    pub error: ApiError,
}

/// One file on Civitai a hash led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileRef {
    /// The version holding the file (first, so candidates sort by version id).
    pub version_id: u64,
    /// The file.
    pub file_id: u64,
    /// The version's model, when the answer named it.
    pub model_id: Option<u64>,
}

/// Where one hash led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashMatch {
    /// Civitai has this file.
    Matched {
        /// The candidate to use: the caller's preferred version if it is among them, else the
        /// lowest version id.
        chosen: FileRef,
        /// Every file with these bytes, by version id (`chosen` included): the same file can
        /// be uploaded to several versions.
        candidates: Vec<FileRef>,
    },
    /// A successful answer did not contain the hash: Civitai knows no file with it.
    Unmatched,
    /// The lookup failed (429, 5xx, an HTML page, the network): ask again later.
    Pending {
        /// The error, for the user.
        reason: String,
    },
}

/// Map a batch answer back to the hashes asked for, in their order (one outcome per element of
/// `asked`). The answer says nothing about which element answers which hash, so files are
/// matched by `files[].hashes.SHA256`, without regard to case. `preferred(hash)` names the
/// version a caller would rather have for that hash (one a sidecar names), if any.
///
/// A hash that is not 64 hex digits is no file's SHA-256 and is [`HashMatch::Unmatched`];
/// [`ApiClient::lookup_sha256`] does not send it.
pub fn match_hashes(
    asked: &[String],
    answers: &Sha256Answers,
    preferred: impl Fn(&str) -> Option<u64>,
) -> Vec<HashMatch> {
    let mut files: HashMap<String, BTreeSet<FileRef>> = HashMap::new();
    for version in &answers.versions {
        let version = &version.value;
        for file in &version.files {
            if let Some(sha256) = file.sha256() {
                files
                    .entry(sha256.to_ascii_uppercase())
                    .or_default()
                    .insert(FileRef {
                        version_id: version.id,
                        file_id: file.id,
                        model_id: version.model_id,
                    });
            }
        }
    }
    let pending: HashMap<&str, String> = answers
        .failed
        .iter()
        .flat_map(|batch| {
            let reason = batch.error.to_string();
            batch
                .hashes
                .iter()
                .map(move |hash| (hash.as_str(), reason.clone()))
        })
        .collect();
    asked
        .iter()
        .map(|hash| {
            let key = normalise(hash);
            if let Some(found) = files.get(&key) {
                let candidates: Vec<FileRef> = found.iter().copied().collect();
                choose(candidates, preferred(hash))
            } else if let Some(reason) = pending.get(key.as_str()) {
                HashMatch::Pending {
                    reason: reason.clone(),
                }
            } else {
                HashMatch::Unmatched
            }
        })
        .collect()
}

/// The outcome of one [`ApiClient::version_by_hash`] lookup of `hash` (any kind). The file is
/// the version's file carrying that hash; should none carry it visibly (Civitai matched a hash
/// its answer leaves out), the version's preferred file stands in.
pub fn match_single(
    hash: &str,
    answer: &Result<Option<WithRaw<ModelVersion>>, ApiError>,
) -> HashMatch {
    let version = match answer {
        Ok(Some(version)) => &version.value,
        Ok(None) => return HashMatch::Unmatched,
        Err(error) => {
            return HashMatch::Pending {
                reason: error.to_string(),
            };
        }
    };
    let key = normalise(hash);
    let file = version
        .files
        .iter()
        .find(|file| {
            file.hashes
                .all()
                .any(|h| h.trim().eq_ignore_ascii_case(&key))
        })
        .or_else(|| version.preferred_file());
    match file {
        Some(file) => {
            let found = FileRef {
                version_id: version.id,
                file_id: file.id,
                model_id: version.model_id,
            };
            choose(vec![found], None)
        }
        // A version without files (an archived model) holds nothing to match a local file to.
        None => HashMatch::Unmatched,
    }
}

/// `candidates` sorted by version id, with the preferred version chosen if present.
fn choose(candidates: Vec<FileRef>, preferred: Option<u64>) -> HashMatch {
    let chosen = preferred
        .and_then(|id| candidates.iter().find(|c| c.version_id == id))
        .or(candidates.first())
        .copied();
    match chosen {
        Some(chosen) => HashMatch::Matched { chosen, candidates },
        None => HashMatch::Unmatched,
    }
}

fn normalise(hash: &str) -> String {
    hash.trim().to_ascii_uppercase()
}

fn is_sha256(hash: &str) -> bool {
    hash.len() == SHA256_HEX_LEN && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether the host answered as one without the batch route: 404 (unknown route), 405 (no POST
/// there) or 400 (a body it cannot read). A batch never 404s for misses: they are just absent.
fn refuses_route(error: &ApiError) -> bool {
    matches!(
        error,
        ApiError::NotFound { .. }
            | ApiError::Rejected {
                status: 400 | 405,
                ..
            }
    )
}

impl ApiClient {
    /// `GET /api/v1/model-versions/by-hash/{hash}`: the version holding a file with this hash of
    /// any kind (SHA256, AutoV2, AutoV3, BLAKE3, …, in any case), or `None` when Civitai knows
    /// none (404). Identical files in several versions give the earliest published one.
    pub async fn version_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<WithRaw<ModelVersion>>, ApiError> {
        let path = format!(
            "/api/v1/model-versions/by-hash/{}",
            super::client::encode(&normalise(hash))
        );
        match self.get_json(&path).await {
            Ok(version) => Ok(Some(version)),
            Err(ApiError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The versions holding files with these SHA-256s, asked [`SHA256_BATCH`] at a time (one
    /// request per batch, each through the limiter and the retry policy), or the first error
    /// of a batch Civitai did not answer. [`Self::lookup_sha256`] keeps what the other batches
    /// found.
    pub async fn versions_by_sha256(
        &self,
        hashes: &[String],
    ) -> Result<Vec<WithRaw<ModelVersion>>, ApiError> {
        let answers = self.lookup_sha256(hashes).await;
        match answers.failed.into_iter().next() {
            Some(batch) => Err(batch.error),
            None => Ok(answers.versions),
        }
    }

    /// Look these SHA-256s up [`SHA256_BATCH`] at a time with `POST /by-hash`, keeping the
    /// versions of the batches Civitai answered and the hashes of those it did not. Hashes are
    /// deduplicated without regard to case; strings that are not 64 hex digits are not sent.
    /// When the host answers as one without that route (404, 405, 400), this and every later
    /// lookup go through `POST /by-hash/ids` and `GET /model-versions/{id}` per version.
    pub async fn lookup_sha256(&self, hashes: &[String]) -> Sha256Answers {
        let mut seen = HashSet::new();
        let wanted: Vec<String> = hashes
            .iter()
            .map(|hash| normalise(hash))
            .filter(|hash| is_sha256(hash) && seen.insert(hash.clone()))
            .collect();
        let mut answers = Sha256Answers::default();
        let mut fetched_versions = BTreeSet::new();
        for batch in wanted.chunks(SHA256_BATCH) {
            let result = if self.by_hash_batch_refused.load(Ordering::Relaxed) {
                self.versions_through_ids(batch, &mut fetched_versions)
                    .await
            } else {
                match self.versions_by_batch(batch).await {
                    Err(error) if refuses_route(&error) => {
                        tracing::info!(
                            "this Civitai host has no batch by-hash lookup ({error}); asking \
                             for version ids instead"
                        );
                        self.by_hash_batch_refused.store(true, Ordering::Relaxed);
                        self.versions_through_ids(batch, &mut fetched_versions)
                            .await
                    }
                    other => other,
                }
            };
            match result {
                Ok(versions) => answers.versions.extend(versions),
                Err(error) => answers.failed.push(FailedBatch {
                    hashes: batch.to_vec(),
                    error,
                }),
            }
        }
        answers
    }

    /// One `POST /by-hash` of at most [`SHA256_BATCH`] hashes. An element that is not a
    /// version is skipped with a warning rather than sinking the batch.
    async fn versions_by_batch(
        &self,
        batch: &[String],
    ) -> Result<Vec<WithRaw<ModelVersion>>, ApiError> {
        let body = Value::from(batch).to_string();
        let answer: WithRaw<Vec<Value>> = self
            .post_json("/api/v1/model-versions/by-hash", &body)
            .await?;
        Ok(answer
            .value
            .into_iter()
            .filter_map(|raw| match ModelVersion::deserialize(&raw) {
                Ok(value) => Some(WithRaw { value, raw }),
                Err(error) => {
                    tracing::warn!(
                        "skipped a by-hash answer that is not a version ({error}): {}",
                        crate::http::snippet(&raw.to_string())
                    );
                    None
                }
            })
            .collect())
    }

    /// The fallback for hosts without `POST /by-hash`: the version ids from `POST /by-hash/ids`
    /// (either shape), then each version not fetched earlier in this lookup. A version that is
    /// gone (404) matches nothing; any other failure fails the batch.
    async fn versions_through_ids(
        &self,
        batch: &[String],
        fetched: &mut BTreeSet<u64>,
    ) -> Result<Vec<WithRaw<ModelVersion>>, ApiError> {
        let mut version_ids = BTreeSet::new();
        for part in batch.chunks(IDS_BATCH) {
            let body = Value::from(part).to_string();
            let answer: WithRaw<Vec<Value>> = self
                .post_json("/api/v1/model-versions/by-hash/ids", &body)
                .await?;
            version_ids.extend(
                answer
                    .value
                    .into_iter()
                    .filter_map(|entry| VersionIdByHash::deserialize(entry).ok())
                    .map(|entry| entry.version_id),
            );
        }
        let new_ids: Vec<u64> = version_ids.difference(fetched).copied().collect();
        let mut versions = Vec::new();
        for &id in &new_ids {
            match self.version(id).await {
                Ok(version) => versions.push(version),
                Err(ApiError::NotFound { .. }) => {
                    tracing::debug!("version {id} from by-hash/ids is not public");
                }
                Err(error) => return Err(error),
            }
        }
        // Only once the batch is answered: a failed batch's versions were not kept.
        fetched.extend(new_ids);
        Ok(versions)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn version(raw: Value) -> WithRaw<ModelVersion> {
        WithRaw {
            value: ModelVersion::deserialize(&raw).unwrap(),
            raw,
        }
    }

    /// A SHA-256 made of one repeated hex digit.
    fn sha(digit: char) -> String {
        digit.to_string().repeat(SHA256_HEX_LEN)
    }

    fn at(version_id: u64, file_id: u64, model_id: Option<u64>) -> FileRef {
        FileRef {
            version_id,
            file_id,
            model_id,
        }
    }

    fn matched(chosen: FileRef, candidates: &[FileRef]) -> HashMatch {
        HashMatch::Matched {
            chosen,
            candidates: candidates.to_vec(),
        }
    }

    /// The same bytes (`a`) in versions 30 and 20, listed twice as the batch answer lists one
    /// version per matching file, plus a messy version that must not get in the way.
    fn answers() -> Sha256Answers {
        let thirty = json!({
            "id": 30, "modelId": 3, "unknownField": {"x": 1},
            "files": [
                {"id": 300, "hashes": {"SHA256": sha('a'), "AutoV2": "AAAAAAAAAA"}},
                {"id": 301, "hashes": {"sha256": sha('B')}, "sizeKB": null},
            ],
        });
        Sha256Answers {
            versions: vec![
                version(thirty.clone()),
                version(json!({"id": 20, "modelId": null,
                               "files": [{"id": 200, "hashes": {"SHA256": sha('A')}}]})),
                version(thirty),
                version(json!({"id": 40, "files": [
                    {"id": 400, "hashes": null}, {"id": 401, "hashes": {}},
                    {"id": 402, "hashes": {"SHA256": "A5F58EB1C3..."}}, {"id": 403}
                ], "images": null})),
            ],
            failed: Vec::new(),
        }
    }

    #[test]
    fn answers_map_back_through_the_files_sha256_in_any_case() {
        let asked = [sha('A'), sha('b'), format!(" {} ", sha('a')), sha('c')];
        let both = [at(20, 200, None), at(30, 300, Some(3))];
        assert_eq!(
            match_hashes(&asked, &answers(), |_| None),
            [
                matched(both[0], &both),
                matched(at(30, 301, Some(3)), &[at(30, 301, Some(3))]),
                matched(both[0], &both),
                HashMatch::Unmatched,
            ]
        );
    }

    #[test]
    fn the_preferred_version_wins_only_when_it_is_a_candidate() {
        let asked = [sha('a'), sha('A')];
        let both = [at(20, 200, None), at(30, 300, Some(3))];
        let prefer = |hash: &str| match hash {
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" => Some(30),
            _ => Some(99),
        };
        assert_eq!(
            match_hashes(&asked, &answers(), prefer),
            [matched(both[1], &both), matched(both[0], &both)]
        );
    }

    #[test]
    fn hashes_of_failed_batches_are_pending_never_unmatched() {
        let mut answers = answers();
        answers.failed.push(FailedBatch {
            hashes: vec![sha('C'), sha('A')],
            error: ApiError::RateLimited { retry_after: None },
        });
        answers.failed.push(FailedBatch {
            hashes: vec![sha('D')],
            error: ApiError::NotJson {
                status: 200,
                content_type: "text/html".into(),
                snippet: "We're adjusting a few things".into(),
            },
        });
        let asked = [
            sha('c'),
            sha('a'),
            sha('d'),
            sha('e'),
            "not a hash".to_owned(),
        ];
        let outcomes = match_hashes(&asked, &answers, |_| None);
        let HashMatch::Pending { reason } = &outcomes[0] else {
            panic!("{:?}", outcomes[0]);
        };
        assert!(reason.contains("429"), "{reason}");
        assert!(
            matches!(outcomes[1], HashMatch::Matched { .. }),
            "found by another batch"
        );
        assert!(
            matches!(&outcomes[2], HashMatch::Pending { reason } if reason.contains("text/html")),
            "{:?}",
            outcomes[2]
        );
        assert_eq!(outcomes[3..], [HashMatch::Unmatched, HashMatch::Unmatched]);
    }

    #[test]
    fn a_single_lookup_matches_the_file_carrying_that_hash_of_any_kind() {
        let found = version(json!({"id": 7, "modelId": 6, "files": [
            {"id": 70, "primary": true, "hashes": {"SHA256": sha('1')}},
            {"id": 71, "hashes": {"AutoV3": "ABCDEF012345", "BLAKE3": sha('2')}},
        ]}));
        let answer = Ok(Some(found.clone()));
        let cases = [
            ("abcdef012345", at(7, 71, Some(6))),
            (&sha('2'), at(7, 71, Some(6))),
            (&sha('1'), at(7, 70, Some(6))),
            // Civitai matched a hash its answer does not show: the primary file stands in.
            ("123456789012", at(7, 70, Some(6))),
        ];
        for (hash, expected) in cases {
            assert_eq!(
                match_single(hash, &answer),
                matched(expected, &[expected]),
                "{hash}"
            );
        }
        assert_eq!(match_single("abc", &Ok(None)), HashMatch::Unmatched);
        let archived = Ok(Some(version(json!({"id": 8, "files": []}))));
        assert_eq!(match_single("abc", &archived), HashMatch::Unmatched);
        let failed = Err(ApiError::Server {
            status: 502,
            message: "Bad gateway".into(),
            retry_after: None,
        });
        assert!(matches!(
            match_single("abc", &failed),
            HashMatch::Pending { reason } if reason.contains("502")
        ));
    }

    #[test]
    fn only_an_unknown_route_counts_as_refused() {
        let rejected = |status| ApiError::Rejected {
            status,
            message: String::new(),
        };
        let cases = [
            (
                ApiError::NotFound {
                    message: "Not found".into(),
                },
                true,
            ),
            (rejected(400), true),
            (rejected(405), true),
            (rejected(422), false),
            (ApiError::RateLimited { retry_after: None }, false),
            (
                ApiError::Decode {
                    message: String::new(),
                },
                false,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(refuses_route(&error), expected, "{error:?}");
        }
    }
}
