//! An offline imitation of Civitai: the project's test seam.
//!
//! End-to-end tests, `civitai-dl demo`, `civitai-dl fake-server` and `bench` need a Civitai that is
//! reproducible, fast, free of network access and able to misbehave on demand. This module serves the
//! few endpoints the downloader uses with the shapes and quirks described in `civitai-api.md`
//! (`primary` absent in `/models`, short pages that still carry a cursor, the page cap, the download
//! route's status ladder, plain-text errors for browsers), plus fault knobs for retries and resume.
//!
//! It runs two origins on two loopback ports because the real service does: the API redirects a
//! download to a separate storage host, and the client must follow that hop without its key (the
//! storage origin counts every `Authorization` header it sees). File bytes are never stored: they are
//! a pure function of a seed and an offset, generated chunk by chunk, so a benchmark can serve
//! gigabytes without memory or disk.

use crate::lock;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// One mebibyte, for catalogue file sizes.
const MIB: u64 = 1024 * 1024;
/// Size of one generated body chunk: big enough for throughput, small enough to keep memory flat.
const CHUNK_BYTES: u64 = 64 * 1024;
/// Paced connections send about this many chunks per second, so a low bandwidth cap stays smooth.
const PACED_CHUNKS_PER_SEC: u64 = 20;
/// Smallest paced chunk, so a tiny bandwidth cap does not degrade into one-byte writes.
const MIN_PACED_CHUNK_BYTES: u64 = 1024;
/// Pause before a reset so hyper flushes the headers and the bytes already produced; an error in
/// the same poll would drop them and the client would see no response at all.
const RESET_FLUSH_DELAY: Duration = Duration::from_millis(20);
/// Default and maximum `limit` on `/api/v1/models`.
const MAX_PAGE_LIMIT: usize = 100;
/// Page paging is refused once `page * limit` exceeds this, like the real API.
const PAGE_PAGING_CAP: usize = 1000;
/// Ids above this get 400 on `/api/v1/models/{id}` (Postgres int4 range).
const MAX_MODEL_ID: u64 = 2_147_483_647;
/// Bytes of a preview image: the smallest body and the spread above it.
const IMAGE_MIN_BYTES: u64 = 16 * 1024;
const IMAGE_SPREAD_BYTES: u64 = 24 * 1024;
/// JPEG start-of-image plus APP0 marker: what a client sniffing previews expects first.
const JPEG_MAGIC: [u8; 4] = [0xFF, 0xD8, 0xFF, 0xE0];
/// BlurHash sent for every preview (copied from a real response).
const IMAGE_BLURHASH: &str = "U7Am@@$^J3%100R;pLR.M]tQ-ps+?wRiVrof";
/// `files[].type` values that count as weights when the download route scores files (§6.2).
const WEIGHT_FILE_TYPES: [&str; 4] = ["Model", "Pruned Model", "Diffusion Model", "UNet"];
/// `type=` values the download route accepts (§4.2); anything else is a 400.
const MODEL_FILE_TYPES: [&str; 17] = [
    "Model",
    "Text Encoder",
    "Vision Encoder",
    "Pruned Model",
    "Negative",
    "Training Data",
    "VAE",
    "Config",
    "Archive",
    "UNet",
    "Diffusion Model",
    "CLIPVision",
    "ControlNet",
    "Workflow",
    "Upscaler",
    "Enhancement LoRA",
    "Other",
];
/// `format=` values the download route accepts (§4.3).
const FILE_FORMATS: [&str; 7] = [
    "SafeTensor",
    "PickleTensor",
    "GGUF",
    "Diffusers",
    "Core ML",
    "ONNX",
    "Other",
];
/// The longest `fp=` value the download route accepts.
const MAX_FP_CHARS: usize = 64;
/// Path prefix of the download route, the one hop from the API to storage.
const DOWNLOAD_ROUTE_PREFIX: &str = "/api/download/models/";

const MSG_LOGIN_REQUIRED: &str =
    "The creator of this asset requires you to be logged in to download it";
const MSG_DOWNLOADS_DISABLED: &str =
    "The creator of this asset has disabled downloads on this file";
const MSG_EARLY_ACCESS: &str = "This asset is in Early Access. You can use Buzz access it now!";
const MSG_NO_GRANT: &str = "You do not have access to download this file";
const MSG_FILE_NOT_FOUND: &str = "File not found";
const MSG_ARCHIVED: &str = "Model archived, not available for download";
const MSG_QUOTA: &str = "We've noticed an unusual amount of downloading from your account. Contact support@civitai.com or come back later.";
const MSG_TOO_MANY_PAGES: &str = "You've requested too many pages, please use cursors instead";
const MSG_PAGE_WITH_QUERY: &str =
    "Cannot use page param with query search. Use cursor-based pagination.";
const MSG_SERVER_BUSY: &str = "Server busy, please retry shortly.";
const MAINTENANCE_PAGE: &str = "<!DOCTYPE html><html><head><title>Civitai | Maintenance</title></head><body><h1>We're adjusting a few things, be back in a few minutes...</h1></body></html>";
const OUTAGE_PAGE: &str = "<!DOCTYPE html><html><head><title>503 Service Temporarily Unavailable</title></head><body><h1>503 Service Temporarily Unavailable</h1><p>cloudflare</p></body></html>";
const STORAGE_ERROR_PAGE: &str = "<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>";
const LOGIN_PAGE: &str = "<!DOCTYPE html><html><head><title>Sign in | Civitai</title></head><body><h1>Sign in to Civitai</h1></body></html>";
const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";

// ---------------------------------------------------------------------------------------------
// Catalogue
// ---------------------------------------------------------------------------------------------

/// What the fake serves: models, their versions and files, and the API keys it accepts.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Every model, in any order (listings sort by id).
    pub models: Vec<FakeModel>,
    /// Keys accepted as `Authorization: Bearer K` or `?token=K`.
    pub valid_keys: Vec<String>,
}

/// One model page on the fake site.
#[derive(Debug, Clone)]
pub struct FakeModel {
    /// Model id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// `ModelType` string, e.g. "LORA", "Checkpoint".
    pub model_type: String,
    /// Creator username.
    pub creator: String,
    /// Hidden from `/models` unless the caller sends `nsfw=true`.
    pub nsfw: bool,
    /// `Some("Archived")` empties every version's files and makes downloads answer 410.
    pub mode: Option<String>,
    /// Versions, newest first (`index` 0 is the first element).
    pub versions: Vec<FakeVersion>,
}

/// One model version.
#[derive(Debug, Clone)]
pub struct FakeVersion {
    /// Version id, the id the download route takes.
    pub id: u64,
    /// Version name, e.g. "v1.0".
    pub name: String,
    /// Base model, e.g. "SDXL 1.0".
    pub base_model: String,
    /// Who may download it.
    pub access: Access,
    /// Files of the version.
    pub files: Vec<FakeFile>,
    /// Number of preview images.
    pub images: u32,
}

/// Download gate of a version, mirroring the download route's refusal cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone may download.
    Public,
    /// Needs a valid key (401 otherwise).
    LoginRequired,
    /// Paid early access not bought: always 403 with the deadline.
    EarlyAccess {
        /// ISO 8601 end of the early-access window.
        deadline: String,
    },
    /// Generation-only resource: always 401 "disabled downloads".
    DownloadsDisabled,
    /// Gated resource the caller has no grant for: always 403.
    NoGrant,
}

/// One downloadable file; its bytes are generated from `seed`.
#[derive(Debug, Clone)]
pub struct FakeFile {
    /// File id (`?fileId=`).
    pub id: u64,
    /// Download name (`files[].name` and `Content-Disposition`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Seed of the generated content.
    pub seed: u64,
    /// `ModelFileType`, e.g. "Model".
    pub file_type: String,
    /// `metadata.format`, e.g. "SafeTensor".
    pub format: Option<String>,
    /// `metadata.fp`, e.g. "fp16".
    pub fp: Option<String>,
    /// `metadata.size`: "pruned" or "full".
    pub size_kind: Option<String>,
    /// Whether this is the version's primary file.
    pub primary: bool,
    /// What the API publishes as the SHA-256.
    pub published_hash: PublishedHash,
    /// Storage misbehaviour for the first attempts.
    pub faults: FileFaults,
}

/// The SHA-256 the API publishes for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishedHash {
    /// The real hash of the served bytes.
    Correct,
    /// `hashes` is `{}` (hashing still pending).
    Missing,
    /// A valid-looking hash that does not match the (consistent) bytes.
    Wrong,
}

/// Per-file storage faults; each applies to GET attempts `1..=N` of that file.
#[derive(Debug, Default, Clone)]
pub struct FileFaults {
    /// First N GETs flip one byte in the body.
    pub corrupt_attempts: u32,
    /// `(bytes, attempts)`: the first N GETs cut the connection after K body bytes.
    pub reset_after: Option<(u64, u32)>,
    /// `(bytes, attempts)`: the first N GETs stop sending (without closing) after K body bytes.
    pub stall_after: Option<(u64, u32)>,
    /// First N GETs answer 200 `text/html` instead of the file.
    pub html_attempts: u32,
    /// Always answer 200 with the whole file, even to a Range request.
    pub ignore_range: bool,
    /// First N GETs answer 200 `application/octet-stream` with a JSON error body, sent chunked
    /// without `Content-Length`: an error page that only its first bytes give away.
    pub json_error_attempts: u32,
    /// Ranged GETs among the first N attempts answer 416 `Content-Range: bytes */<size>`, whatever
    /// the range asked for.
    pub unsatisfiable_range_attempts: u32,
    /// Ranged GETs from a non-zero offset among the first N attempts answer 206 with the bytes of a
    /// range starting one byte earlier than asked, and a `Content-Range` saying so.
    pub misplaced_range_attempts: u32,
}

