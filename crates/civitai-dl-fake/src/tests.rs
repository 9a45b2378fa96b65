use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::catalog::MIB;
use crate::content::{JPEG_MAGIC, hex_upper};
use crate::download_route::FileSelection;
use crate::knobs::ApiFault;
use crate::query::{QueryParams, percent_decode, percent_encode};
use crate::response::{
    JSON_CONTENT_TYPE, MSG_ARCHIVED, MSG_BY_HASH_BODY, MSG_DOWNLOADS_DISABLED, MSG_EARLY_ACCESS,
    MSG_FILE_NOT_FOUND, MSG_LOGIN_REQUIRED, MSG_NO_GRANT, MSG_PAGE_WITH_QUERY, MSG_QUOTA,
    MSG_TOO_MANY_PAGES,
};
use crate::storage::{ByteSpan, content_disposition, faulty_span, parse_range};

const KEY: &str = "good-key";
const DEADLINE: &str = "2026-08-20T00:00:00.000Z";

fn client_with_agent(agent: &str) -> reqwest::Client {
    // reqwest is built without a bundled crypto provider; plain http still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(agent)
        .build()
        .expect("reqwest client")
}

fn client() -> reqwest::Client {
    client_with_agent("civitai-dl-test/0.1")
}

fn file(id: u64, size: u64) -> FakeFile {
    FakeFile::new(id, &format!("file-{id}.safetensors"), size)
}

fn version_with(id: u64, access: Access, files: Vec<FakeFile>) -> FakeVersion {
    FakeVersion {
        access,
        ..FakeVersion::new(id, "v1", files)
    }
}

fn test_catalog() -> Catalog {
    let alpha = FakeModel {
        creator: "alice".to_owned(),
        ..FakeModel::new(
            1,
            "Alpha Style",
            "LORA",
            vec![
                FakeVersion {
                    images: 2,
                    ..FakeVersion::new(
                        10,
                        "v2",
                        vec![
                            FakeFile {
                                fp: Some("fp16".to_owned()),
                                size_kind: Some("pruned".to_owned()),
                                ..file(100, 300_000)
                            },
                            FakeFile {
                                fp: Some("fp32".to_owned()),
                                size_kind: Some("full".to_owned()),
                                primary: false,
                                ..file(101, 5_000)
                            },
                        ],
                    )
                },
                FakeVersion::new(11, "v1", vec![file(110, 1_000)]),
            ],
        )
    };
    let bravo = FakeModel {
        creator: "Bob".to_owned(),
        nsfw: true,
        ..FakeModel::new(
            2,
            "Bravo",
            "Checkpoint",
            vec![FakeVersion::new(20, "v1", vec![file(200, 1_000)])],
        )
    };
    let charlie = FakeModel {
        creator: "ALICE".to_owned(),
        mode: Some("Archived".to_owned()),
        ..FakeModel::new(
            3,
            "Charlie",
            "LORA",
            vec![FakeVersion::new(30, "v1", vec![file(300, 1_000)])],
        )
    };
    let delta = FakeModel::new(
        4,
        "Delta",
        "LORA",
        vec![
            version_with(40, Access::LoginRequired, vec![file(400, 1_000)]),
            version_with(
                41,
                Access::EarlyAccess {
                    deadline: DEADLINE.to_owned(),
                },
                vec![file(410, 1_000)],
            ),
            version_with(42, Access::DownloadsDisabled, vec![file(420, 1_000)]),
            version_with(43, Access::NoGrant, vec![file(430, 1_000)]),
        ],
    );
    let echo = FakeModel::new(
        5,
        "Echo",
        "VAE",
        vec![FakeVersion::new(
            50,
            "v1",
            vec![
                FakeFile {
                    published_hash: PublishedHash::Missing,
                    ..file(500, 1_000)
                },
                FakeFile {
                    published_hash: PublishedHash::Wrong,
                    primary: false,
                    ..file(501, 1_000)
                },
            ],
        )],
    );
    Catalog {
        models: vec![alpha, bravo, charlie, delta, echo],
        valid_keys: vec![KEY.to_owned()],
    }
}

/// One model 9 / version 90 / file 900 of `size` bytes with the given faults.
fn faulty_catalog(size: u64, faults: FileFaults) -> Catalog {
    let file = FakeFile {
        faults,
        ..FakeFile::new(900, "faulty.safetensors", size)
    };
    Catalog {
        models: vec![FakeModel::new(
            9,
            "Faulty",
            "LORA",
            vec![FakeVersion::new(90, "v1", vec![file])],
        )],
        valid_keys: Vec::new(),
    }
}

async fn start(catalog: Catalog, knobs: Knobs) -> FakeCivitai {
    FakeCivitai::start(catalog, knobs)
        .await
        .expect("server starts")
}

async fn get_json(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let res = client.get(url).send().await.expect("request");
    let status = res.status();
    (status, res.json().await.expect("json body"))
}

/// Resolves a download and returns the storage URL of the 307.
async fn resolve(client: &reqwest::Client, server: &FakeCivitai, path_and_query: &str) -> String {
    let url = format!("{}/api/download/models/{path_and_query}", server.api_url());
    let res = client.get(url).send().await.expect("resolve");
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex_upper(&Sha256::digest(bytes))
}

fn generated(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    fill_bytes(seed, offset, &mut buf);
    buf
}

#[test]
fn fill_bytes_is_a_pure_function_of_seed_and_offset() {
    let whole = generated(7, 0, 100);
    for (offset, len) in [(0, 1), (1, 7), (3, 20), (8, 8), (13, 87), (99, 1)] {
        assert_eq!(
            generated(7, offset, len),
            whole[offset as usize..offset as usize + len],
            "offset {offset} len {len}"
        );
    }
    assert_ne!(generated(8, 0, 100), whole);
}

#[test]
fn content_sha256_hashes_the_generated_bytes() {
    for size in [0, 1, 65_535, 65_536, 200_001] {
        assert_eq!(
            content_sha256(3, size),
            sha256_hex(&generated(3, 0, size as usize))
        );
    }
    assert_ne!(content_sha256(3, 1000), content_sha256(4, 1000));
}

#[test]
fn parse_range_cases() {
    let partial = |first, last| ByteSpan::Partial { first, last };
    let cases = [
        (None, ByteSpan::Whole),
        (Some("bytes=0-"), partial(0, 99)),
        (Some("bytes=10-19"), partial(10, 19)),
        (Some("bytes=90-500"), partial(90, 99)),
        (Some("bytes=100-"), ByteSpan::Unsatisfiable),
        (Some("bytes=150-160"), ByteSpan::Unsatisfiable),
        (Some("bytes=20-10"), ByteSpan::Whole),
        (Some("bytes=-5"), ByteSpan::Whole),
        (Some("bytes=a-b"), ByteSpan::Whole),
        (Some("items=0-1"), ByteSpan::Whole),
    ];
    for (header, expected) in cases {
        assert_eq!(parse_range(header, 100), expected, "{header:?}");
    }
}

