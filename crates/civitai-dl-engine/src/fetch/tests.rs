//! The unit of work against the fake Civitai: resume, foreign `.part`s, files already in place.

use super::*;
use crate::civitai::ApiOptions;
use crate::http::limiter::RateLimiter;
use crate::observe::NoProgress;
use civitai_dl_fake::{Catalog, FakeCivitai, FakeFile, FakeModel, FakeVersion, Knobs, fill_bytes};

const SIZE: u64 = 300_000;

async fn setup() -> (FakeCivitai, Downloader, PlannedFile, tempfile::TempDir) {
    let file = FakeFile::new(31, "a.safetensors", SIZE);
    let catalog = Catalog {
        models: vec![FakeModel::new(
            11,
            "M",
            "LORA",
            vec![FakeVersion::new(21, "v1", vec![file])],
        )],
        valid_keys: vec![],
    };
    let server = FakeCivitai::start(catalog, Knobs::default()).await.unwrap();
    let cancel = CancellationToken::new();
    let retry = RetryPolicy::new(vec![Duration::from_millis(10)], 0.0);
    let metrics = Arc::new(crate::observe::metrics::Metrics::new());
    let api = ApiClient::new(
        ApiOptions {
            hosts: vec![server.api_url()],
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            connections: 1,
        },
        Arc::new(RateLimiter::new(1000.0, 10)),
        retry.clone(),
        cancel.clone(),
        metrics.clone(),
    )
    .unwrap();
    let options = DownloadOptions {
        accept_hash_mismatch: false,
        min_speed: 0,
        min_speed_window: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        segments: 1,
        segment_threshold: u64::MAX,
        connections: 1,
    };
    let downloader = Downloader::new(Arc::new(api), retry, options, cancel, metrics).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let planned = PlannedFile {
        label: "test file".into(),
        source: Source::Civitai {
            version_id: 21,
            file_id: 31,
        },
        dest: dir.path().join("a.safetensors"),
        expected_size: Some(SIZE),
        expected_sha256: server.sha256_of(31).map(str::to_string),
        known_sha256: None,
        kind: FileKind::Model,
        replace_existing: false,
    };
    (server, downloader, planned, dir)
}

#[tokio::test]
async fn a_resumed_download_sends_the_right_range_and_ends_verified() {
    let (server, downloader, planned, _dir) = setup().await;
    let prefix_len = 123_456u64;
    let mut prefix = vec![0u8; prefix_len as usize];
    fill_bytes(31, 0, &mut prefix);
    let part = PartFile::new(&planned.dest);
    std::fs::write(&part.path, &prefix).unwrap();
    let meta = PartMeta {
        source: source_key(&planned.source),
        expected_sha256: planned.expected_sha256.clone(),
        total: Some(SIZE),
        etag: None,
        segments: None,
    };
    std::fs::write(&part.meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();

    let outcome = downloader
        .download_file(&planned, &NoProgress, Connections::AsConfigured)
        .await
        .unwrap();
    let Outcome::Downloaded {
        transferred,
        verified,
        ..
    } = outcome
    else {
        panic!("expected a download, got {outcome:?}");
    };
    assert!(verified);
    assert_eq!(transferred, SIZE - prefix_len);
    assert_eq!(
        server.stats().ranges(),
        vec![(31, Some(format!("bytes={prefix_len}-")))]
    );
    let (len, sha) = hash_file(&planned.dest, 0, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(len, SIZE);
    assert!(sha.eq_ignore_ascii_case(planned.expected_sha256.as_deref().unwrap()));
    assert!(!part.path.exists() && !part.meta_path.exists());
}

#[tokio::test]
async fn a_part_of_another_file_is_never_continued() {
    let (server, downloader, planned, _dir) = setup().await;
    let part = PartFile::new(&planned.dest);
    std::fs::write(&part.path, vec![7u8; 1000]).unwrap();
    let other = PartMeta {
        source: "civitai:21:999".into(),
        ..PartMeta::default()
    };
    std::fs::write(&part.meta_path, serde_json::to_vec(&other).unwrap()).unwrap();
    downloader
        .download_file(&planned, &NoProgress, Connections::AsConfigured)
        .await
        .unwrap();
    assert_eq!(server.stats().ranges(), vec![(31, None)]);
}

#[tokio::test]
async fn a_matching_final_file_is_not_downloaded_again() {
    let (server, downloader, planned, _dir) = setup().await;
    let mut bytes = vec![0u8; SIZE as usize];
    fill_bytes(31, 0, &mut bytes);
    std::fs::write(&planned.dest, &bytes).unwrap();
    let outcome = downloader
        .download_file(&planned, &NoProgress, Connections::AsConfigured)
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::AlreadyPresent { .. }),
        "{outcome:?}"
    );
    assert_eq!(server.stats().storage_requests(), 0);
    assert_eq!(server.stats().resolves(), 0);
}

// Issue 9.6: the run kept every file's signed URL until it ended, about 230 bytes a file: 23 MB
// of a 100,000-file download, for URLs nothing would use again (a settled file is not fetched
// again; one that failed keeps its URL for the failsafe's retry).
#[tokio::test]
async fn a_saved_file_leaves_no_signed_url_behind() {
    let (_server, downloader, planned, _dir) = setup().await;
    downloader
        .download_file(&planned, &NoProgress, Connections::AsConfigured)
        .await
        .unwrap();
    assert_eq!(downloader.resolves(&planned), 1);
    assert!(downloader.signed_urls().is_empty());
}