/// Server-wide fault and pacing knobs; change them while running with [`FakeCivitai::set_knobs`].
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Added before every API answer.
    pub api_latency: Duration,
    /// Bytes per second per storage connection (`None` or 0 = unlimited).
    pub bandwidth: Option<u64>,
    /// First N API requests (any path except `/api/v1/me`) answer 503 with `Retry-After`.
    pub api_503_first: u32,
    /// The next N answer 429 with `Retry-After`.
    pub api_429_first: u32,
    /// The next N answer 200 `text/html` (maintenance page).
    pub api_html_first: u32,
    /// `Retry-After` seconds on those 429/503 answers.
    pub retry_after_secs: u64,
    /// Lifetime of signed storage URLs.
    pub url_ttl: Duration,
    /// `(start, length)` after the knobs took effect: every API and storage request in the window
    /// gets 503 `text/html`.
    pub outage: Option<(Duration, Duration)>,
    /// After N successful resolves, the download route answers the quota 429.
    pub quota_after: Option<u32>,
    /// Answer 429 to a ranged GET while another GET of the same file is still open.
    pub storage_refuses_ranges_when_concurrent: bool,
    /// Added before every preview image answer (images are tiny, so without it parallel
    /// fetches would never overlap and their concurrency could not be observed).
    pub image_latency: Duration,
    /// First N requests to the download route answer 503 with `Retry-After`; other API paths
    /// are spared, so a run gets as far as resolving.
    pub download_route_503_first: u32,
    /// Listing pages carry only `metadata.nextPage`, without `nextCursor`.
    pub omit_next_cursor: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            api_latency: Duration::ZERO,
            bandwidth: None,
            api_503_first: 0,
            api_429_first: 0,
            api_html_first: 0,
            retry_after_secs: 1,
            url_ttl: Duration::from_secs(3600),
            outage: None,
            quota_after: None,
            storage_refuses_ranges_when_concurrent: false,
            image_latency: Duration::ZERO,
            download_route_503_first: 0,
            omit_next_cursor: false,
        }
    }
}

impl FakeModel {
    /// A healthy, SFW model by "tester"; adjust fields with struct-update syntax.
    pub fn new(id: u64, name: &str, model_type: &str, versions: Vec<FakeVersion>) -> FakeModel {
        FakeModel {
            id,
            name: name.to_owned(),
            model_type: model_type.to_owned(),
            creator: "tester".to_owned(),
            nsfw: false,
            mode: None,
            versions,
        }
    }
}

impl FakeVersion {
    /// A public "SDXL 1.0" version without previews.
    pub fn new(id: u64, name: &str, files: Vec<FakeFile>) -> FakeVersion {
        FakeVersion {
            id,
            name: name.to_owned(),
            base_model: "SDXL 1.0".to_owned(),
            access: Access::Public,
            files,
            images: 0,
        }
    }
}

impl FakeFile {
    /// A primary SafeTensor "Model" file seeded with its id, correct hash, no faults.
    pub fn new(id: u64, name: &str, size: u64) -> FakeFile {
        FakeFile {
            id,
            name: name.to_owned(),
            size,
            seed: id,
            file_type: "Model".to_owned(),
            format: Some("SafeTensor".to_owned()),
            fp: None,
            size_kind: None,
            primary: true,
            published_hash: PublishedHash::Correct,
            faults: FileFaults::default(),
        }
    }
}

impl Catalog {
    /// A handful of models for `demo` / `fake-server`, about 230 MiB in all: a two-version
    /// checkpoint, a LoRA with fp16 and fp32 files, a small TextualInversion whose first download
    /// is corrupted, and a VAE; all public, with previews.
    pub fn demo() -> Catalog {
        let checkpoint = FakeModel {
            creator: "dreamsmith".to_owned(),
            ..FakeModel::new(
                101,
                "Dreamscape XL",
                "Checkpoint",
                vec![
                    FakeVersion {
                        images: 3,
                        ..FakeVersion::new(
                            201,
                            "v2.0",
                            vec![FakeFile {
                                fp: Some("fp16".to_owned()),
                                size_kind: Some("pruned".to_owned()),
                                ..FakeFile::new(301, "dreamscapeXL_v20.safetensors", 120 * MIB)
                            }],
                        )
                    },
                    FakeVersion {
                        images: 2,
                        ..FakeVersion::new(
                            202,
                            "v1.0",
                            vec![FakeFile {
                                fp: Some("fp16".to_owned()),
                                size_kind: Some("pruned".to_owned()),
                                ..FakeFile::new(302, "dreamscapeXL_v10.safetensors", 48 * MIB)
                            }],
                        )
                    },
                ],
            )
        };
        let lora = FakeModel {
            creator: "inkwell".to_owned(),
            ..FakeModel::new(
                102,
                "Ink Wash Style",
                "LORA",
                vec![FakeVersion {
                    images: 2,
                    ..FakeVersion::new(
                        203,
                        "v1.0",
                        vec![
                            FakeFile {
                                fp: Some("fp16".to_owned()),
                                ..FakeFile::new(303, "ink wash style.safetensors", 20 * MIB)
                            },
                            FakeFile {
                                fp: Some("fp32".to_owned()),
                                primary: false,
                                ..FakeFile::new(304, "ink wash style.safetensors", 40 * MIB)
                            },
                        ],
                    )
                }],
            )
        };
        let embedding = FakeModel::new(
            103,
            "Glimmer Eyes",
            "TextualInversion",
            vec![FakeVersion {
                base_model: "SD 1.5".to_owned(),
                images: 1,
                ..FakeVersion::new(
                    204,
                    "v1.0",
                    vec![FakeFile {
                        faults: FileFaults {
                            corrupt_attempts: 1,
                            ..FileFaults::default()
                        },
                        ..FakeFile::new(305, "glimmereyes.safetensors", 200 * 1024)
                    }],
                )
            }],
        );
        let vae = FakeModel::new(
            104,
            "Clear VAE",
            "VAE",
            vec![FakeVersion {
                images: 1,
                ..FakeVersion::new(
                    205,
                    "v1.0",
                    vec![FakeFile {
                        file_type: "VAE".to_owned(),
                        ..FakeFile::new(306, "clearVae_v10.safetensors", 16 * MIB)
                    }],
                )
            }],
        );
        Catalog {
            models: vec![checkpoint, lora, embedding, vae],
            valid_keys: vec!["demo-key".to_owned()],
        }
    }

    /// `n` simple public LORA models (ids 1000.., versions 2000.., files 3000..), each with one
    /// primary file of `file_size` bytes and no previews, creator "tester".
    pub fn uniform(n: usize, file_size: u64) -> Catalog {
        let models = (0..n as u64)
            .map(|i| {
                let file = FakeFile::new(
                    3000 + i,
                    &format!("uniform_lora_{i}.safetensors"),
                    file_size,
                );
                let version = FakeVersion::new(2000 + i, "v1.0", vec![file]);
                FakeModel::new(
                    1000 + i,
                    &format!("Uniform LoRA {i}"),
                    "LORA",
                    vec![version],
                )
            })
            .collect();
        Catalog {
            models,
            valid_keys: vec!["test-key".to_owned()],
        }
    }

    /// The model with this id.
    pub fn model(&self, id: u64) -> Option<&FakeModel> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The version with this id and its model.
    pub fn version(&self, id: u64) -> Option<(&FakeModel, &FakeVersion)> {
        self.models
            .iter()
            .flat_map(|m| m.versions.iter().map(move |v| (m, v)))
            .find(|(_, v)| v.id == id)
    }