#[test]
fn percent_coding_cases() {
    for (raw, encoded) in [
        ("Core ML", "Core%20ML"),
        ("12|3", "12%7C3"),
        ("ä.safetensors", "%C3%A4.safetensors"),
        ("a-b_c.d~", "a-b_c.d~"),
    ] {
        assert_eq!(percent_encode(raw), encoded);
        assert_eq!(percent_decode(encoded), raw);
    }
    assert_eq!(percent_decode("a+b%zz%4"), "a b%zz%4");
}

#[test]
fn content_disposition_cases() {
    for (name, expected) in [
        (
            "a b.safetensors",
            "attachment; filename=\"a b.safetensors\"",
        ),
        (
            "ä\"x.pt",
            "attachment; filename=\"__x.pt\"; filename*=UTF-8''%C3%A4%22x.pt",
        ),
    ] {
        assert_eq!(content_disposition(name), expected);
    }
}

#[test]
fn file_selection_follows_the_server_rules() {
    let with = |id, fp: &str, size: &str, format: &str, primary| FakeFile {
        fp: Some(fp.to_owned()),
        size_kind: Some(size.to_owned()),
        format: Some(format.to_owned()),
        primary,
        ..file(id, 10)
    };
    let version = FakeVersion::new(
        1,
        "v",
        vec![
            with(1, "fp32", "full", "SafeTensor", false),
            with(2, "fp16", "pruned", "SafeTensor", true),
            with(3, "fp16", "full", "PickleTensor", false),
            FakeFile {
                file_type: "Config".to_owned(),
                format: Some("Other".to_owned()),
                ..file(4, 10)
            },
        ],
    );
    let cases: [(&str, Option<u64>); 10] = [
        ("", Some(2)),
        ("fileId=3", Some(3)),
        ("fileId=200", None),
        // As on the real server: the default "pruned" outweighs fp, so the fp16 file wins
        // and then fails the consistency check.
        ("fp=fp32", None),
        ("fp=fp32&size=full", Some(1)),
        ("size=full", Some(1)),
        ("format=PickleTensor", Some(3)),
        ("type=Config", Some(4)),
        ("format=GGUF", None),
        ("fp=fp32&size=pruned", None),
    ];
    for (query, expected) in cases {
        let params = QueryParams::parse(Some(query));
        let selection = FileSelection::parse(&params).expect("valid params");
        assert_eq!(
            selection.choose(&version).map(|f| f.id),
            expected,
            "{query}"
        );
    }
    for bad in ["type=Weights", "format=safetensor", "size=tiny", "fileId=x"] {
        let params = QueryParams::parse(Some(bad));
        assert!(FileSelection::parse(&params).is_err(), "{bad}");
    }
}

#[test]
fn api_faults_come_in_sequence_and_spare_me() {
    let mut state = KnobState::new(Knobs {
        api_503_first: 1,
        api_429_first: 2,
        api_html_first: 1,
        retry_after_secs: 4,
        ..Knobs::default()
    });
    assert_eq!(state.next_api_fault("/api/v1/me"), None);
    let seen: Vec<_> = (0..5)
        .map(|_| state.next_api_fault("/api/v1/models"))
        .collect();
    assert_eq!(
        seen,
        [
            Some(ApiFault::Unavailable {
                retry_after_secs: 4
            }),
            Some(ApiFault::TooManyRequests {
                retry_after_secs: 4
            }),
            Some(ApiFault::TooManyRequests {
                retry_after_secs: 4
            }),
            Some(ApiFault::MaintenancePage),
            None,
        ]
    );
}

#[tokio::test]
async fn model_json_has_the_real_shape() {
    let server = start(test_catalog(), Knobs::default()).await;
    let client = client();
    let res = client
        .get(format!("{}/api/v1/models/1", server.api_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(res.headers()["content-type"], JSON_CONTENT_TYPE);
    let model: Value = res.json().await.expect("json");
    assert_eq!(model["type"], "LORA");
    assert_eq!(model["creator"]["username"], "alice");
    assert!(model.get("mode").is_none());
    let versions = model["modelVersions"].as_array().expect("versions");
    assert_eq!(versions[0]["id"], 10);
    assert_eq!(versions[0]["index"], 0);
    assert_eq!(versions[1]["index"], 1);
    let files = versions[0]["files"].as_array().expect("files");
    assert_eq!(files[0]["primary"], true);
    assert!(
        files[1].get("primary").is_none(),
        "non-primary must omit the key"
    );
    assert_eq!(files[0]["sizeKB"], 300_000.0 / 1024.0);
    assert_eq!(
        files[0]["metadata"],
        json!({"format": "SafeTensor", "size": "pruned", "fp": "fp16"})
    );
    let sha = server.sha256_of(100).expect("hashed");
    assert_eq!(
        files[0]["hashes"],
        json!({"SHA256": sha, "AutoV2": &sha[..10]})
    );
    let download = format!("{}/api/download/models/10", server.api_url());
    assert_eq!(files[0]["downloadUrl"], download);
    assert_eq!(
        files[1]["downloadUrl"],
        format!("{download}?type=Model&format=SafeTensor&size=full&fp=fp32")
    );
    assert_eq!(versions[0]["downloadUrl"], download);
    assert_eq!(
        versions[0]["images"][1]["url"],
        format!("{}/images/10-1.jpeg", server.storage_url())
    );

    let (_, archived) = get_json(&client, &format!("{}/api/v1/models/3", server.api_url())).await;
    assert_eq!(archived["mode"], "Archived");
    assert_eq!(archived["modelVersions"][0]["files"], json!([]));
    assert!(archived["modelVersions"][0].get("downloadUrl").is_none());

    let (_, hashes) = get_json(&client, &format!("{}/api/v1/models/5", server.api_url())).await;
    let files = &hashes["modelVersions"][0]["files"];
    assert_eq!(files[0]["hashes"], json!({}));
    let wrong = files[1]["hashes"]["SHA256"].as_str().expect("wrong hash");
    assert_eq!(wrong.len(), 64);
    assert_ne!(wrong, server.sha256_of(501).expect("hashed"));

    for (path, status, error) in [
        ("models/77", StatusCode::NOT_FOUND, "No model with id 77"),
        (
            "models/abc",
            StatusCode::BAD_REQUEST,
            "Invalid model id: abc",
        ),
    ] {
        let (got, body) = get_json(&client, &format!("{}/api/v1/{path}", server.api_url())).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(error)));
    }
}

