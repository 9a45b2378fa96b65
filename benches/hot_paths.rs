//! Criterion benchmarks of the hot paths: what each costs per call, so a change that slows one shows
//! up in `cargo bench` before it shows up in a download.
//!
//! - hashing: our streaming path (`fetch::hash_file` over a temp file) next to raw `sha2` on the
//!   same bytes in memory; the gap is the cost of reading the file in chunks;
//! - parsing a 100-model `/api/v1/models` page into `Page<Model>`;
//! - sanitising file names (plain, hostile, long, Unicode);
//! - saving a 10,000-entry state (upserts, then the flush that compacts the journal).

use std::hint::black_box;
use std::io::Write;

use civitai_dl_engine::civitai::wire::{Model, Page};
use civitai_dl_engine::fetch::hash_file;
use civitai_dl_engine::plan::naming::sanitize_file_name;
use civitai_dl_engine::state::{CatalogItem, FileRecord, StateStore};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};

/// Bytes hashed per iteration.
const HASH_BYTES: usize = 64 * 1024 * 1024;
/// Models on the parsed page (the API's maximum).
const PAGE_MODELS: usize = 100;
/// Records in the saved state.
const STATE_ENTRIES: u64 = 10_000;

fn hashing(c: &mut Criterion) {
    let buffer: Vec<u8> = (0..HASH_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("blob.bin");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&buffer))
        .expect("write the file to hash");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("sha256_64MiB");
    group.throughput(Throughput::Bytes(HASH_BYTES as u64));
    group.sample_size(10);
    group.bench_function("raw_sha2_in_memory", |b| {
        b.iter(|| Sha256::digest(black_box(&buffer)))
    });
    let never = tokio_util::sync::CancellationToken::new();
    group.bench_function("hash_file_streaming", |b| {
        b.iter(|| {
            runtime
                .block_on(hash_file(black_box(&path), 0, &never))
                .expect("hash")
        })
    });
    group.finish();
}

fn page_json() -> String {
    let sample: serde_json::Value = serde_json::from_str(include_str!(
        "../crates/civitai-dl-engine/tests/fixtures/civitai-samples/models_page_cursor.json"
    ))
    .expect("fixture is JSON");
    let item = sample["items"][0].clone();
    let items: Vec<serde_json::Value> = (0..PAGE_MODELS as u64)
        .map(|i| {
            let mut model = item.clone();
            model["id"] = serde_json::Value::from(1_000 + i);
            model
        })
        .collect();
    serde_json::json!({ "items": items, "metadata": sample["metadata"] }).to_string()
}

fn parsing(c: &mut Criterion) {
    let text = page_json();
    let mut group = c.benchmark_group("api_page");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("parse_100_models", |b| {
        b.iter(|| {
            let page: Page<Model> = serde_json::from_str(black_box(&text)).expect("parses");
            assert_eq!(page.items.len(), PAGE_MODELS);
            page
        })
    });
    group.finish();
}

fn naming(c: &mut Criterion) {
    let long = "a".repeat(400) + ".safetensors";
    let names = [
        "dreamscapeXL_v20.safetensors",
        "ink wash style.safetensors",
        "../../etc/passwd",
        "CON.safetensors",
        "名前 テスト モデル v1.0.safetensors",
        "a<b>c:d\"e|f?g*h\u{0007}.ckpt",
        " trailing dots and spaces ... ",
        long.as_str(),
    ];
    c.bench_function("sanitize_file_name_table", |b| {
        b.iter(|| {
            names
                .iter()
                .map(|n| sanitize_file_name(black_box(n)).len())
                .sum::<usize>()
        })
    });
}

fn record(i: u64) -> FileRecord {
    FileRecord::new(
        format!("file:{i}"),
        CatalogItem::new(i, format!("Model {i}")),
        CatalogItem::new(10_000 + i, "v1.0"),
        CatalogItem::new(20_000 + i, format!("model_{i}.safetensors")),
        format!("model_{i}.safetensors"),
    )
}

fn state(c: &mut Criterion) {
    let mut group = c.benchmark_group("state");
    group.sample_size(10);
    group.bench_function("save_10000_entries", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temp dir"),
            |dir| {
                let mut store =
                    StateStore::open(&dir.path().join("state.json")).expect("state opens");
                for i in 0..STATE_ENTRIES {
                    store.upsert(record(i)).expect("upsert");
                }
                store.flush().expect("flush");
                dir
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(hot_paths, hashing, parsing, naming, state);
criterion_main!(hot_paths);