    /// The file with this id.
    pub fn file(&self, id: u64) -> Option<&FakeFile> {
        self.models
            .iter()
            .flat_map(|m| &m.versions)
            .flat_map(|v| &v.files)
            .find(|f| f.id == id)
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic content
// ---------------------------------------------------------------------------------------------

/// SplitMix64 finaliser: cheap, well mixed, and enough for reproducible test bytes.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic content: the byte stream of a file is a pure function of (seed, offset), so any
/// range can be produced without producing what comes before it.
pub fn fill_bytes(seed: u64, offset: u64, buf: &mut [u8]) {
    let key = mix64(seed);
    let mut pos = offset;
    let mut filled = 0;
    while filled < buf.len() {
        let word = mix64(key ^ (pos / 8)).to_le_bytes();
        let start = (pos % 8) as usize;
        let n = (8 - start).min(buf.len() - filled);
        buf[filled..filled + n].copy_from_slice(&word[start..start + n]);
        filled += n;
        pos += n as u64;
    }
}

/// Uppercase hex SHA-256 of the whole generated file, computed by streaming [`fill_bytes`].
pub fn content_sha256(seed: u64, size: u64) -> String {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_BYTES as usize];
    let mut offset = 0;
    while offset < size {
        let n = CHUNK_BYTES.min(size - offset) as usize;
        fill_bytes(seed, offset, &mut buf[..n]);
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    hex_upper(&hasher.finalize())
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Hashes every file once, spread over the available cores, because a benchmark catalogue can
/// hold gigabytes and the hash is needed for JSON bodies and ETags on every request.
fn hash_catalog(catalog: &Catalog) -> HashMap<u64, String> {
    let mut files: Vec<(u64, u64, u64)> = catalog
        .models
        .iter()
        .flat_map(|m| &m.versions)
        .flat_map(|v| &v.files)
        .map(|f| (f.id, f.seed, f.size))
        .collect();
    files.sort_unstable();
    files.dedup_by_key(|f| f.0);
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, files.len().max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let files = &files;
                scope.spawn(move || {
                    files
                        .iter()
                        .skip(w)
                        .step_by(workers)
                        .map(|&(id, seed, size)| (id, content_sha256(seed, size)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Bytes of preview image `index` of a version: a JPEG-looking body of 16–40 KiB.
fn image_bytes(version_id: u64, index: u32) -> Vec<u8> {
    let seed = mix64(version_id ^ (u64::from(index) << 40) ^ 0x1A6E);
    let len = IMAGE_MIN_BYTES + seed % IMAGE_SPREAD_BYTES;
    let mut body = vec![0u8; len as usize];
    fill_bytes(seed, 0, &mut body);
    body[..JPEG_MAGIC.len()].copy_from_slice(&JPEG_MAGIC);
    let end = body.len();
    body[end - 2..].copy_from_slice(&[0xFF, 0xD9]);
    body
}

// ---------------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------------

/// Current and peak number of open responses of one origin.
#[derive(Debug, Default)]
struct Gauge {
    open: AtomicU64,
    high_water: AtomicU64,
}

impl Gauge {
    fn enter(self: &Arc<Self>) -> OpenResponse {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.high_water.fetch_max(now, Ordering::SeqCst);
        OpenResponse(Arc::clone(self))
    }
}

/// Counts one response as open until dropped (for storage: until the body stream ends or drops).
struct OpenResponse(Arc<Gauge>);

impl Drop for OpenResponse {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Live counters, readable while the server runs.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    api_requests: AtomicU64,
    resolves: AtomicU64,
    download_route_requests: AtomicU64,
    storage_requests: AtomicU64,
    storage_bytes: AtomicU64,
    auth_at_storage: AtomicU64,
    api_open: Arc<Gauge>,
    storage_open: Arc<Gauge>,
    ranges: Mutex<Vec<(u64, Option<String>)>>,
    api_request_times: Mutex<Vec<Duration>>,
    user_agents: Mutex<Vec<String>>,
}

impl Stats {
    fn new(started: Instant) -> Stats {
        Stats {
            started,
            api_requests: AtomicU64::new(0),
            resolves: AtomicU64::new(0),
            download_route_requests: AtomicU64::new(0),
            storage_requests: AtomicU64::new(0),
            storage_bytes: AtomicU64::new(0),
            auth_at_storage: AtomicU64::new(0),
            api_open: Arc::default(),
            storage_open: Arc::default(),
            ranges: Mutex::default(),
            api_request_times: Mutex::default(),
            user_agents: Mutex::default(),
        }
    }

    /// All requests to the API origin.
    pub fn api_requests(&self) -> u64 {
        self.api_requests.load(Ordering::SeqCst)
    }

    /// Requests to `/api/download/models/*` answered 307.
    pub fn resolves(&self) -> u64 {
        self.resolves.load(Ordering::SeqCst)
    }

    /// Every request to `/api/download/models/*`, whatever it was answered (faults included).
    pub fn download_route_requests(&self) -> u64 {
        self.download_route_requests.load(Ordering::SeqCst)
    }

    /// GET and HEAD requests on the storage origin (files and images).
    pub fn storage_requests(&self) -> u64 {
        self.storage_requests.load(Ordering::SeqCst)
    }

    /// File body bytes sent by storage.
    pub fn storage_bytes(&self) -> u64 {
        self.storage_bytes.load(Ordering::SeqCst)
    }

    /// Storage requests that carried any `Authorization` header (a key leak; must stay 0).
    pub fn auth_at_storage(&self) -> u64 {
        self.auth_at_storage.load(Ordering::SeqCst)
    }

    /// High-water mark of concurrently open storage responses (open until the body ends or drops).
    pub fn max_concurrent_storage(&self) -> u64 {
        self.storage_open.high_water.load(Ordering::SeqCst)
    }

    /// High-water mark of concurrently handled API requests.
    pub fn max_concurrent_api(&self) -> u64 {
        self.api_open.high_water.load(Ordering::SeqCst)
    }

    /// `(file id, Range header)` of every storage file GET, in arrival order.
    pub fn ranges(&self) -> Vec<(u64, Option<String>)> {
        lock(&self.ranges).clone()
    }

    /// Arrival offsets of API requests since the server started.
    pub fn api_request_times(&self) -> Vec<Duration> {
        lock(&self.api_request_times).clone()
    }

    /// Distinct User-Agents seen on the API, in order of first appearance.
    pub fn user_agents(&self) -> Vec<String> {
        lock(&self.user_agents).clone()
    }

    fn record_api_request(&self, path: &str, headers: &HeaderMap) {
        self.api_requests.fetch_add(1, Ordering::SeqCst);
        if path.starts_with(DOWNLOAD_ROUTE_PREFIX) {
            self.download_route_requests.fetch_add(1, Ordering::SeqCst);
        }
        lock(&self.api_request_times).push(self.started.elapsed());
        if let Some(agent) = header_str(headers, &header::USER_AGENT) {
            let mut agents = lock(&self.user_agents);
            if !agents.iter().any(|a| a == agent) {
                agents.push(agent.to_owned());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server state
// ---------------------------------------------------------------------------------------------

/// Knobs plus the counters whose meaning is relative to them, so `set_knobs` restarts the
/// "first N requests" and quota sequences and the outage clock.
struct KnobState {
    knobs: Knobs,
    since: Instant,
    api_requests_counted: u64,
    download_route_requests_counted: u64,
    resolves: u64,
}

/// An API answer that replaces the real one because of a knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApiFault {
    Outage,
    Unavailable { retry_after_secs: u64 },
    TooManyRequests { retry_after_secs: u64 },
    MaintenancePage,
}

impl KnobState {
    fn new(knobs: Knobs) -> KnobState {
        KnobState {
            knobs,
            since: Instant::now(),
            api_requests_counted: 0,
            download_route_requests_counted: 0,
            resolves: 0,
        }
    }

    fn in_outage(&self) -> bool {
        self.knobs.outage.is_some_and(|(start, length)| {
            let elapsed = self.since.elapsed();
            elapsed >= start && elapsed < start + length
        })
    }

    fn next_api_fault(&mut self, path: &str) -> Option<ApiFault> {
        if self.in_outage() {
            return Some(ApiFault::Outage);
        }
        if path == "/api/v1/me" {
            return None;
        }
        if path.starts_with(DOWNLOAD_ROUTE_PREFIX) {
            let seq = self.download_route_requests_counted;
            self.download_route_requests_counted += 1;
            if seq < u64::from(self.knobs.download_route_503_first) {
                return Some(ApiFault::Unavailable {
                    retry_after_secs: self.knobs.retry_after_secs,
                });
            }
        }
        let seq = self.api_requests_counted;
        self.api_requests_counted += 1;
        let retry_after_secs = self.knobs.retry_after_secs;
        let unavailable_end = u64::from(self.knobs.api_503_first);
        let throttled_end = unavailable_end + u64::from(self.knobs.api_429_first);
        let maintenance_end = throttled_end + u64::from(self.knobs.api_html_first);
        if seq < unavailable_end {
            Some(ApiFault::Unavailable { retry_after_secs })
        } else if seq < throttled_end {
            Some(ApiFault::TooManyRequests { retry_after_secs })
        } else if seq < maintenance_end {
            Some(ApiFault::MaintenancePage)
        } else {
            None
        }
    }

    fn quota_reached(&self) -> bool {
        self.knobs
            .quota_after
            .is_some_and(|limit| self.resolves >= u64::from(limit))
    }
}

/// Where each version and file sits in the catalogue, so lookups stay O(1) for big catalogues.
#[derive(Default)]
struct CatalogIndex {
    versions: HashMap<u64, (usize, usize)>,
    files: HashMap<u64, (usize, usize, usize)>,
}

impl CatalogIndex {
    fn build(catalog: &Catalog) -> CatalogIndex {
        let mut index = CatalogIndex::default();
        for (mi, model) in catalog.models.iter().enumerate() {
            for (vi, version) in model.versions.iter().enumerate() {
                index.versions.entry(version.id).or_insert((mi, vi));
                for (fi, file) in version.files.iter().enumerate() {
                    index.files.entry(file.id).or_insert((mi, vi, fi));
                }
            }
        }
        index
    }
}

/// Everything the handlers of both origins share.
struct Shared {
    catalog: Catalog,
    index: CatalogIndex,
    sha256: HashMap<u64, String>,
    api_url: String,
    storage_url: String,
    secret: u64,
    stats: Stats,
    knobs: Mutex<KnobState>,
    storage_attempts: Mutex<HashMap<u64, u32>>,
    open_file_gets: Mutex<HashMap<u64, u32>>,
    shutdown: CancellationToken,
}

impl Shared {
    fn new(catalog: Catalog, knobs: Knobs, api: SocketAddr, storage: SocketAddr) -> Shared {
        Shared {
            index: CatalogIndex::build(&catalog),
            sha256: hash_catalog(&catalog),
            catalog,
            api_url: format!("http://{api}"),
            storage_url: format!("http://{storage}"),
            secret: fastrand::u64(..),
            stats: Stats::new(Instant::now()),
            knobs: Mutex::new(KnobState::new(knobs)),
            storage_attempts: Mutex::default(),
            open_file_gets: Mutex::default(),
            shutdown: CancellationToken::new(),
        }
    }

    fn knob_state(&self) -> MutexGuard<'_, KnobState> {
        lock(&self.knobs)
    }

    fn version(&self, id: u64) -> Option<(&FakeModel, &FakeVersion)> {
        let &(mi, vi) = self.index.versions.get(&id)?;
        let model = &self.catalog.models[mi];
        Some((model, &model.versions[vi]))
    }

    fn file(&self, id: u64) -> Option<&FakeFile> {
        let &(mi, vi, fi) = self.index.files.get(&id)?;
        Some(&self.catalog.models[mi].versions[vi].files[fi])
    }

    fn real_sha256(&self, file: &FakeFile) -> &str {
        self.sha256.get(&file.id).map_or("", String::as_str)
    }

    /// The SHA-256 the API claims for the file, if it publishes one.
    fn published_sha256(&self, file: &FakeFile) -> Option<String> {
        let real = self.real_sha256(file);
        match file.published_hash {
            PublishedHash::Correct => Some(real.to_owned()),
            PublishedHash::Missing => None,
            PublishedHash::Wrong => Some(hex_upper(&Sha256::digest(real.as_bytes()))),
        }
    }

    /// Whether the request carries a valid key; the header wins over `?token=`, and an invalid
    /// key simply means anonymous, like the real API.
    fn signed_in(&self, headers: &HeaderMap, params: &QueryParams) -> bool {
        let key = match header_str(headers, &header::AUTHORIZATION) {
            Some(value) => value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, key)| key.trim()),
            None => params.get("token"),
        };
        key.is_some_and(|k| self.catalog.valid_keys.iter().any(|valid| valid == k))
    }

    /// Opaque storage object key of a file, stable for the server's lifetime.
    fn object_key(&self, file: &FakeFile) -> String {
        format!("{:016x}", mix64(file.id ^ self.secret))
    }

    fn signature(&self, file_id: u64, expires_ms: u64) -> String {
        let digest = Sha256::new()
            .chain_update(self.secret.to_le_bytes())
            .chain_update(file_id.to_le_bytes())
            .chain_update(expires_ms.to_le_bytes())
            .finalize();
        hex_upper(&digest[..16]).to_lowercase()
    }

    fn signed_url(&self, file: &FakeFile, ttl: Duration) -> String {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let expires = unix_ms().saturating_add(ttl_ms);
        format!(
            "{}/file/{}/{}?expires={expires}&sig={}",
            self.storage_url,
            file.id,
            self.object_key(file),
            self.signature(file.id, expires)
        )
    }

    fn download_url(&self, version_id: u64) -> String {
        format!("{}/api/download/models/{version_id}", self.api_url)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

// ---------------------------------------------------------------------------------------------
// Query strings
// ---------------------------------------------------------------------------------------------

/// Decoded query parameters in order; repeated keys are kept (`types=A&types=B`).
#[derive(Debug, Default)]
struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    fn parse(query: Option<&str>) -> QueryParams {
        QueryParams(
            query
                .unwrap_or("")
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(key), percent_decode(value))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

/// Decodes `%XX` and `+`; malformed escapes stay literal, as lenient servers do.
fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| input.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so spaces become `%20`).
fn percent_encode(input: &str) -> String {
    input
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    response(status, JSON_CONTENT_TYPE, body.to_string())
}

fn error_json(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

/// Sets a header built from our own data; values that are not valid header text are skipped
/// rather than turned into a panic.
fn set_header(res: &mut Response, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        res.headers_mut().insert(name, value);
    }
}

fn with_retry_after(mut res: Response, secs: u64) -> Response {
    set_header(&mut res, header::RETRY_AFTER, &secs.to_string());
    res
}

impl ApiFault {
    fn response(self) -> Response {
        match self {
            ApiFault::Outage => outage_response(),
            ApiFault::Unavailable { retry_after_secs } => with_retry_after(
                error_json(StatusCode::SERVICE_UNAVAILABLE, MSG_SERVER_BUSY),
                retry_after_secs,
            ),
            ApiFault::TooManyRequests { retry_after_secs } => with_retry_after(
                error_json(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
                retry_after_secs,
            ),
            ApiFault::MaintenancePage => {
                response(StatusCode::OK, HTML_CONTENT_TYPE, MAINTENANCE_PAGE)
            }
        }
    }
}

fn outage_response() -> Response {
    response(
        StatusCode::SERVICE_UNAVAILABLE,
        HTML_CONTENT_TYPE,
        OUTAGE_PAGE,
    )
}

/// An S3-style XML error, as the storage hosts behind Civitai send.
fn storage_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    response(status, "application/xml", body)
}

// ---------------------------------------------------------------------------------------------
// JSON bodies
// ---------------------------------------------------------------------------------------------

/// Which endpoint a body is for: the real API shapes models and versions differently per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    ModelList,
    ModelById,
    VersionById,
}

fn is_archived(model: &FakeModel) -> bool {
    model.mode.as_deref() == Some("Archived")
}

fn nsfw_level(nsfw: bool) -> u32 {
    if nsfw { 31 } else { 1 }
}

/// Newest version published last: December for index 0, one month earlier per older version.
fn published_at(index: usize) -> String {
    format!("2025-{:02}-15T12:00:00.000Z", 12 - (index % 12))
}

/// The AIR ecosystem segment for a base model (`urn:air:{eco}:...`).
fn air_ecosystem(base_model: &str) -> &'static str {
    let base = base_model.to_lowercase();
    if base.starts_with("sdxl") || base.starts_with("pony") || base.starts_with("illustrious") {
        "sdxl"
    } else if base.starts_with("sd 1") {
        "sd1"
    } else if base.starts_with("sd 2") {
        "sd2"
    } else if base.starts_with("flux.1") {
        "flux1"
    } else {
        "other"
    }
}

fn trained_words(model: &FakeModel) -> Vec<String> {
    let word: String = model
        .name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    vec![word.to_lowercase()]
}

impl Shared {
    fn model_json(&self, model: &FakeModel, endpoint: Endpoint) -> Value {
        let mut body = json!({
            "id": model.id,
            "name": model.name,
            "description": format!("<p>{} (fake)</p>", model.name),
            "allowNoCredit": true,
            "allowCommercialUse": ["Image", "RentCivit"],
            "allowDerivatives": true,
            "allowDifferentLicense": true,
            "type": model.model_type,
            "minor": false,
            "sfwOnly": false,
            "poi": false,
            "nsfw": model.nsfw,
            "nsfwLevel": nsfw_level(model.nsfw),
            "availability": "Public",
            "cosmetic": null,
            "supportsGeneration": false,
            "stats": {
                "downloadCount": model.id * 7 % 5000,
                "thumbsUpCount": model.id * 3 % 900,
                "thumbsDownCount": 0,
                "commentCount": model.id % 40,
                "tippedAmountCount": model.id % 500,
            },
            "creator": { "username": model.creator, "image": null },
            "tags": ["fake", model.model_type.to_lowercase()],
            "modelVersions": model
                .versions
                .iter()
                .enumerate()
                .map(|(index, v)| self.nested_version_json(model, v, index, endpoint))
                .collect::<Vec<_>>(),
        });
        if let Some(mode) = &model.mode {
            body["mode"] = json!(mode);
        }
        body
    }

    /// A version inside a Model object (`/models`, `/models/{id}`).
    fn nested_version_json(
        &self,
        model: &FakeModel,
        version: &FakeVersion,
        index: usize,
        endpoint: Endpoint,
    ) -> Value {
        let mut body = self.common_version_json(model, version, endpoint);
        body["index"] = json!(index);
        body["publishedAt"] = json!(published_at(index));
        body["supportsGeneration"] = json!(false);
        if let Access::EarlyAccess { deadline } = &version.access {
            body["earlyAccessDeadline"] = json!(deadline);
        }
        body
    }

    /// A version as `/model-versions/{id}` and `by-hash` return it.
    fn version_json(&self, model: &FakeModel, version: &FakeVersion) -> Value {
        let index = model
            .versions
            .iter()
            .position(|v| v.id == version.id)
            .unwrap_or(0);
        let mut body = self.common_version_json(model, version, Endpoint::VersionById);
        let mut model_summary = json!({
            "name": model.name,
            "type": model.model_type,
            "nsfw": model.nsfw,
            "poi": false,
        });
        if let Some(mode) = &model.mode {
            model_summary["mode"] = json!(mode);
        }
        let usage = if version.access == Access::DownloadsDisabled {
            "Generation"
        } else {
            "Download"
        };
        let extra = json!({
            "modelId": model.id,
            "createdAt": published_at(index),
            "updatedAt": published_at(index),
            "publishedAt": published_at(index),
            "status": "Published",
            "description": null,
            "uploadType": "Created",
            "usageControl": usage,
            "trainingStatus": null,
            "trainingDetails": null,
            "air": format!(
                "urn:air:{}:{}:civitai:{}@{}",
                air_ecosystem(&version.base_model),
                model.model_type.to_lowercase(),
                model.id,
                version.id
            ),
            "model": model_summary,
        });
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        body
    }

    fn common_version_json(
        &self,
        model: &FakeModel,
        version: &FakeVersion,
        endpoint: Endpoint,
    ) -> Value {
        let archived = is_archived(model);
        let files: Vec<Value> = if archived {
            Vec::new()
        } else {
            version
                .files
                .iter()
                .map(|f| self.file_json(version, f, endpoint))
                .collect()
        };
        let availability = match version.access {
            Access::EarlyAccess { .. } => "EarlyAccess",
            _ => "Public",
        };
        let mut body = json!({
            "id": version.id,
            "name": version.name,
            "baseModel": version.base_model,
            "baseModelType": "Standard",
            "availability": availability,
            "nsfwLevel": nsfw_level(model.nsfw),
            "trainedWords": trained_words(model),
            "stats": { "downloadCount": version.id * 5 % 3000, "thumbsUpCount": version.id % 300 },
            "files": files,
            "images": self.images_json(version, endpoint),
        });
        if !archived {
            body["downloadUrl"] = json!(self.download_url(version.id));
        }
        body
    }

    fn file_json(&self, version: &FakeVersion, file: &FakeFile, endpoint: Endpoint) -> Value {
        let mut metadata = serde_json::Map::new();
        for (key, value) in [
            ("format", &file.format),
            ("size", &file.size_kind),
            ("fp", &file.fp),
        ] {
            if let Some(value) = value {
                metadata.insert(key.to_owned(), json!(value));
            }
        }
        let hashes = match self.published_sha256(file) {
            Some(sha) => json!({ "SHA256": sha, "AutoV2": sha[..10] }),
            None => json!({}),
        };
        let mut body = json!({
            "id": file.id,
            "sizeKB": file.size as f64 / 1024.0,
            "name": file.name,
            "type": file.file_type,
            "pickleScanResult": "Success",
            "pickleScanMessage": "No Pickle imports",
            "virusScanResult": "Success",
            "virusScanMessage": null,
            "scannedAt": "2025-01-01T00:00:00.000Z",
            "metadata": metadata,
            "hashes": hashes,
            "downloadUrl": self.file_download_url(version.id, file),
        });
        if file.primary || endpoint == Endpoint::VersionById {
            body["primary"] = json!(file.primary);
        }
        body
    }

    /// The per-file download URL the real server builds (`createModelFileDownloadUrl`).
    fn file_download_url(&self, version_id: u64, file: &FakeFile) -> String {
        let base = self.download_url(version_id);
        if file.primary {
            return base;
        }
        let format = (file.file_type != "Training Data")
            .then_some(file.format.as_ref())
            .flatten();
        let parts: Vec<String> = [
            ("type", Some(&file.file_type)),
            ("format", format),
            ("size", file.size_kind.as_ref()),
            ("fp", file.fp.as_ref()),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key}={}", percent_encode(v))))
        .collect();
        format!("{base}?{}", parts.join("&"))
    }

    fn images_json(&self, version: &FakeVersion, endpoint: Endpoint) -> Vec<Value> {
        (0..version.images)
            .map(|i| {
                let mut image = json!({
                    "url": format!("{}/images/{}-{i}.jpeg", self.storage_url, version.id),
                    "nsfwLevel": 1,
                    "width": 512,
                    "height": 768,
                    "hash": IMAGE_BLURHASH,
                    "type": "image",
                    "meta": null,
                });
                if endpoint == Endpoint::ModelList {
                    image["id"] = json!(version.id * 100 + u64::from(i));
                }
                image
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// API handlers
// ---------------------------------------------------------------------------------------------

/// A `{"error": ...}` answer from a v1 endpoint.
#[derive(Debug, PartialEq, Eq)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: &str) -> ApiError {
        ApiError {
            status,
            message: message.to_owned(),
        }
    }

    fn response(&self) -> Response {
        error_json(self.status, &self.message)
    }
}

fn respond(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(error) => error.response(),
    }
}

/// Counts every API request and applies latency, outage and "first N" knobs before routing.
async fn api_gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let _open = shared.stats.api_open.enter();
    shared
        .stats
        .record_api_request(request.uri().path(), request.headers());
    let (latency, fault) = {
        let mut state = shared.knob_state();
        let fault = state.next_api_fault(request.uri().path());
        (state.knobs.api_latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(fault) => fault.response(),
        None => next.run(request).await,
    }
}

async fn get_model(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let result = match id.parse::<u64>() {
        Ok(n) if (1..=MAX_MODEL_ID).contains(&n) => shared
            .catalog
            .models
            .iter()
            .find(|m| m.id == n)
            .map(|m| shared.model_json(m, Endpoint::ModelById))
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, &format!("No model with id {n}"))),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            &format!("Invalid model id: {id}"),
        )),
    };
    respond(result)
}

fn version_body(
    shared: &Shared,
    found: Option<(&FakeModel, &FakeVersion)>,
) -> Result<Value, ApiError> {
    let (model, version) =
        found.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Model not found"))?;
    if version.files.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Missing model file"));
    }
    Ok(shared.version_json(model, version))
}

async fn get_version(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let found = id.parse().ok().and_then(|id| shared.version(id));
    respond(version_body(&shared, found))
}

async fn get_version_by_hash(
    State(shared): State<Arc<Shared>>,
    Path(hash): Path<String>,
) -> Response {
    let wanted = hash.to_uppercase();
    let found = shared
        .index
        .files
        .keys()
        .filter_map(|&id| shared.file(id))
        .filter(|file| {
            shared
                .published_sha256(file)
                .is_some_and(|sha| sha == wanted || sha[..10] == wanted)
        })
        .filter_map(|file| shared.index.files.get(&file.id))
        .map(|&(mi, vi, _)| shared.catalog.models[mi].versions[vi].id)
        .min()
        .and_then(|version_id| shared.version(version_id));
    respond(version_body(&shared, found))
}

async fn get_me(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = QueryParams::parse(query.as_deref());
    if shared.signed_in(&headers, &params) {
        json_response(
            StatusCode::OK,
            &json!({"id": 1, "username": "tester", "tier": "free", "status": "active",
                    "isMember": false, "subscriptions": []}),
        )
    } else {
        error_json(StatusCode::UNAUTHORIZED, "Unauthorized")
    }
}

/// Where a `/models` page starts: a cursor (the default) or a page number.
#[derive(Debug, PartialEq, Eq)]
enum PageStart {
    Cursor { after_id: Option<u64>, page: u64 },
    Page(usize),
}

/// The validated query of `GET /api/v1/models`.
#[derive(Debug)]
struct ModelQuery<'a> {
    limit: usize,
    start: PageStart,
    nsfw: bool,
    username: Option<String>,
    types: Vec<&'a str>,
    search: Option<String>,
}

impl<'a> ModelQuery<'a> {
    fn parse(params: &'a QueryParams) -> Result<ModelQuery<'a>, ApiError> {
        let bad = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, message);
        let limit = match params.get("limit") {
            None => MAX_PAGE_LIMIT,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
                .ok_or_else(|| bad("limit must be an integer between 1 and 100"))?,
        };
        let search = params.get("query").map(str::to_lowercase);
        let start = match (params.get("page"), params.get("cursor")) {
            (Some(_), _) if search.is_some() => return Err(bad(MSG_PAGE_WITH_QUERY)),
            (Some(raw), _) => {
                let page: usize = raw
                    .parse()
                    .ok()
                    .filter(|&p| p >= 1)
                    .ok_or_else(|| bad("page must be a positive integer"))?;
                if page.saturating_mul(limit) > PAGE_PAGING_CAP {
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        MSG_TOO_MANY_PAGES,
                    ));
                }
                PageStart::Page(page)
            }
            (None, Some(cursor)) => parse_cursor(cursor).ok_or_else(|| bad("Invalid cursor"))?,
            (None, None) => PageStart::Cursor {
                after_id: None,
                page: 1,
            },
        };
        Ok(ModelQuery {
            limit,
            start,
            nsfw: matches!(params.get("nsfw"), Some("true" | "1")),
            username: params.get("username").map(str::to_lowercase),
            types: params.all("types"),
            search,
        })
    }

    /// The "SQL" part: filters applied before the LIMIT.
    fn selects(&self, model: &FakeModel) -> bool {
        self.username
            .as_ref()
            .is_none_or(|u| model.creator.to_lowercase() == *u)
            && (self.types.is_empty() || self.types.contains(&model.model_type.as_str()))
    }

    /// Filters the real server applies after the LIMIT, which is why pages can come up short.
    fn keeps(&self, model: &FakeModel) -> bool {
        (self.nsfw || !model.nsfw)
            && self
                .search
                .as_ref()
                .is_none_or(|q| model.name.to_lowercase().contains(q))
    }
}

/// Parses a `"{lastId}|{page}"` cursor.
fn parse_cursor(cursor: &str) -> Option<PageStart> {
    let (last, page) = cursor.split_once('|')?;
    Some(PageStart::Cursor {
        after_id: Some(last.parse().ok()?),
        page: page.parse().ok()?,
    })
}

impl Shared {
    fn models_page(&self, params: &QueryParams, signed_in: bool) -> Result<Value, ApiError> {
        if (params.has("favorites") || params.has("hidden")) && !signed_in {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
        }
        let query = ModelQuery::parse(params)?;
        let mut candidates: Vec<&FakeModel> = self
            .catalog
            .models
            .iter()
            .filter(|m| query.selects(m))
            .collect();
        candidates.sort_by_key(|m| m.id);
        let first = match query.start {
            PageStart::Page(page) => (page - 1) * query.limit,
            PageStart::Cursor { after_id, .. } => {
                after_id.map_or(0, |last| candidates.partition_point(|m| m.id <= last))
            }
        };
        let window = candidates
            .get(first..(first + query.limit).min(candidates.len()))
            .unwrap_or_default();
        let more = first + query.limit < candidates.len();
        let items: Vec<Value> = window
            .iter()
            .filter(|m| query.keeps(m))
            .map(|m| self.model_json(m, Endpoint::ModelList))
            .collect();
        let mut metadata = serde_json::Map::new();
        match query.start {
            PageStart::Page(page) => {
                metadata.insert("currentPage".to_owned(), json!(page));
                metadata.insert("pageSize".to_owned(), json!(query.limit));
                if more {
                    let next = self.next_page_url(params, "page", &(page + 1).to_string());
                    metadata.insert("nextPage".to_owned(), json!(next));
                }
            }
            PageStart::Cursor { page, .. } => {
                if let (true, Some(last)) = (more, window.last()) {
                    let cursor = format!("{}|{}", last.id, page + 1);
                    let next = self.next_page_url(params, "cursor", &cursor);
                    if !self.knob_state().knobs.omit_next_cursor {
                        metadata.insert("nextCursor".to_owned(), json!(cursor));
                    }
                    metadata.insert("nextPage".to_owned(), json!(next));
                }
            }
        }
        Ok(json!({ "items": items, "metadata": metadata }))
    }