#[tokio::test]
async fn version_and_by_hash_endpoints() {
    let server = start(test_catalog(), Knobs::default()).await;
    let client = client();
    let (status, version) = get_json(
        &client,
        &format!("{}/api/v1/model-versions/10", server.api_url()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version["modelId"], 1);
    assert_eq!(version["air"], "urn:air:sdxl:lora:civitai:1@10");
    assert_eq!(
        version["model"],
        json!({"name": "Alpha Style", "type": "LORA", "nsfw": false, "poi": false})
    );
    assert_eq!(version["files"][0]["primary"], true);
    assert_eq!(version["files"][1]["primary"], false);

    let sha = server.sha256_of(101).expect("hashed").to_owned();
    for hash in [sha.to_lowercase(), sha[..10].to_owned()] {
        let url = format!("{}/api/v1/model-versions/by-hash/{hash}", server.api_url());
        let (status, found) = get_json(&client, &url).await;
        assert_eq!(
            (status, found["id"].as_u64()),
            (StatusCode::OK, Some(10)),
            "{hash}"
        );
    }
    for path in ["model-versions/999", "model-versions/by-hash/ABCDEF0123"] {
        let (status, body) =
            get_json(&client, &format!("{}/api/v1/{path}", server.api_url())).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("Model not found"))
        );
    }
}

/// Follows `nextCursor` to the end and returns the model ids seen and the page sizes.
async fn walk(
    client: &reqwest::Client,
    server: &FakeCivitai,
    query: &str,
) -> (Vec<u64>, Vec<usize>) {
    let (mut ids, mut sizes) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/v1/models?{query}", server.api_url());
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", percent_encode(c)));
        }
        let (status, page) = get_json(client, &url).await;
        assert_eq!(status, StatusCode::OK);
        let items = page["items"].as_array().expect("items");
        sizes.push(items.len());
        ids.extend(items.iter().filter_map(|m| m["id"].as_u64()));
        match page["metadata"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (ids, sizes),
        }
    }
}

#[tokio::test]
async fn listing_filters_nsfw_and_pages_with_short_pages() {
    let server = start(test_catalog(), Knobs::default()).await;
    let client = client();
    let (ids, sizes) = walk(&client, &server, "limit=2").await;
    assert_eq!(ids, [1, 3, 4, 5]);
    assert_eq!(sizes, [1, 2, 1], "model 2 is filtered after the LIMIT");
    let (ids, _) = walk(&client, &server, "limit=2&nsfw=true").await;
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let (ids, _) = walk(&client, &server, "username=Alice&nsfw=1").await;
    assert_eq!(ids, [1, 3]);
    let (ids, _) = walk(&client, &server, "types=VAE&types=Checkpoint&nsfw=true").await;
    assert_eq!(ids, [2, 5]);
    let (ids, _) = walk(&client, &server, "query=alpha").await;
    assert_eq!(ids, [1]);
    let (ids, _) = walk(&client, &server, "ids=5,2,9&nsfw=true").await;
    assert_eq!(ids, [2, 5], "comma-joined ids, unknown ones left out");
    let (ids, _) = walk(&client, &server, "ids=1&ids=2&ids=3").await;
    assert_eq!(
        ids,
        [1, 3],
        "repeated ids keys; the nsfw filter still applies"
    );

    let (_, first) = get_json(
        &client,
        &format!("{}/api/v1/models?limit=2&nsfw=true", server.api_url()),
    )
    .await;
    let next = first["metadata"]["nextPage"].as_str().expect("nextPage");
    let (_, second) = get_json(&client, next).await;
    assert_eq!(second["items"][0]["id"], 3);
    assert!(second["items"][0]["modelVersions"][0]["images"].is_array());
}

#[tokio::test]
async fn listing_rejects_bad_paging() {
    let server = start(test_catalog(), Knobs::default()).await;
    let client = client();
    let cases = [
        (
            "page=11&limit=100",
            StatusCode::TOO_MANY_REQUESTS,
            MSG_TOO_MANY_PAGES,
        ),
        (
            "page=2&query=a",
            StatusCode::BAD_REQUEST,
            MSG_PAGE_WITH_QUERY,
        ),
        (
            "limit=101",
            StatusCode::BAD_REQUEST,
            "limit must be an integer between 1 and 100",
        ),
        ("favorites=false", StatusCode::UNAUTHORIZED, "Unauthorized"),
    ];
    for (query, status, error) in cases {
        let res = client
            .get(format!("{}/api/v1/models?{query}", server.api_url()))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), status, "{query}");
        assert!(res.headers().get("retry-after").is_none());
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"], error, "{query}");
    }
    let (status, page) = get_json(
        &client,
        &format!(
            "{}/api/v1/models?page=1&limit=2&nsfw=true",
            server.api_url()
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["metadata"]["currentPage"], 1);
    assert!(
        page["metadata"]["nextPage"]
            .as_str()
            .is_some_and(|u| u.ends_with("page=2"))
    );
}

#[tokio::test]
async fn me_checks_the_key() {
    let server = start(test_catalog(), Knobs::default()).await;
    let client = client();
    let url = format!("{}/api/v1/me", server.api_url());
    for (auth, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("Bearer wrong"), StatusCode::UNAUTHORIZED),
        (Some("Bearer good-key"), StatusCode::OK),
    ] {
        let mut request = client.get(&url);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let res = request.send().await.expect("request");
        assert_eq!(res.status(), status, "{auth:?}");
    }
    assert_eq!(
        server.stats().auth_at_api(),
        2,
        "the two requests with a key"
    );
    let (status, me) = get_json(&client, &format!("{url}?token={KEY}")).await;
    assert_eq!(
        (status, me["username"].as_str()),
        (StatusCode::OK, Some("tester"))
    );
    assert_eq!(server.stats().user_agents(), ["civitai-dl-test/0.1"]);
}

