//! What the handlers of both origins share: the catalogue and its index, the hashes, the signing
//! secret, the counters and the knobs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, header};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::content::{FileHashes, hash_catalog, hex_upper, mix64};
use crate::knobs::KnobState;
use crate::query::QueryParams;
use crate::{Catalog, FakeFile, FakeModel, FakeVersion, Knobs, PublishedHash, Stats, lock};

/// Where each version and file sits in the catalogue, so lookups stay O(1) for big catalogues.
#[derive(Default)]
pub(crate) struct CatalogIndex {
    versions: HashMap<u64, (usize, usize)>,
    pub(crate) files: HashMap<u64, (usize, usize, usize)>,
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
pub(crate) struct Shared {
    pub(crate) catalog: Catalog,
    pub(crate) index: CatalogIndex,
    pub(crate) hashes: HashMap<u64, FileHashes>,
    pub(crate) api_url: String,
    pub(crate) storage_url: String,
    secret: u64,
    pub(crate) stats: Stats,
    knobs: Mutex<KnobState>,
    pub(crate) storage_attempts: Mutex<HashMap<u64, u32>>,
    pub(crate) open_file_gets: Mutex<HashMap<u64, u32>>,
    pub(crate) shutdown: CancellationToken,
}

impl Shared {
    pub(crate) fn new(
        catalog: Catalog,
        knobs: Knobs,
        api: SocketAddr,
        storage: SocketAddr,
    ) -> Shared {
        Shared {
            index: CatalogIndex::build(&catalog),
            hashes: hash_catalog(&catalog),
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

    pub(crate) fn knob_state(&self) -> MutexGuard<'_, KnobState> {
        lock(&self.knobs)
    }

    pub(crate) fn version(&self, id: u64) -> Option<(&FakeModel, &FakeVersion)> {
        let &(mi, vi) = self.index.versions.get(&id)?;
        let model = &self.catalog.models[mi];
        Some((model, &model.versions[vi]))
    }

    pub(crate) fn file(&self, id: u64) -> Option<&FakeFile> {
        let &(mi, vi, fi) = self.index.files.get(&id)?;
        Some(&self.catalog.models[mi].versions[vi].files[fi])
    }

    pub(crate) fn real_sha256(&self, file: &FakeFile) -> &str {
        self.hashes.get(&file.id).map_or("", |h| h.sha256.as_str())
    }

    /// The AutoV3 the API publishes: only for safetensors-shaped files whose SHA-256 it
    /// publishes correctly.
    pub(crate) fn published_autov3(&self, file: &FakeFile) -> Option<&str> {
        if file.published_hash != PublishedHash::Correct {
            return None;
        }
        self.hashes.get(&file.id)?.autov3.as_deref()
    }

    /// The SHA-256 the API claims for the file, if it publishes one.
    pub(crate) fn published_sha256(&self, file: &FakeFile) -> Option<String> {
        let real = self.real_sha256(file);
        match file.published_hash {
            PublishedHash::Correct => Some(real.to_owned()),
            PublishedHash::Missing => None,
            PublishedHash::Wrong => Some(hex_upper(&Sha256::digest(real.as_bytes()))),
        }
    }

    /// Whether the request carries a valid key; the header wins over `?token=`, and an invalid
    /// key simply means anonymous, like the real API.
    pub(crate) fn signed_in(&self, headers: &HeaderMap, params: &QueryParams) -> bool {
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
    pub(crate) fn object_key(&self, file: &FakeFile) -> String {
        format!("{:016x}", mix64(file.id ^ self.secret))
    }

    pub(crate) fn signature(&self, file_id: u64, expires_ms: u64) -> String {
        let digest = Sha256::new()
            .chain_update(self.secret.to_le_bytes())
            .chain_update(file_id.to_le_bytes())
            .chain_update(expires_ms.to_le_bytes())
            .finalize();
        hex_upper(&digest[..16]).to_lowercase()
    }

    pub(crate) fn signed_url(&self, file: &FakeFile, ttl: Duration) -> String {
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

    pub(crate) fn download_url(&self, version_id: u64) -> String {
        format!("{}/api/download/models/{version_id}", self.api_url)
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