    /// The request's own URL with the paging parameter replaced, like `metadata.nextPage`.
    fn next_page_url(&self, params: &QueryParams, key: &str, value: &str) -> String {
        let query: Vec<String> = params
            .0
            .iter()
            .filter(|(k, _)| k != "cursor" && k != "page")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([(key, value)])
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        format!("{}/api/v1/models?{}", self.api_url, query.join("&"))
    }
}

async fn list_models(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = QueryParams::parse(query.as_deref());
    let signed_in = shared.signed_in(&headers, &params);
    respond(shared.models_page(&params, signed_in))
}

async fn login_page() -> Response {
    response(StatusCode::OK, HTML_CONTENT_TYPE, LOGIN_PAGE)
}

async fn api_not_found() -> Response {
    error_json(StatusCode::NOT_FOUND, "Not found")
}

async fn method_not_allowed() -> Response {
    error_json(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

// ---------------------------------------------------------------------------------------------
// Download route
// ---------------------------------------------------------------------------------------------

/// Why the download route refuses, in the order the real handler checks (§6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    Quota,
    BadParameter(String),
    FileNotFound,
    Archived,
    DownloadsDisabled,
    LoginRequired,
    EarlyAccess { deadline: String },
    NoGrant,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Quota => StatusCode::TOO_MANY_REQUESTS,
            Refusal::BadParameter(_) => StatusCode::BAD_REQUEST,
            Refusal::FileNotFound => StatusCode::NOT_FOUND,
            Refusal::Archived => StatusCode::GONE,
            Refusal::DownloadsDisabled | Refusal::LoginRequired => StatusCode::UNAUTHORIZED,
            Refusal::EarlyAccess { .. } | Refusal::NoGrant => StatusCode::FORBIDDEN,
        }
    }