#[tokio::test]
async fn download_route_statuses() {
    let server = start(test_catalog(), Knobs::default()).await;
    let client = client();
    let cases: [(&str, Option<&str>, StatusCode, Value); 10] = [
        ("10", None, StatusCode::TEMPORARY_REDIRECT, Value::Null),
        (
            "999",
            None,
            StatusCode::NOT_FOUND,
            json!({"error": MSG_FILE_NOT_FOUND}),
        ),
        (
            "10?fileId=110",
            None,
            StatusCode::NOT_FOUND,
            json!({"error": MSG_FILE_NOT_FOUND}),
        ),
        ("30", None, StatusCode::GONE, json!({"error": MSG_ARCHIVED})),
        (
            "40",
            Some("wrong"),
            StatusCode::UNAUTHORIZED,
            json!({"error": "Unauthorized", "message": MSG_LOGIN_REQUIRED}),
        ),
        ("40", Some(KEY), StatusCode::TEMPORARY_REDIRECT, Value::Null),
        (
            "41",
            Some(KEY),
            StatusCode::FORBIDDEN,
            json!({"error": "Early Access", "deadline": DEADLINE, "message": MSG_EARLY_ACCESS}),
        ),
        (
            "42",
            Some(KEY),
            StatusCode::UNAUTHORIZED,
            json!({"error": "Unauthorized", "message": MSG_DOWNLOADS_DISABLED}),
        ),
        (
            "43",
            Some(KEY),
            StatusCode::FORBIDDEN,
            json!({"error": MSG_NO_GRANT}),
        ),
        (
            "10?type=Bogus",
            None,
            StatusCode::BAD_REQUEST,
            json!({"error": "Invalid value for type: Bogus"}),
        ),
    ];
    for (path, key, status, body) in cases {
        let mut request = client.get(format!("{}/api/download/models/{path}", server.api_url()));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let res = request.send().await.expect("request");
        assert_eq!(res.status(), status, "{path}");
        if !body.is_null() {
            assert_eq!(res.json::<Value>().await.expect("json"), body, "{path}");
        }
    }
    assert_eq!(server.stats().resolves(), 2);
}

#[tokio::test]
async fn browsers_get_text_errors_and_a_login_redirect() {
    let server = start(test_catalog(), Knobs::default()).await;
    let browser = client_with_agent("Mozilla/5.0 (X11; Linux x86_64) Chrome/120");
    let res = browser
        .get(format!("{}/api/download/models/40", server.api_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::FOUND);
    let location = res.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        location,
        format!(
            "{}/login?returnUrl=%2Fapi%2Fdownload%2Fmodels%2F40",
            server.api_url()
        )
    );
    let login = browser.get(&location).send().await.expect("login page");
    assert!(
        login.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"))
    );
    let res = browser
        .get(format!("{}/api/download/models/30", server.api_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::GONE);
    assert_eq!(res.text().await.expect("text"), MSG_ARCHIVED);
}

#[tokio::test]
async fn storage_serves_the_published_bytes_without_needing_auth() {
    let server = start(test_catalog(), Knobs::default()).await;
    let client = client();
    let location = resolve(&client, &server, "10").await;
    assert!(location.starts_with(&format!("{}/file/100/", server.storage_url())));
    let res = client.get(&location).send().await.expect("storage");
    assert_eq!(res.status(), StatusCode::OK);
    let sha = server.sha256_of(100).expect("hashed").to_owned();
    let headers = res.headers().clone();
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["content-length"], "300000");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(
        headers["etag"].to_str().expect("ascii"),
        format!("\"{}\"", &sha[..16])
    );
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"file-100.safetensors\""
    );
    let body = res.bytes().await.expect("body");
    assert_eq!(sha256_hex(&body), sha);
    assert_eq!(server.stats().auth_at_storage(), 0);
    assert_eq!(server.stats().storage_bytes(), 300_000);

    let head = client
        .head(&location)
        .bearer_auth(KEY)
        .send()
        .await
        .expect("head");
    assert_eq!(head.headers()["content-length"], "300000");
    assert_eq!(server.stats().auth_at_storage(), 1);
    assert_eq!(server.stats().storage_requests(), 2);
    assert_eq!(
        server.stats().ranges(),
        [(100, None)],
        "HEAD is not a file GET"
    );
    assert_eq!(server.stats().max_concurrent_storage(), 1);
    assert!(server.stats().max_concurrent_api() >= 1);

    let fp32 = resolve(
        &client,
        &server,
        "10?type=Model&format=SafeTensor&size=full&fp=fp32",
    )
    .await;
    assert!(fp32.contains("/file/101/"));
}

#[tokio::test]
async fn storage_honours_ranges() {
    let mut catalog = faulty_catalog(1_000, FileFaults::default());
    let mut ignoring = FakeFile {
        faults: FileFaults {
            ignore_range: true,
            ..FileFaults::default()
        },
        ..FakeFile::new(901, "whole.bin", 1_000)
    };
    ignoring.primary = false;
    catalog.models[0].versions[0].files.push(ignoring);
    let server = start(catalog, Knobs::default()).await;
    let client = client();
    let whole = generated(900, 0, 1_000);
    let cases: [(&str, StatusCode, Option<&str>, &[u8]); 4] = [
        (
            "bytes=100-",
            StatusCode::PARTIAL_CONTENT,
            Some("bytes 100-999/1000"),
            &whole[100..],
        ),
        (
            "bytes=10-19",
            StatusCode::PARTIAL_CONTENT,
            Some("bytes 10-19/1000"),
            &whole[10..20],
        ),
        (
            "bytes=1000-",
            StatusCode::RANGE_NOT_SATISFIABLE,
            Some("bytes */1000"),
            &[],
        ),
        ("bytes=oops", StatusCode::OK, None, &whole),
    ];
    for (range, status, content_range, body) in cases {
        let location = resolve(&client, &server, "90").await;
        let res = client
            .get(location)
            .header("range", range)
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), status, "{range}");
        let got = res
            .headers()
            .get("content-range")
            .map(|v| v.to_str().expect("ascii").to_owned());
        assert_eq!(got.as_deref(), content_range, "{range}");
        assert_eq!(res.bytes().await.expect("body"), body, "{range}");
    }
    let location = resolve(&client, &server, "90?fileId=901").await;
    let res = client
        .get(location)
        .header("range", "bytes=10-")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.expect("body").len(), 1_000);
    let recorded = server.stats().ranges();
    assert_eq!(recorded.len(), 5);
    assert_eq!(recorded[0], (900, Some("bytes=100-".to_owned())));
}

#[tokio::test]
async fn storage_rejects_expired_and_tampered_urls() {
    let server = start(faulty_catalog(100, FileFaults::default()), Knobs::default()).await;
    let client = client();
    let location = resolve(&client, &server, "90").await;
    let tampered = location.replace("expires=", "expires=1");
    let res = client.get(tampered).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.expect("xml").contains("Invalid signature"));

    server.set_knobs(Knobs {
        url_ttl: Duration::ZERO,
        ..Knobs::default()
    });
    let expired = resolve(&client, &server, "90").await;
    let res = client.get(expired).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()["content-type"], "application/xml");
    let body = res.text().await.expect("xml");
    assert!(body.contains("<Code>AccessDenied</Code><Message>Request has expired</Message>"));
}

