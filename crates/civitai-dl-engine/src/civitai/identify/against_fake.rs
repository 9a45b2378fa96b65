//! The lookups against the fake Civitai: batching, duplicates, failures that stay pending, the
//! fallback for hosts without the batch route, and AutoV3 for a header-edited file.

use std::sync::Arc;
use std::time::Duration;

use civitai_dl_fake::{
    BatchFault, Catalog, FakeCivitai, FakeFile, FakeModel, FakeVersion, FileBytes, FileContent,
    Knobs,
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::civitai::ApiOptions;
use crate::http::limiter::RateLimiter;
use crate::http::retry::RetryPolicy;
use crate::observe::metrics::Metrics;

const BATCH_ROUTE: &str = "POST /api/v1/model-versions/by-hash";
const IDS_ROUTE: &str = "POST /api/v1/model-versions/by-hash/ids";
const VERSION_ROUTE: &str = "GET /api/v1/model-versions/{id}";

/// A client of `api_url` with one quick retry, so a failure is seen twice before it counts.
fn client_of(api_url: String, api_key: Option<&str>) -> ApiClient {
    ApiClient::new(
        ApiOptions {
            hosts: vec![api_url],
            api_key: api_key.map(str::to_owned),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            connections: 1,
        },
        Arc::new(RateLimiter::new(1000.0, 10)),
        RetryPolicy::new(vec![Duration::from_millis(10)], 0.0),
        CancellationToken::new(),
        Arc::new(Metrics::new()),
    )
    .unwrap()
}

async fn start(catalog: Catalog, knobs: Knobs) -> (FakeCivitai, ApiClient) {
    let server = FakeCivitai::start(catalog, knobs).await.unwrap();
    let client = client_of(server.api_url(), None);
    (server, client)
}

/// Model 1 with versions 11 and 10 holding the same bytes (files 110 and 100), and model 2
/// with a safetensors file (200) and another file (201) in version 20.
fn twins_and_tensors() -> Catalog {
    let twin = |id| FakeFile {
        seed: 5,
        ..FakeFile::new(id, "twin.safetensors", 3_000)
    };
    let tensors = FakeFile {
        content: FileContent::Safetensors {
            title: "Tensors".to_owned(),
        },
        ..FakeFile::new(200, "tensors.safetensors", 50_000)
    };
    Catalog {
        models: vec![
            FakeModel::new(
                1,
                "Twins",
                "LORA",
                vec![
                    FakeVersion::new(11, "v2", vec![twin(110)]),
                    FakeVersion::new(10, "v1", vec![twin(100)]),
                ],
            ),
            FakeModel::new(
                2,
                "Tensors",
                "LORA",
                vec![FakeVersion::new(
                    20,
                    "v1",
                    vec![
                        tensors,
                        FakeFile {
                            primary: false,
                            ..FakeFile::new(201, "config.yaml", 700)
                        },
                    ],
                )],
            ),
        ],
        valid_keys: Vec::new(),
    }
}

fn sha_of(server: &FakeCivitai, file_id: u64) -> String {
    server.sha256_of(file_id).unwrap().to_owned()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn chosen(outcome: &HashMatch) -> Option<FileRef> {
    match outcome {
        HashMatch::Matched { chosen, .. } => Some(*chosen),
        _ => None,
    }
}

#[tokio::test]
async fn two_hundred_fifty_hashes_take_three_posts_and_every_one_is_found() {
    let server = FakeCivitai::start(Catalog::uniform(250, 1_000), Knobs::default())
        .await
        .unwrap();
    let client = client_of(server.api_url(), Some("test-key"));
    let asked: Vec<String> = (0..250)
        .map(|i| {
            let sha = sha_of(&server, 3000 + i);
            // Case does not matter, and a repeat is asked for once.
            if i % 2 == 0 { sha.to_lowercase() } else { sha }
        })
        .chain([sha_of(&server, 3000)])
        .collect();
    let answers = client.lookup_sha256(&asked).await;
    assert!(answers.failed.is_empty(), "{:?}", answers.failed);
    assert_eq!(answers.versions.len(), 250);
    let outcomes = match_hashes(&asked, &answers, |_| None);
    for (i, outcome) in outcomes.iter().take(250).enumerate() {
        let i = i as u64;
        assert_eq!(
            chosen(outcome),
            Some(FileRef {
                version_id: 2000 + i,
                file_id: 3000 + i,
                model_id: Some(1000 + i),
            })
        );
    }
    assert_eq!(outcomes[250], outcomes[0]);
    let stats = server.stats();
    assert_eq!(stats.requests_to(BATCH_ROUTE), 3);
    assert_eq!(stats.api_requests(), 3, "nothing but the batches");
    // The key goes to the API host, where it belongs, and nowhere else.
    assert_eq!((stats.auth_at_api(), stats.auth_at_storage()), (3, 0));
}

#[tokio::test]
async fn identical_bytes_in_two_versions_choose_the_lowest_version_unless_told_otherwise() {
    let (server, client) = start(twins_and_tensors(), Knobs::default()).await;
    let asked = vec![sha_of(&server, 100)];
    let answers = client.lookup_sha256(&asked).await;
    let both = vec![
        FileRef {
            version_id: 10,
            file_id: 100,
            model_id: Some(1),
        },
        FileRef {
            version_id: 11,
            file_id: 110,
            model_id: Some(1),
        },
    ];
    assert_eq!(
        match_hashes(&asked, &answers, |_| None),
        [HashMatch::Matched {
            chosen: both[0],
            candidates: both.clone(),
        }]
    );
    assert_eq!(
        match_hashes(&asked, &answers, |_| Some(11)),
        [HashMatch::Matched {
            chosen: both[1],
            candidates: both,
        }]
    );
    let versions = client.versions_by_sha256(&asked).await.unwrap();
    let mut ids: Vec<u64> = versions.iter().map(|v| v.value.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [10, 11], "one version per matching file");
    assert_eq!(
        versions[0].raw["files"][0]["id"],
        versions[0].value.files[0].id
    );
}

#[tokio::test]
async fn a_throttled_failing_or_html_batch_leaves_its_hashes_pending() {
    for fault in [
        BatchFault::TooManyRequests,
        BatchFault::ServerError,
        BatchFault::MaintenancePage,
    ] {
        let knobs = Knobs {
            by_hash_batch_fault: Some(fault),
            retry_after_secs: 0,
            ..Knobs::default()
        };
        let (server, client) = start(twins_and_tensors(), knobs).await;
        let asked = vec![sha_of(&server, 200), "0".repeat(64)];
        let answers = client.lookup_sha256(&asked).await;
        let outcomes = match_hashes(&asked, &answers, |_| None);
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, HashMatch::Pending { .. })),
            "{fault:?}: {outcomes:?}"
        );
        assert!(client.versions_by_sha256(&asked).await.is_err());
        let stats = server.stats();
        assert_eq!(stats.requests_to(BATCH_ROUTE), 4, "{fault:?}: retried");
        assert_eq!(stats.requests_to(IDS_ROUTE), 0, "{fault:?}: no fallback");

        // A fault that passes within the retries costs nothing but the retry.
        server.set_knobs(Knobs {
            by_hash_batch_fault: Some(fault),
            by_hash_batch_faulty: 1,
            retry_after_secs: 0,
            ..Knobs::default()
        });
        let answers = client.lookup_sha256(&asked).await;
        assert_eq!(
            match_hashes(&asked, &answers, |_| None)
                .iter()
                .map(chosen)
                .collect::<Vec<_>>(),
            [
                Some(FileRef {
                    version_id: 20,
                    file_id: 200,
                    model_id: Some(2),
                }),
                None,
            ],
            "{fault:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_host_leaves_hashes_pending() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = client_of(url, None);
    let asked = vec!["A".repeat(64)];
    let answers = client.lookup_sha256(&asked).await;
    assert!(matches!(
        match_hashes(&asked, &answers, |_| None)[..],
        [HashMatch::Pending { .. }]
    ));
    let single = client.version_by_hash("ABCDEF012345").await;
    assert!(matches!(
        match_single("ABCDEF012345", &single),
        HashMatch::Pending { .. }
    ));
}

#[tokio::test]
async fn a_host_without_the_batch_route_is_asked_through_ids_in_either_shape() {
    for legacy in [false, true] {
        let knobs = Knobs {
            by_hash_batch_fault: Some(BatchFault::Absent),
            by_hash_ids_legacy: legacy,
            ..Knobs::default()
        };
        let (server, client) = start(twins_and_tensors(), knobs).await;
        let asked = vec![sha_of(&server, 110), sha_of(&server, 200), "1".repeat(64)];
        let answers = client.lookup_sha256(&asked).await;
        assert!(answers.failed.is_empty(), "{:?}", answers.failed);
        let found: Vec<Option<u64>> = match_hashes(&asked, &answers, |_| None)
            .iter()
            .map(|o| chosen(o).map(|f| f.file_id))
            .collect();
        assert_eq!(found, [Some(100), Some(200), None], "legacy {legacy}");
        let stats = server.stats();
        assert_eq!(
            (
                stats.requests_to(BATCH_ROUTE),
                stats.requests_to(IDS_ROUTE),
                stats.requests_to(VERSION_ROUTE)
            ),
            (1, 1, 3),
            "legacy {legacy}: the batch once, then ids, then versions 10, 11 and 20"
        );
        // The refusal is remembered: the next lookup goes straight to ids.
        let answers = client.lookup_sha256(&asked[..1]).await;
        assert_eq!(answers.versions.len(), 2);
        assert_eq!(
            (stats.requests_to(BATCH_ROUTE), stats.requests_to(IDS_ROUTE)),
            (1, 2)
        );
    }
}

#[tokio::test]
async fn a_version_two_fallback_batches_find_is_fetched_once() {
    let knobs = Knobs {
        by_hash_batch_fault: Some(BatchFault::Absent),
        ..Knobs::default()
    };
    let (server, client) = start(twins_and_tensors(), knobs).await;
    let fillers = (0..SHA256_BATCH as u64 - 1).map(|i| format!("{i:064}"));
    let asked: Vec<String> = std::iter::once(sha_of(&server, 200))
        .chain(fillers)
        .chain([sha_of(&server, 201)])
        .collect();
    let answers = client.lookup_sha256(&asked).await;
    let outcomes = match_hashes(&asked, &answers, |_| None);
    assert_eq!(chosen(&outcomes[0]).map(|f| f.file_id), Some(200));
    assert_eq!(
        chosen(&outcomes[SHA256_BATCH]).map(|f| f.file_id),
        Some(201)
    );
    let stats = server.stats();
    assert_eq!(stats.requests_to(IDS_ROUTE), 2, "one per batch");
    assert_eq!(stats.requests_to(VERSION_ROUTE), 1, "version 20 once");
}

/// The budget is 110 requests for 10,000 new files; 1,000 keep the test quick.
#[tokio::test]
async fn a_thousand_new_files_take_ten_requests() {
    let server = FakeCivitai::start(Catalog::uniform(1_000, 64), Knobs::default())
        .await
        .unwrap();
    let client = client_of(server.api_url(), None);
    let asked: Vec<String> = (0..1_000).map(|i| sha_of(&server, 3000 + i)).collect();
    let answers = client.lookup_sha256(&asked).await;
    let outcomes = match_hashes(&asked, &answers, |_| None);
    assert!(outcomes.iter().all(|o| chosen(o).is_some()));
    assert_eq!(server.stats().api_requests(), 10);
}

#[tokio::test]
async fn autov3_finds_a_file_whose_header_was_rewritten() {
    let (server, client) = start(twins_and_tensors(), Knobs::default()).await;
    let published = server.catalog().file(200).unwrap().clone();
    let edited = published.header_edited("renamed in SwarmUI");
    let mut local = vec![0; edited.size as usize];
    FileBytes::of(&edited).fill(0, &mut local);
    // The hashes a scan computes: every byte, and the bytes after the safetensors header.
    let header_len = u64::from_le_bytes(local[..8].try_into().unwrap()) as usize;
    let sha256 = hex_upper(&Sha256::digest(&local));
    let autov3 = hex_upper(&Sha256::digest(&local[8 + header_len..]))[..12].to_owned();

    let asked = vec![sha256];
    let answers = client.lookup_sha256(&asked).await;
    assert_eq!(
        match_hashes(&asked, &answers, |_| None),
        [HashMatch::Unmatched],
        "the full hash changed with the header"
    );
    let answer = client.version_by_hash(&autov3.to_lowercase()).await;
    assert_eq!(
        chosen(&match_single(&autov3, &answer)),
        Some(FileRef {
            version_id: 20,
            file_id: 200,
            model_id: Some(2),
        })
    );
    assert!(
        client
            .version_by_hash("0123456789AB")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        server
            .stats()
            .requests_to("GET /api/v1/model-versions/by-hash/{hash}"),
        2
    );
}