    fn json(&self) -> Value {
        match self {
            Refusal::Quota => json!({ "error": MSG_QUOTA }),
            Refusal::BadParameter(message) => json!({ "error": message }),
            Refusal::FileNotFound => json!({ "error": MSG_FILE_NOT_FOUND }),
            Refusal::Archived => json!({ "error": MSG_ARCHIVED }),
            Refusal::DownloadsDisabled => {
                json!({ "error": "Unauthorized", "message": MSG_DOWNLOADS_DISABLED })
            }
            Refusal::LoginRequired => {
                json!({ "error": "Unauthorized", "message": MSG_LOGIN_REQUIRED })
            }
            Refusal::EarlyAccess { deadline } => {
                json!({ "error": "Early Access", "deadline": deadline, "message": MSG_EARLY_ACCESS })
            }
            Refusal::NoGrant => json!({ "error": MSG_NO_GRANT }),
        }
    }

    /// The plain-text body a browser gets: the most specific message of the JSON body.
    fn text(&self) -> String {
        let body = self.json();
        body.get("message")
            .or_else(|| body.get("error"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    fn response(&self, browser: bool, login_url: &str) -> Response {
        match (browser, self) {
            (false, _) => json_response(self.status(), &self.json()),
            (true, Refusal::LoginRequired) => {
                let mut res = Response::new(Body::empty());
                *res.status_mut() = StatusCode::FOUND;
                set_header(&mut res, header::LOCATION, login_url);
                res
            }
            (true, _) => response(self.status(), "text/plain; charset=utf-8", self.text()),
        }
    }
}

/// The file-choosing parameters of the download route.
#[derive(Debug, Default, PartialEq, Eq)]
struct FileSelection {
    file_id: Option<u64>,
    file_type: Option<String>,
    format: Option<String>,
    size: Option<String>,
    fp: Option<String>,
}

impl FileSelection {
    fn parse(params: &QueryParams) -> Result<FileSelection, Refusal> {
        let bad = |name: &str, value: &str| {
            Refusal::BadParameter(format!("Invalid value for {name}: {value}"))
        };
        let file_id = params
            .get("fileId")
            .map(|raw| raw.parse().map_err(|_| bad("fileId", raw)))
            .transpose()?;
        let checked = |name: &str, allowed: &dyn Fn(&str) -> bool| {
            params
                .get(name)
                .map(|v| {
                    if allowed(v) {
                        Ok(v.to_owned())
                    } else {
                        Err(bad(name, v))
                    }
                })
                .transpose()
        };
        Ok(FileSelection {
            file_id,
            file_type: checked("type", &|v| MODEL_FILE_TYPES.contains(&v))?,
            format: checked("format", &|v| FILE_FORMATS.contains(&v))?,
            size: checked("size", &|v| v == "full" || v == "pruned")?,
            fp: checked("fp", &|v| v.chars().count() <= MAX_FP_CHARS)?,
        })
    }

    fn has_preferences(&self) -> bool {
        self.file_type.is_some()
            || self.format.is_some()
            || self.size.is_some()
            || self.fp.is_some()
    }

    /// Score of §6.2: weights first, then format, size and fp against the wanted values.
    fn score(&self, file: &FakeFile) -> i32 {
        let vote = |wanted: &str, actual: &Option<String>, weight: i32| {
            if actual.as_deref() == Some(wanted) {
                weight
            } else {
                -weight
            }
        };
        let weights = if WEIGHT_FILE_TYPES.contains(&file.file_type.as_str()) {
            1000
        } else {
            0
        };
        1000 + weights
            + vote(
                self.format.as_deref().unwrap_or("SafeTensor"),
                &file.format,
                100,
            )
            + vote(
                self.size.as_deref().unwrap_or("pruned"),
                &file.size_kind,
                10,
            )
            + vote(self.fp.as_deref().unwrap_or("fp16"), &file.fp, 1)
    }

    fn matches_every_given(&self, file: &FakeFile) -> bool {
        let same =
            |wanted: &Option<String>, actual: &Option<String>| wanted.is_none() || wanted == actual;
        self.file_type.as_ref().is_none_or(|t| *t == file.file_type)
            && same(&self.format, &file.format)
            && same(&self.size, &file.size_kind)
            && same(&self.fp, &file.fp)
    }

    /// The file the route would serve, or `None` for a 404.
    fn choose<'v>(&self, version: &'v FakeVersion) -> Option<&'v FakeFile> {
        if let Some(id) = self.file_id {
            return version.files.iter().find(|f| f.id == id);
        }
        if !self.has_preferences() {
            return version
                .files
                .iter()
                .find(|f| f.primary)
                .or(version.files.first());
        }
        let mut best: Option<&FakeFile> = None;
        for file in version
            .files
            .iter()
            .filter(|f| self.file_type.as_ref().is_none_or(|t| *t == f.file_type))
        {
            if best.is_none_or(|b| self.score(file) > self.score(b)) {
                best = Some(file);
            }
        }
        best.filter(|f| self.matches_every_given(f))
    }
}

fn is_browser(headers: &HeaderMap) -> bool {
    let agent = header_str(headers, &header::USER_AGENT)
        .unwrap_or_default()
        .to_lowercase();
    ["mozilla", "chrome", "safari", "firefox", "opera", "edge"]
        .iter()
        .any(|marker| agent.contains(marker))
}

impl Shared {
    /// The download route's decision: a signed storage URL, or why not.
    fn resolve(
        &self,
        version_id: &str,
        params: &QueryParams,
        signed_in: bool,
    ) -> Result<String, Refusal> {
        if self.knob_state().quota_reached() {
            return Err(Refusal::Quota);
        }
        let version_id: u64 = version_id
            .parse()
            .map_err(|_| Refusal::BadParameter(format!("Invalid modelVersionId: {version_id}")))?;
        let selection = FileSelection::parse(params)?;
        let (model, version) = self.version(version_id).ok_or(Refusal::FileNotFound)?;
        let file = selection.choose(version).ok_or(Refusal::FileNotFound)?;
        match model.mode.as_deref() {
            Some("Archived") => return Err(Refusal::Archived),
            Some(_) => return Err(Refusal::FileNotFound),
            None => {}
        }
        match &version.access {
            Access::Public => {}
            Access::LoginRequired if signed_in => {}
            Access::LoginRequired => return Err(Refusal::LoginRequired),
            Access::DownloadsDisabled => return Err(Refusal::DownloadsDisabled),
            Access::EarlyAccess { deadline } => {
                return Err(Refusal::EarlyAccess {
                    deadline: deadline.clone(),
                });
            }
            Access::NoGrant => return Err(Refusal::NoGrant),
        }
        let ttl = {
            let mut state = self.knob_state();
            state.resolves += 1;
            state.knobs.url_ttl
        };
        self.stats.resolves.fetch_add(1, Ordering::SeqCst);
        Ok(self.signed_url(file, ttl))
    }
}

async fn resolve_download(
    State(shared): State<Arc<Shared>>,
    Path(version_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = QueryParams::parse(query.as_deref());
    let signed_in = shared.signed_in(&headers, &params);
    match shared.resolve(&version_id, &params, signed_in) {
        Ok(location) => {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            set_header(&mut res, header::LOCATION, &location);
            set_header(&mut res, header::CACHE_CONTROL, "no-store");
            res
        }
        Err(refusal) => {
            let return_url = percent_encode(&format!("/api/download/models/{version_id}"));
            let login_url = format!("{}/login?returnUrl={return_url}", shared.api_url);
            refusal.response(is_browser(&headers), &login_url)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Storage origin
// ---------------------------------------------------------------------------------------------

/// What part of a file a storage GET asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteSpan {
    Whole,
    /// Inclusive byte positions.
    Partial {
        first: u64,
        last: u64,
    },
    Unsatisfiable,
}

/// Reads `bytes=N-` / `bytes=N-M`; anything else is ignored (whole file), like S3 does with a
/// Range it cannot parse.
fn parse_range(header: Option<&str>, size: u64) -> ByteSpan {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteSpan::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return ByteSpan::Whole;
    };
    let Ok(first) = first.trim().parse::<u64>() else {
        return ByteSpan::Whole;
    };
    let last = match last.trim() {
        "" => None,
        text => match text.parse::<u64>() {
            Ok(last) if last >= first => Some(last),
            _ => return ByteSpan::Whole,
        },
    };
    if first >= size {
        return ByteSpan::Unsatisfiable;
    }
    ByteSpan::Partial {
        first,
        last: last.map_or(size - 1, |l| l.min(size - 1)),
    }
}

/// How a faulty attempt ends its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyCut {
    Reset { after: u64 },
    Stall { after: u64 },
}

impl BodyCut {
    fn after(self) -> u64 {
        match self {
            BodyCut::Reset { after } | BodyCut::Stall { after } => after,
        }
    }

    /// The cut that applies to this attempt; a reset wins over a stall if both are configured.
    fn for_attempt(faults: &FileFaults, attempt: u32) -> Option<BodyCut> {
        let active = |fault: Option<(u64, u32)>| fault.filter(|&(_, n)| attempt <= n);
        active(faults.reset_after)
            .map(|(after, _)| BodyCut::Reset { after })
            .or_else(|| active(faults.stall_after).map(|(after, _)| BodyCut::Stall { after }))
    }
}

/// Marks one file GET as open, for `storage_refuses_ranges_when_concurrent`.
struct OpenFileGet {
    shared: Arc<Shared>,
    file_id: u64,
}

impl OpenFileGet {
    fn new(shared: &Arc<Shared>, file_id: u64) -> OpenFileGet {
        *lock(&shared.open_file_gets).entry(file_id).or_default() += 1;
        OpenFileGet {
            shared: Arc::clone(shared),
            file_id,
        }
    }
}

impl Drop for OpenFileGet {
    fn drop(&mut self) {
        if let Some(open) = lock(&self.shared.open_file_gets).get_mut(&self.file_id) {
            *open = open.saturating_sub(1);
        }
    }
}

/// A generated file body being streamed, with its faults and pacing.
struct FileStream {
    shared: Arc<Shared>,
    seed: u64,
    next: u64,
    end: u64,
    sent: u64,
    corrupt_at: Option<u64>,
    cut: Option<BodyCut>,
    bandwidth: Option<u64>,
    started: Instant,
    finished: bool,
    _open: (OpenResponse, OpenFileGet),
}

impl FileStream {
    fn chunk_limit(&self) -> u64 {
        self.bandwidth.map_or(CHUNK_BYTES, |bps| {
            (bps / PACED_CHUNKS_PER_SEC).clamp(MIN_PACED_CHUNK_BYTES, CHUNK_BYTES)
        })
    }

    async fn next_chunk(mut self) -> Option<(io::Result<Bytes>, FileStream)> {
        if self.finished || self.next >= self.end {
            return None;
        }
        let mut len = self.chunk_limit().min(self.end - self.next);
        if let Some(cut) = self.cut {
            if self.sent >= cut.after() {
                self.finished = true;
                match cut {
                    BodyCut::Stall { .. } => self.shared.shutdown.cancelled().await,
                    BodyCut::Reset { .. } => tokio::time::sleep(RESET_FLUSH_DELAY).await,
                }
                let error = io::Error::new(io::ErrorKind::ConnectionReset, "fault: body cut");
                return Some((Err(error), self));
            }
            len = len.min(cut.after() - self.sent);
        }
        if let Some(bps) = self.bandwidth {
            let due = Duration::from_secs_f64((self.sent + len) as f64 / bps as f64);
            tokio::select! {
                () = tokio::time::sleep_until((self.started + due).into()) => {}
                () = self.shared.shutdown.cancelled() => {}
            }
        }
        if self.shared.shutdown.is_cancelled() {
            // A dropped server must not keep feeding slow bodies: cut them like a dying host.
            self.finished = true;
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, "fake server stopped");
            return Some((Err(error), self));
        }
        let mut buf = vec![0u8; len as usize];
        fill_bytes(self.seed, self.next, &mut buf);
        if let Some(at) = self
            .corrupt_at
            .filter(|at| (self.next..self.next + len).contains(at))
        {
            buf[(at - self.next) as usize] ^= 0xFF;
        }
        self.next += len;
        self.sent += len;
        self.shared
            .stats
            .storage_bytes
            .fetch_add(len, Ordering::SeqCst);
        Some((Ok(Bytes::from(buf)), self))
    }
}

/// `Content-Disposition` with an ASCII fallback and, for other names, the RFC 5987 form.
fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '_',
        })
        .collect();
    if fallback == name {
        format!("attachment; filename=\"{name}\"")
    } else {
        format!(
            "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
            percent_encode(name)
        )
    }
}