#[tokio::test]
async fn corrupt_and_html_attempts_then_the_right_bytes() {
    let faults = FileFaults {
        corrupt_attempts: 2,
        html_attempts: 1,
        ..FileFaults::default()
    };
    let server = start(faulty_catalog(200_000, faults), Knobs::default()).await;
    let client = client();
    let sha = server.sha256_of(900).expect("hashed").to_owned();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let location = resolve(&client, &server, "90").await;
        let res = client.get(location).send().await.expect("get");
        let html = res.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"));
        let body = res.bytes().await.expect("body");
        outcomes.push((html, body.len(), sha256_hex(&body) == sha));
    }
    assert!(outcomes[0].0, "first attempt is an HTML page");
    assert_eq!(
        outcomes[1],
        (false, 200_000, false),
        "second attempt is corrupted"
    );
    assert_eq!(outcomes[2], (false, 200_000, true));
}

#[tokio::test]
async fn reset_and_stall_cut_the_body() {
    let faults = FileFaults {
        reset_after: Some((100_000, 1)),
        stall_after: Some((50_000, 2)),
        ..FileFaults::default()
    };
    let server = start(faulty_catalog(300_000, faults), Knobs::default()).await;
    let client = client();
    let location = resolve(&client, &server, "90").await;
    let reset = client.get(location).send().await.expect("headers arrive");
    assert!(reset.bytes().await.is_err(), "attempt 1 is reset");

    let location = resolve(&client, &server, "90").await;
    let mut stalled = client.get(location).send().await.expect("headers arrive");
    let mut received = 0;
    let outcome = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(chunk) = stalled.chunk().await.expect("no error while stalled") {
            received += chunk.len();
        }
    })
    .await;
    assert!(outcome.is_err(), "attempt 2 stalls");
    assert_eq!(received, 50_000);

    let location = resolve(&client, &server, "90").await;
    let body = client
        .get(location)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(body.len(), 300_000);
}

#[tokio::test]
async fn json_error_attempt_hides_behind_a_binary_type_without_a_length() {
    let faults = FileFaults {
        json_error_attempts: 1,
        ..FileFaults::default()
    };
    let server = start(faulty_catalog(50_000, faults), Knobs::default()).await;
    let client = client();
    let location = resolve(&client, &server, "90").await;
    let res = client.get(location).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    assert!(res.headers().get("content-length").is_none());
    assert_eq!(res.headers()["transfer-encoding"], "chunked");
    let body: Value = res.json().await.expect("a JSON body");
    assert_eq!(body["error"], MSG_FILE_NOT_FOUND);

    let location = resolve(&client, &server, "90").await;
    let body = client
        .get(location)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(body, generated(900, 0, 50_000), "attempt 2 is the file");
}

#[test]
fn range_faults_change_only_ranged_answers_of_their_attempts() {
    let asked = ByteSpan::Partial {
        first: 10,
        last: 99,
    };
    let unsatisfiable = FileFaults {
        unsatisfiable_range_attempts: 1,
        ..FileFaults::default()
    };
    let misplaced = FileFaults {
        misplaced_range_attempts: 1,
        ..FileFaults::default()
    };
    let from_zero = ByteSpan::Partial { first: 0, last: 99 };
    let cases = [
        (&unsatisfiable, 1, asked, ByteSpan::Unsatisfiable),
        (&unsatisfiable, 2, asked, asked),
        (&unsatisfiable, 1, ByteSpan::Whole, ByteSpan::Whole),
        (
            &misplaced,
            1,
            asked,
            ByteSpan::Partial { first: 9, last: 99 },
        ),
        (&misplaced, 2, asked, asked),
        (&misplaced, 1, from_zero, from_zero),
        (&misplaced, 1, ByteSpan::Whole, ByteSpan::Whole),
    ];
    for (faults, attempt, asked, want) in cases {
        assert_eq!(
            faulty_span(faults, attempt, asked),
            want,
            "{faults:?} attempt {attempt} asked {asked:?}"
        );
    }
}

#[tokio::test]
async fn range_faults_over_http() {
    let faults = FileFaults {
        unsatisfiable_range_attempts: 1,
        misplaced_range_attempts: 2,
        ..FileFaults::default()
    };
    let server = start(faulty_catalog(1_000, faults), Knobs::default()).await;
    let client = client();
    let whole = generated(900, 0, 1_000);
    let cases: [(StatusCode, Option<&str>, &[u8]); 3] = [
        (StatusCode::RANGE_NOT_SATISFIABLE, Some("bytes */1000"), &[]),
        (
            StatusCode::PARTIAL_CONTENT,
            Some("bytes 99-999/1000"),
            &whole[99..],
        ),
        (
            StatusCode::PARTIAL_CONTENT,
            Some("bytes 100-999/1000"),
            &whole[100..],
        ),
    ];
    for (attempt, (status, content_range, body)) in cases.into_iter().enumerate() {
        let location = resolve(&client, &server, "90").await;
        let res = client
            .get(location)
            .header("range", "bytes=100-")
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), status, "attempt {}", attempt + 1);
        let got = res
            .headers()
            .get("content-range")
            .map(|v| v.to_str().expect("ascii").to_owned());
        assert_eq!(got.as_deref(), content_range, "attempt {}", attempt + 1);
        assert_eq!(res.bytes().await.expect("body"), body);
    }
}

#[tokio::test]
async fn download_route_faults_spare_the_other_paths_and_are_counted() {
    let knobs = Knobs {
        download_route_503_first: 2,
        retry_after_secs: 0,
        ..Knobs::default()
    };
    let server = start(faulty_catalog(10, FileFaults::default()), knobs).await;
    let client = client();
    let route = format!("{}/api/download/models/90", server.api_url());
    let model = format!("{}/api/v1/models/9", server.api_url());
    let mut seen = Vec::new();
    for url in [&route, &model, &route, &route] {
        seen.push(client.get(url).send().await.expect("request").status());
    }
    assert_eq!(
        seen,
        [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TEMPORARY_REDIRECT,
        ]
    );
    assert_eq!(server.stats().download_route_requests(), 3);
    assert_eq!(server.stats().resolves(), 1);
}