/// Why storage refuses a request before serving anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageRefusal {
    Outage,
    NoSuchKey,
    InvalidSignature,
    Expired,
}

impl StorageRefusal {
    fn response(self) -> Response {
        let denied = |message| storage_error(StatusCode::FORBIDDEN, "AccessDenied", message);
        match self {
            StorageRefusal::Outage => outage_response(),
            StorageRefusal::NoSuchKey => storage_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            ),
            StorageRefusal::InvalidSignature => denied("Invalid signature"),
            StorageRefusal::Expired => denied("Request has expired"),
        }
    }
}

impl Shared {
    /// Counts a storage request and refuses it during an outage; the guard keeps it counted as
    /// open for as long as the caller holds it.
    fn begin_storage_request(&self, headers: &HeaderMap) -> Result<OpenResponse, StorageRefusal> {
        let open = self.stats.storage_open.enter();
        self.stats.storage_requests.fetch_add(1, Ordering::SeqCst);
        if headers.contains_key(header::AUTHORIZATION) {
            self.stats.auth_at_storage.fetch_add(1, Ordering::SeqCst);
        }
        if self.knob_state().in_outage() {
            return Err(StorageRefusal::Outage);
        }
        Ok(open)
    }

    /// Checks the object path and signature of a storage URL.
    fn authorize_object(
        &self,
        file_id: &str,
        key: &str,
        params: &QueryParams,
    ) -> Result<&FakeFile, StorageRefusal> {
        let file = file_id
            .parse()
            .ok()
            .and_then(|id| self.file(id))
            .filter(|f| self.object_key(f) == key)
            .ok_or(StorageRefusal::NoSuchKey)?;
        let expires = params
            .get("expires")
            .and_then(|e| e.parse::<u64>().ok())
            .filter(|&e| params.get("sig") == Some(&self.signature(file.id, e)))
            .ok_or(StorageRefusal::InvalidSignature)?;
        if unix_ms() >= expires {
            return Err(StorageRefusal::Expired);
        }
        Ok(file)
    }

    fn next_attempt(&self, file_id: u64) -> u32 {
        let mut attempts = lock(&self.storage_attempts);
        let attempt = attempts.entry(file_id).or_default();
        *attempt = attempt.saturating_add(1);
        *attempt
    }

    fn file_is_open(&self, file_id: u64) -> bool {
        lock(&self.open_file_gets)
            .get(&file_id)
            .is_some_and(|&n| n > 0)
    }

    /// Status and headers of a file answer, with an empty body.
    fn file_head(&self, file: &FakeFile, span: ByteSpan) -> Response {
        let mut res = Response::new(Body::empty());
        let (status, length) = match span {
            ByteSpan::Whole => (StatusCode::OK, file.size),
            ByteSpan::Partial { first, last } => {
                let range = format!("bytes {first}-{last}/{}", file.size);
                set_header(&mut res, header::CONTENT_RANGE, &range);
                (StatusCode::PARTIAL_CONTENT, last - first + 1)
            }
            ByteSpan::Unsatisfiable => {
                set_header(
                    &mut res,
                    header::CONTENT_RANGE,
                    &format!("bytes */{}", file.size),
                );
                (StatusCode::RANGE_NOT_SATISFIABLE, 0)
            }
        };
        *res.status_mut() = status;
        let etag = format!(
            "\"{}\"",
            self.real_sha256(file).get(..16).unwrap_or_default()
        );
        set_header(&mut res, header::CONTENT_TYPE, "application/octet-stream");
        set_header(&mut res, header::CONTENT_LENGTH, &length.to_string());
        set_header(&mut res, header::ACCEPT_RANGES, "bytes");
        set_header(&mut res, header::ETAG, &etag);
        set_header(
            &mut res,
            header::CONTENT_DISPOSITION,
            &content_disposition(&file.name),
        );
        res
    }
}