#[tokio::test]
async fn listing_can_give_only_next_page_urls() {
    let knobs = Knobs {
        omit_next_cursor: true,
        ..Knobs::default()
    };
    let server = start(test_catalog(), knobs).await;
    let client = client();
    let mut url = format!("{}/api/v1/models?limit=2&nsfw=true", server.api_url());
    let mut ids = Vec::new();
    loop {
        let (status, page) = get_json(&client, &url).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page["metadata"].get("nextCursor").is_none(), "{page:#}");
        ids.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|m| m["id"].clone()),
        );
        match page["metadata"]["nextPage"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(ids, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn bandwidth_cap_paces_the_body() {
    let knobs = Knobs {
        bandwidth: Some(400_000),
        ..Knobs::default()
    };
    let server = start(faulty_catalog(200_000, FileFaults::default()), knobs).await;
    let client = client();
    let location = resolve(&client, &server, "90").await;
    let started = Instant::now();
    let body = client
        .get(location)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    let elapsed = started.elapsed();
    assert_eq!(body.len(), 200_000);
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn api_knobs_apply_over_http() {
    let knobs = Knobs {
        api_503_first: 1,
        api_429_first: 1,
        api_html_first: 1,
        retry_after_secs: 3,
        quota_after: Some(1),
        ..Knobs::default()
    };
    let server = start(faulty_catalog(10, FileFaults::default()), knobs).await;
    let client = client();
    let url = format!("{}/api/v1/models/9", server.api_url());
    let mut seen = Vec::new();
    for _ in 0..4 {
        let res = client.get(&url).send().await.expect("request");
        let retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let html = res.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"));
        seen.push((res.status(), retry_after, html));
    }
    let three = Some("3".to_owned());
    assert_eq!(
        seen,
        [
            (StatusCode::SERVICE_UNAVAILABLE, three.clone(), false),
            (StatusCode::TOO_MANY_REQUESTS, three, false),
            (StatusCode::OK, None, true),
            (StatusCode::OK, None, false),
        ]
    );
    resolve(&client, &server, "90").await;
    let res = client
        .get(format!("{}/api/download/models/90", server.api_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get("retry-after").is_none());
    assert_eq!(res.json::<Value>().await.expect("json")["error"], MSG_QUOTA);

    server.set_knobs(Knobs {
        outage: Some((Duration::ZERO, Duration::from_secs(60))),
        ..Knobs::default()
    });
    for url in [url, format!("{}/images/90-0.jpeg", server.storage_url())] {
        let res = client.get(&url).send().await.expect("request");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{url}");
    }
    assert_eq!(server.stats().api_requests(), 7);
    assert_eq!(server.stats().api_request_times().len(), 7);
}

#[tokio::test]
async fn previews_are_small_jpegs() {
    let server = start(test_catalog(), Knobs::default()).await;
    let client = client();
    let url = format!("{}/images/10-1.jpeg", server.storage_url());
    let res = client.get(&url).send().await.expect("image");
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    let body = res.bytes().await.expect("body");
    assert!((16 * 1024..=40 * 1024).contains(&body.len()));
    assert_eq!(body[..4], JPEG_MAGIC);
    let again = client
        .get(&url)
        .send()
        .await
        .expect("image")
        .bytes()
        .await
        .expect("body");
    assert_eq!(body, again);
    let missing = client
        .get(format!("{}/images/10-2.jpeg", server.storage_url()))
        .send()
        .await
        .expect("image");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn previews_of_other_formats_keep_their_jpeg_urls_and_say_what_they_are() {
    let formats = [
        ImageFormat::Webp,
        ImageFormat::Png,
        ImageFormat::Gif,
        ImageFormat::Mp4,
    ];
    let version = FakeVersion {
        images: 5,
        image_formats: formats.to_vec(),
        ..FakeVersion::new(70, "v1", vec![FakeFile::new(700, "a.safetensors", 1024)])
    };
    let catalog = Catalog {
        models: vec![FakeModel::new(7, "Formats", "LORA", vec![version])],
        valid_keys: Vec::new(),
    };
    let server = start(catalog, Knobs::default()).await;
    let client = client();
    let body: Value = client
        .get(format!("{}/api/v1/model-versions/70", server.api_url()))
        .send()
        .await
        .expect("version")
        .json()
        .await
        .expect("json");
    let types: Vec<&str> = body["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["image", "image", "image", "video", "image"]);
    let expected: [(&str, &[u8]); 5] = [
        ("image/webp", b"RIFF"),
        ("image/png", b"\x89PNG"),
        ("image/gif", b"GIF8"),
        ("video/mp4", b"\0\0\0\x20"),
        ("image/jpeg", &JPEG_MAGIC),
    ];
    for (i, (content_type, magic)) in expected.into_iter().enumerate() {
        let url = body["images"][i]["url"].as_str().expect("url");
        assert!(url.ends_with(".jpeg"), "{url}");
        let res = client.get(url).send().await.expect("image");
        assert_eq!(res.headers()["content-type"], content_type, "{i}");
        let bytes = res.bytes().await.expect("body");
        assert_eq!(&bytes[..4], magic, "{i}");
    }
}

#[tokio::test]
async fn image_latency_delays_previews_so_parallel_fetches_overlap() {
    let knobs = Knobs {
        image_latency: Duration::from_millis(200),
        ..Knobs::default()
    };
    let server = start(test_catalog(), knobs).await;
    let client = client();
    let fetch = |i: u32| {
        let request = client.get(format!("{}/images/10-{i}.jpeg", server.storage_url()));
        async move { request.send().await.expect("image").bytes().await }
    };
    let started = Instant::now();
    let (first, second) = tokio::join!(fetch(0), fetch(1));
    let elapsed = started.elapsed();
    assert_eq!(first.expect("body")[..4], JPEG_MAGIC);
    assert_eq!(second.expect("body")[..4], JPEG_MAGIC);
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert_eq!(
        server.stats().max_concurrent_storage(),
        2,
        "the two answers overlap"
    );
}

#[tokio::test]
async fn concurrent_ranged_gets_can_be_refused() {
    let knobs = Knobs {
        storage_refuses_ranges_when_concurrent: true,
        bandwidth: Some(100_000),
        ..Knobs::default()
    };
    let server = start(faulty_catalog(100_000, FileFaults::default()), knobs).await;
    let client = client();
    let first = client
        .get(resolve(&client, &server, "90").await)
        .send()
        .await
        .expect("first");
    let second = client
        .get(resolve(&client, &server, "90").await)
        .header("range", "bytes=50000-")
        .send()
        .await
        .expect("second");
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(first);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third = client
        .get(resolve(&client, &server, "90").await)
        .header("range", "bytes=99000-")
        .send()
        .await
        .expect("third");
    assert_eq!(third.status(), StatusCode::PARTIAL_CONTENT);
}

#[tokio::test]
async fn dropping_the_server_cuts_slow_bodies() {
    let knobs = Knobs {
        bandwidth: Some(20_000),
        ..Knobs::default()
    };
    let server = start(faulty_catalog(200_000, FileFaults::default()), knobs).await;
    let client = client();
    let mut res = client
        .get(resolve(&client, &server, "90").await)
        .send()
        .await
        .expect("headers");
    assert!(res.chunk().await.expect("first chunk").is_some());
    drop(server);
    let rest = tokio::time::timeout(Duration::from_secs(3), res.bytes()).await;
    assert!(matches!(rest, Ok(Err(_))), "body must be cut, got {rest:?}");
}

fn raw_get(addr: &str, path: &str) -> io::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn background_server_works_from_sync_code_and_stops_on_drop() {
    let server = FakeCivitai::start_in_background(Catalog::uniform(3, 1_000), Knobs::default())
        .expect("background server");
    let addr = server.api_url().trim_start_matches("http://").to_owned();
    let answer = raw_get(&addr, "/api/v1/models/1001").expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"uniform_lora_1.safetensors\""));
    assert_eq!(server.stats().api_requests(), 1);
    drop(server);
    assert!(raw_get(&addr, "/api/v1/models/1001").is_err());
}

#[test]
fn demo_catalog_is_consistent() {
    let catalog = Catalog::demo();
    let files: Vec<&FakeFile> = catalog
        .models
        .iter()
        .flat_map(|m| &m.versions)
        .flat_map(|v| &v.files)
        .collect();
    let total: u64 = files.iter().map(|f| f.size).sum();
    assert!((100 * MIB..=400 * MIB).contains(&total), "{total}");
    assert!(files.iter().any(|f| f.faults.corrupt_attempts == 1));
    assert!(catalog.model(101).is_some_and(|m| m.versions.len() == 2));
    assert_eq!(catalog.version(203).map(|(m, _)| m.id), Some(102));
    assert_eq!(
        catalog.file(304).and_then(|f| f.fp.as_deref()),
        Some("fp32")
    );
    assert!(catalog.file(9999).is_none());
}

fn safetensors(id: u64, size: u64, title: &str) -> FakeFile {
    FakeFile {
        content: FileContent::Safetensors {
            title: title.to_owned(),
        },
        ..file(id, size)
    }
}

fn bytes_of(file: &FakeFile) -> Vec<u8> {
    let mut buf = vec![0; file.size as usize];
    FileBytes::of(file).fill(0, &mut buf);
    buf
}

#[test]
fn noise_content_is_unchanged_by_the_layouts() {
    let noise = file(7, 100_000);
    assert_eq!(bytes_of(&noise), generated(7, 0, 100_000));
    assert_eq!(FileBytes::of(&noise).tensor_offset(), None);
    assert_eq!(
        FileBytes::of(&noise).hashes().sha256,
        content_sha256(7, 100_000)
    );
    assert_eq!(FileBytes::of(&noise).hashes().autov3, None);
}

#[test]
fn safetensors_content_is_a_valid_file_whose_autov3_survives_a_header_edit() {
    let original = safetensors(7, 200_000, "Alpha");
    let edited = original.header_edited("Alpha, rewritten by SwarmUI");
    assert!(
        edited.size > original.size,
        "a longer header, a longer file"
    );
    assert_eq!(
        file(3, 10).header_edited("x").size,
        10,
        "noise stays as it is"
    );
    let mut tensor_hashes = Vec::new();
    for file in [&original, &edited] {
        let bytes = bytes_of(file);
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let start = 8 + header_len as usize;
        let header: Value = serde_json::from_slice(&bytes[8..start]).expect("JSON header");
        let data = (bytes.len() - start) as u64;
        assert_eq!(header["weight"]["data_offsets"], json!([0, data]));
        assert_eq!(header["weight"]["shape"], json!([data]));
        let layout = FileBytes::of(file);
        assert_eq!(layout.tensor_offset(), Some(start as u64));
        // Any window agrees with the whole, across the header's end too.
        for (offset, len) in [(0, 3), (start - 2, 10), (start, 1), (120_000, 80_000)] {
            let mut window = vec![0; len];
            layout.fill(offset as u64, &mut window);
            assert_eq!(window, bytes[offset..offset + len], "{offset}+{len}");
        }
        let hashes = layout.hashes();
        assert_eq!(hashes.sha256, sha256_hex(&bytes));
        let autov3 = sha256_hex(&bytes[start..])[..12].to_owned();
        assert_eq!(hashes.autov3.as_deref(), Some(autov3.as_str()));
        tensor_hashes.push((hashes.sha256, autov3));
    }
    assert_ne!(tensor_hashes[0].0, tensor_hashes[1].0, "the header differs");
    assert_eq!(tensor_hashes[0].1, tensor_hashes[1].1, "the tensors do not");
    // A file too small for its header is no safetensors file and has no AutoV3.
    let tiny = FileBytes::of(&safetensors(8, 40, "Alpha"));
    assert_eq!((tiny.tensor_offset(), tiny.hashes().autov3), (None, None));
}

#[test]
fn routes_are_named_by_their_template() {
    let cases = [
        ("GET", "/api/v1/models/12", "GET /api/v1/models/{id}"),
        ("GET", "/api/v1/models", "GET /api/v1/models"),
        (
            "GET",
            "/api/v1/model-versions/by-hash/12AB",
            "GET /api/v1/model-versions/by-hash/{hash}",
        ),
        (
            "GET",
            "/api/v1/model-versions/by-hash/1234567890",
            "GET /api/v1/model-versions/by-hash/{hash}",
        ),
        (
            "POST",
            "/api/v1/model-versions/by-hash",
            "POST /api/v1/model-versions/by-hash",
        ),
        (
            "POST",
            "/api/v1/model-versions/by-hash/ids",
            "POST /api/v1/model-versions/by-hash/ids",
        ),
        (
            "GET",
            "/api/download/models/9",
            "GET /api/download/models/{id}",
        ),
    ];
    for (method, path, route) in cases {
        assert_eq!(crate::stats::route_of(method, path), route, "{path}");
    }
}

/// Model 1 with versions 10 and 11 holding the same bytes (files 100 and 110), model 2 with a
/// safetensors file (200) and a file whose hash is pending (201).
fn by_hash_catalog() -> Catalog {
    let twin = |id| FakeFile {
        seed: 5,
        ..file(id, 3_000)
    };
    let first = FakeModel::new(
        1,
        "Twins",
        "LORA",
        vec![
            FakeVersion::new(11, "v2", vec![twin(110)]),
            FakeVersion::new(10, "v1", vec![twin(100)]),
        ],
    );
    let second = FakeModel::new(
        2,
        "Tensors",
        "LORA",
        vec![FakeVersion::new(
            20,
            "v1",
            vec![
                safetensors(200, 50_000, "Tensors"),
                FakeFile {
                    published_hash: PublishedHash::Missing,
                    primary: false,
                    ..file(201, 1_000)
                },
            ],
        )],
    );
    Catalog {
        models: vec![first, second],
        valid_keys: Vec::new(),
    }
}

async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> (StatusCode, Value) {
    let res = client.post(url).json(body).send().await.expect("request");
    let status = res.status();
    (status, res.json().await.expect("json body"))
}

#[tokio::test]
async fn get_by_hash_finds_sha256_autov2_and_autov3_in_any_case() {
    let server = start(by_hash_catalog(), Knobs::default()).await;
    let client = client();
    let url = |hash: &str| format!("{}/api/v1/model-versions/by-hash/{hash}", server.api_url());
    let (_, version) = get_json(&client, &url(server.sha256_of(200).unwrap())).await;
    let autov3 = version["files"][0]["hashes"]["AutoV3"]
        .as_str()
        .expect("AutoV3 published for safetensors")
        .to_owned();
    assert_eq!(autov3.len(), 12);
    assert!(
        version["files"][1]["hashes"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    let sha = server.sha256_of(200).unwrap().to_owned();
    for hash in [
        sha.clone(),
        sha.to_lowercase(),
        sha[..10].to_owned(),
        autov3.to_lowercase(),
    ] {
        let (status, found) = get_json(&client, &url(&hash)).await;
        assert_eq!(
            (status, found["id"].as_u64()),
            (StatusCode::OK, Some(20)),
            "{hash}"
        );
    }
    // Noise files publish no AutoV3; identical bytes in two versions give the lowest version.
    let (_, twin) = get_json(&client, &url(server.sha256_of(100).unwrap())).await;
    assert_eq!(twin["id"], 10);
    assert!(twin["files"][0]["hashes"].get("AutoV3").is_none());
    let (status, _) = get_json(&client, &url(&sha[..12])).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "12 hex of the SHA-256 are not the AutoV3"
    );
    assert_eq!(
        server
            .stats()
            .requests_to("GET /api/v1/model-versions/by-hash/{hash}"),
        7
    );
}

#[tokio::test]
async fn post_by_hash_answers_one_version_per_matching_file_out_of_order() {
    let server = start(by_hash_catalog(), Knobs::default()).await;
    let client = client();
    let url = format!("{}/api/v1/model-versions/by-hash", server.api_url());
    let twin = server.sha256_of(100).unwrap().to_lowercase();
    let tensors = server.sha256_of(200).unwrap().to_owned();
    let unknown = "0".repeat(64);
    let (status, body) = post_json(&client, &url, &json!([twin, unknown, tensors])).await;
    assert_eq!(status, StatusCode::OK);
    let versions = body.as_array().expect("bare array");
    let mut ids: Vec<u64> = versions.iter().map(|v| v["id"].as_u64().unwrap()).collect();
    assert_eq!(
        versions[0]["modelId"],
        json!(ids[0] / 10),
        "the /model-versions shape"
    );
    assert!(versions[0]["model"].is_object());
    let answered = ids.clone();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [10, 11, 20],
        "one element per matching file, misses absent"
    );
    assert_ne!(answered, [10, 11, 20], "not in input or catalogue order");
    let (status, body) = post_json(&client, &url, &json!([])).await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));

    let too_many: Vec<String> = (0..101).map(|i| format!("{i:064}")).collect();
    for bad in [
        json!({"hashes": [tensors]}),
        json!([&tensors[..63]]),
        json!([42]),
        json!(too_many),
    ] {
        let (status, body) = post_json(&client, &url, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with(MSG_BY_HASH_BODY), "{error}");
    }
    // Length is the only check: 64 characters that are not hex are simply not found.
    let (status, body) = post_json(&client, &url, &json!(["z".repeat(64)])).await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
    assert_eq!(
        server
            .stats()
            .requests_to("POST /api/v1/model-versions/by-hash"),
        7
    );
}

#[tokio::test]
async fn post_by_hash_ids_has_the_current_and_the_old_shape() {
    let server = start(by_hash_catalog(), Knobs::default()).await;
    let client = client();
    let url = format!("{}/api/v1/model-versions/by-hash/ids", server.api_url());
    let twin = server.sha256_of(100).unwrap().to_owned();
    let (status, body) = post_json(&client, &url, &json!([twin.to_lowercase()])).await;
    assert_eq!(status, StatusCode::OK);
    let mut entries = body.as_array().unwrap().clone();
    entries.sort_by_key(|e| e["modelVersionId"].as_u64());
    assert_eq!(
        entries,
        [
            json!({"modelVersionId": 10, "modelId": 1, "hash": twin}),
            json!({"modelVersionId": 11, "modelId": 1, "hash": twin}),
        ]
    );
    let many: Vec<String> = (0..10_000).map(|i| format!("{i:064}")).collect();
    let (status, _) = post_json(&client, &url, &json!(many)).await;
    assert_eq!(status, StatusCode::OK, "today's server takes 10,000");

    server.set_knobs(Knobs {
        by_hash_ids_legacy: true,
        ..Knobs::default()
    });
    let (status, body) = post_json(&client, &url, &json!([twin])).await;
    assert_eq!(status, StatusCode::OK);
    let mut ids: Vec<u64> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().expect("bare ids"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [10, 11]);
    let (status, _) = post_json(&client, &url, &json!(many[..101])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the old one took 100");
    assert_eq!(
        server
            .stats()
            .requests_to("POST /api/v1/model-versions/by-hash/ids"),
        4
    );
}

#[tokio::test]
async fn by_hash_batch_faults_apply_to_the_first_posts_only() {
    let server = start(by_hash_catalog(), Knobs::default()).await;
    let client = client();
    let url = format!("{}/api/v1/model-versions/by-hash", server.api_url());
    let hashes = json!([server.sha256_of(200).unwrap()]);
    let cases = [
        (
            BatchFault::TooManyRequests,
            StatusCode::TOO_MANY_REQUESTS,
            false,
        ),
        (
            BatchFault::ServerError,
            StatusCode::INTERNAL_SERVER_ERROR,
            false,
        ),
        (BatchFault::MaintenancePage, StatusCode::OK, true),
        (BatchFault::Absent, StatusCode::NOT_FOUND, false),
    ];
    for (fault, status, html) in cases {
        server.set_knobs(Knobs {
            by_hash_batch_fault: Some(fault),
            by_hash_batch_faulty: 2,
            ..Knobs::default()
        });
        for _ in 0..2 {
            let res = client.post(&url).json(&hashes).send().await.unwrap();
            let is_html = res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html");
            assert_eq!((res.status(), is_html), (status, html), "{fault:?}");
        }
        let (status, body) = post_json(&client, &url, &hashes).await;
        assert_eq!((status, body[0]["id"].as_u64()), (StatusCode::OK, Some(20)));
        // The other routes are spared.
        let ids = format!("{url}/ids");
        let (status, _) = post_json(&client, &ids, &hashes).await;
        assert_eq!(status, StatusCode::OK, "{fault:?}");
    }
    assert_eq!(
        server
            .stats()
            .requests_to("POST /api/v1/model-versions/by-hash"),
        12
    );
}