/// Serves one attempt of a signed file GET/HEAD, applying the file's faults.
async fn serve_file(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path((file_id, key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let open = match shared.begin_storage_request(&headers) {
        Ok(open) => open,
        Err(refusal) => return refusal.response(),
    };
    let params = QueryParams::parse(query.as_deref());
    let file = match shared.authorize_object(&file_id, &key, &params) {
        Ok(file) => file,
        Err(refusal) => return refusal.response(),
    };
    let range = header_str(&headers, &header::RANGE).map(str::to_owned);
    let span = if file.faults.ignore_range {
        ByteSpan::Whole
    } else {
        parse_range(range.as_deref(), file.size)
    };
    if method == Method::HEAD {
        return shared.file_head(file, span);
    }
    lock(&shared.stats.ranges).push((file.id, range.clone()));
    let (refuse_concurrent, bandwidth) = {
        let state = shared.knob_state();
        (
            state.knobs.storage_refuses_ranges_when_concurrent,
            state.knobs.bandwidth.filter(|&bps| bps > 0),
        )
    };
    if refuse_concurrent && range.is_some() && shared.file_is_open(file.id) {
        return storage_error(
            StatusCode::TOO_MANY_REQUESTS,
            "SlowDown",
            "Please reduce your request rate.",
        );
    }
    let attempt = shared.next_attempt(file.id);
    if attempt <= file.faults.html_attempts {
        return response(StatusCode::OK, HTML_CONTENT_TYPE, STORAGE_ERROR_PAGE);
    }
    if attempt <= file.faults.json_error_attempts {
        return disguised_json_error();
    }
    let span = faulty_span(&file.faults, attempt, span);
    let mut res = shared.file_head(file, span);
    let (start, end) = match span {
        ByteSpan::Whole => (0, file.size),
        ByteSpan::Partial { first, last } => (first, last + 1),
        ByteSpan::Unsatisfiable => return res,
    };
    let stream = FileStream {
        shared: Arc::clone(&shared),
        seed: file.seed,
        next: start,
        end,
        sent: 0,
        corrupt_at: (attempt <= file.faults.corrupt_attempts).then_some(start + (end - start) / 2),
        cut: BodyCut::for_attempt(&file.faults, attempt),
        bandwidth,
        started: Instant::now(),
        finished: false,
        _open: (open, OpenFileGet::new(&shared, file.id)),
    };
    *res.body_mut() =
        Body::from_stream(futures_util::stream::unfold(stream, FileStream::next_chunk));
    res
}

/// A JSON error labelled as a binary file and streamed without a length, so neither the headers
/// nor the size give it away.
fn disguised_json_error() -> Response {
    let body = json!({ "error": MSG_FILE_NOT_FOUND }).to_string();
    let chunks = futures_util::stream::iter([Ok::<_, io::Error>(Bytes::from(body))]);
    let mut res = Response::new(Body::from_stream(chunks));
    set_header(&mut res, header::CONTENT_TYPE, "application/octet-stream");
    res
}

/// The span a ranged attempt is answered with once the range faults of this attempt apply.
fn faulty_span(faults: &FileFaults, attempt: u32, asked: ByteSpan) -> ByteSpan {
    let ByteSpan::Partial { first, last } = asked else {
        return asked;
    };
    if attempt <= faults.unsatisfiable_range_attempts {
        return ByteSpan::Unsatisfiable;
    }
    if attempt <= faults.misplaced_range_attempts && first > 0 {
        return ByteSpan::Partial {
            first: first - 1,
            last,
        };
    }
    asked
}

/// Serves `/images/{versionId}-{i}.jpeg`.
async fn serve_image(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let _open = match shared.begin_storage_request(&headers) {
        Ok(open) => open,
        Err(refusal) => return refusal.response(),
    };
    let latency = shared.knob_state().knobs.image_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let image = name
        .strip_suffix(".jpeg")
        .and_then(|stem| stem.split_once('-'))
        .and_then(|(v, i)| Some((v.parse::<u64>().ok()?, i.parse::<u32>().ok()?)))
        .filter(|&(v, i)| {
            shared
                .version(v)
                .is_some_and(|(_, version)| i < version.images)
        });
    match image {
        Some((version_id, index)) => {
            response(StatusCode::OK, "image/jpeg", image_bytes(version_id, index))
        }
        None => StorageRefusal::NoSuchKey.response(),
    }
}

async fn storage_not_found(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let refusal = shared
        .begin_storage_request(&headers)
        .err()
        .unwrap_or(StorageRefusal::NoSuchKey);
    refusal.response()
}

// ---------------------------------------------------------------------------------------------
// Server handle
// ---------------------------------------------------------------------------------------------

fn api_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/models", get(list_models))
        .route("/api/v1/models/{id}", get(get_model))
        .route("/api/v1/model-versions/{id}", get(get_version))
        .route(
            "/api/v1/model-versions/by-hash/{hash}",
            get(get_version_by_hash),
        )
        .route("/api/v1/me", get(get_me))
        .route("/api/download/models/{version_id}", get(resolve_download))
        .route("/login", get(login_page))
        .fallback(api_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            api_gate,
        ))
        .with_state(shared)
}

fn storage_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/file/{file_id}/{key}", get(serve_file))
        .route("/images/{name}", get(serve_image))
        .fallback(storage_not_found)
        .with_state(shared)
}

fn bind_loopback() -> io::Result<StdTcpListener> {
    let listener = StdTcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Spawns both origins on the current runtime; they stop when `shared.shutdown` is cancelled.
fn spawn_origins(
    shared: &Arc<Shared>,
    api: StdTcpListener,
    storage: StdTcpListener,
) -> io::Result<()> {
    for (listener, router) in [
        (api, api_router(Arc::clone(shared))),
        (storage, storage_router(Arc::clone(shared))),
    ] {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let shutdown = shared.shutdown.clone();
        tokio::spawn(async move {
            // An accept error ends this origin; clients then see refused connections, which
            // is the honest signal in a test.
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
    }
    Ok(())
}

/// A running fake Civitai (API and storage origins on 127.0.0.1). Dropping it stops the server.
pub struct FakeCivitai {
    shared: Arc<Shared>,
    background: Option<std::thread::JoinHandle<()>>,
}

impl FakeCivitai {
    /// Starts inside the current tokio runtime (used by demo/bench). Hashing the catalogue runs
    /// on the blocking pool first, so `start` takes longer for multi-GiB catalogues.
    pub async fn start(catalog: Catalog, knobs: Knobs) -> io::Result<FakeCivitai> {
        let (api, storage) = (bind_loopback()?, bind_loopback()?);
        let (api_addr, storage_addr) = (api.local_addr()?, storage.local_addr()?);
        let shared = tokio::task::spawn_blocking(move || {
            Shared::new(catalog, knobs, api_addr, storage_addr)
        })
        .await
        .map_err(io::Error::other)?;
        let shared = Arc::new(shared);
        spawn_origins(&shared, api, storage)?;
        Ok(FakeCivitai {
            shared,
            background: None,
        })
    }

    /// Starts on a private multi-thread runtime in a background thread (for sync tests that then
    /// run the binary with assert_cmd). Dropping the handle shuts it down and joins the thread.
    pub fn start_in_background(catalog: Catalog, knobs: Knobs) -> io::Result<FakeCivitai> {
        let (api, storage) = (bind_loopback()?, bind_loopback()?);
        let shared = Arc::new(Shared::new(
            catalog,
            knobs,
            api.local_addr()?,
            storage.local_addr()?,
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        {
            let _entered = runtime.enter();
            spawn_origins(&shared, api, storage)?;
        }
        let shutdown = shared.shutdown.clone();
        let background = std::thread::Builder::new()
            .name("fake-civitai".to_owned())
            .spawn(move || runtime.block_on(shutdown.cancelled()))?;
        Ok(FakeCivitai {
            shared,
            background: Some(background),
        })
    }

    /// Base URL of the API origin, e.g. `http://127.0.0.1:PORT` (no trailing slash).
    pub fn api_url(&self) -> String {
        self.shared.api_url.clone()
    }

    /// Base URL of the storage origin, e.g. `http://127.0.0.1:PORT2`.
    pub fn storage_url(&self) -> String {
        self.shared.storage_url.clone()
    }

    /// Live counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Replaces the knobs; the "first N" and quota sequences and the outage clock restart.
    pub fn set_knobs(&self, knobs: Knobs) {
        *self.shared.knob_state() = KnobState::new(knobs);
    }

    /// The catalogue being served.
    pub fn catalog(&self) -> &Catalog {
        &self.shared.catalog
    }

    /// Uppercase hex SHA-256 of the bytes storage serves for a file (whatever the API publishes).
    pub fn sha256_of(&self, file_id: u64) -> Option<&str> {
        self.shared.sha256.get(&file_id).map(String::as_str)
    }

    /// Runs until the future resolves (for `civitai-dl fake-server`, pass `ctrl_c()`), then stops.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
    }
}

impl Drop for FakeCivitai {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        if let Some(thread) = self.background.take() {
            // A panic inside the server thread has already been reported by the test harness.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

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
    async fn resolve(
        client: &reqwest::Client,
        server: &FakeCivitai,
        path_and_query: &str,
    ) -> String {
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

        let (_, archived) =
            get_json(&client, &format!("{}/api/v1/models/3", server.api_url())).await;
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
            let (got, body) =
                get_json(&client, &format!("{}/api/v1/{path}", server.api_url())).await;
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
            let mut request =
                client.get(format!("{}/api/download/models/{path}", server.api_url()));
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
}
