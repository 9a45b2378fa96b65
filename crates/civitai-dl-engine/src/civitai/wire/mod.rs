//! Serde models of the Civitai REST API (`/api/v1/*`) and of its error bodies.
//!
//! Civitai changes its responses without notice: fields come and go, switch between `null` and
//! absent, and change type over the years (`nsfw` bool → string → int `nsfwLevel`,
//! `allowCommercialUse` string → array → Postgres literal, usernames and cursors as numbers). A
//! downloader that refuses a whole model because of one odd preview field is useless, so decoding
//! here is deliberately lenient: only the ids that identify a model, version or file are
//! required; every other field falls back to "absent" when it is missing, `null` or of an
//! unexpected type. Open enumerations keep unknown spellings instead of failing. The quirks are
//! listed in `docs/civitai-api.md` (#endpoints, #enumerations, #lenient-parsing).

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::Value;

mod error_body;
mod lenient;
#[cfg(test)]
mod props;

pub use error_body::{ApiErrorBody, parse_error_body};

/// A model as returned by `GET /api/v1/models/{id}` and in the items of `GET /api/v1/models`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    /// Model id (the `{id}` of `/models/{id}`).
    pub id: u64,
    /// Display name; empty if the API sent none.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub name: String,
    /// HTML description.
    #[serde(default, deserialize_with = "lenient::option")]
    pub description: Option<String>,
    /// Kind of model (LORA, Checkpoint, …).
    #[serde(rename = "type", default, deserialize_with = "lenient::or_default")]
    pub model_type: ModelType,
    /// Legacy "adult content" flag.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub nsfw: bool,
    /// Content-level bitmask (see [`NsfwLevel`]); absent before 2024.
    #[serde(default, deserialize_with = "lenient::option")]
    pub nsfw_level: Option<u32>,
    /// Whether the model depicts a real person.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub poi: bool,
    /// `Archived` or `TakenDown`; absent on healthy models.
    #[serde(default, deserialize_with = "lenient::option")]
    pub mode: Option<ModelMode>,
    /// `Public`, `Unsearchable`, `Private` or `EarlyAccess`.
    #[serde(default, deserialize_with = "lenient::option")]
    pub availability: Option<String>,
    /// The uploader; absent for models owned by Civitai itself.
    #[serde(default, deserialize_with = "lenient::option")]
    pub creator: Option<Creator>,
    /// Tag names.
    #[serde(default, deserialize_with = "lenient::text_list")]
    pub tags: Vec<String>,
    /// Commercial uses the licence allows, normalised by [`normalise_commercial_use`].
    #[serde(default, deserialize_with = "lenient::commercial_use")]
    pub allow_commercial_use: Vec<String>,
    /// Published versions, newest first.
    #[serde(default, deserialize_with = "lenient::list")]
    pub model_versions: Vec<ModelVersion>,
    /// Popularity counters.
    #[serde(default, deserialize_with = "lenient::option")]
    pub stats: Option<ModelStats>,
}

/// Popularity counters of a model. Creators can hide counts, which then arrive as `null`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelStats {
    /// Number of downloads.
    #[serde(default, deserialize_with = "lenient::option")]
    pub download_count: Option<u64>,
    /// Number of thumbs-up reactions.
    #[serde(default, deserialize_with = "lenient::option")]
    pub thumbs_up_count: Option<u64>,
    /// Number of thumbs-down reactions.
    #[serde(default, deserialize_with = "lenient::option")]
    pub thumbs_down_count: Option<u64>,
    /// Number of comments.
    #[serde(default, deserialize_with = "lenient::option")]
    pub comment_count: Option<u64>,
    /// Buzz tipped to the model.
    #[serde(default, deserialize_with = "lenient::option")]
    pub tipped_amount_count: Option<u64>,
}

/// The uploader of a model.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Creator {
    /// User name; an all-digit name can arrive as a JSON number, kept here as its text.
    #[serde(default, deserialize_with = "lenient::text")]
    pub username: Option<String>,
    /// Avatar URL.
    #[serde(default, deserialize_with = "lenient::option")]
    pub image: Option<String>,
}

/// One version of a model: the unit the download route (`/api/download/models/{id}`) serves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelVersion {
    /// Version id, the id the download route takes.
    pub id: u64,
    /// Parent model id; only `/model-versions` (and 2023 list responses) send it.
    #[serde(default, deserialize_with = "lenient::option")]
    pub model_id: Option<u64>,
    /// Version name; empty if the API sent none.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub name: String,
    /// Base model name (`SDXL 1.0`, `Flux.1 D`, …); an open set, so kept as text.
    #[serde(default, deserialize_with = "lenient::option")]
    pub base_model: Option<String>,
    /// `Standard`, `Inpainting`, `Refiner`, `Pix2Pix`.
    #[serde(default, deserialize_with = "lenient::option")]
    pub base_model_type: Option<String>,
    /// HTML description.
    #[serde(default, deserialize_with = "lenient::option")]
    pub description: Option<String>,
    /// Trigger words.
    #[serde(default, deserialize_with = "lenient::text_list")]
    pub trained_words: Vec<String>,
    /// ISO 8601 timestamp, with or without a zone.
    #[serde(default, deserialize_with = "lenient::option")]
    pub published_at: Option<String>,
    /// `Public`, `EarlyAccess`, …
    #[serde(default, deserialize_with = "lenient::option")]
    pub availability: Option<String>,
    /// Content-level bitmask (see [`NsfwLevel`]).
    #[serde(default, deserialize_with = "lenient::option")]
    pub nsfw_level: Option<u32>,
    /// `Download`, `Generation`, …; anything but `Download` means the download route answers 401.
    #[serde(default, deserialize_with = "lenient::option")]
    pub usage_control: Option<String>,
    /// AIR identifier (`urn:air:…`).
    #[serde(default, deserialize_with = "lenient::option")]
    pub air: Option<String>,
    /// Early-access end (list endpoints); unreliable, see [`ModelVersion::is_early_access`].
    #[serde(default, deserialize_with = "lenient::option")]
    pub early_access_deadline: Option<String>,
    /// Early-access end (`/model-versions`, 2025); unreliable, see [`ModelVersion::is_early_access`].
    #[serde(default, deserialize_with = "lenient::option")]
    pub early_access_ends_at: Option<String>,
    /// Summary of the parent model; only `/model-versions` and `by-hash` send it.
    #[serde(default, deserialize_with = "lenient::option")]
    pub model: Option<VersionModel>,
    /// Downloadable files, in no defined order.
    #[serde(default, deserialize_with = "lenient::list")]
    pub files: Vec<ModelFile>,
    /// Preview media; entries that cannot be decoded are dropped, as previews are optional.
    #[serde(default, deserialize_with = "lenient::lossy_list")]
    pub images: Vec<Image>,
    /// Download URL of the primary file; absent when the model is archived.
    #[serde(default, deserialize_with = "lenient::option")]
    pub download_url: Option<String>,
    /// Position in the model's version list (0 = newest); only the model endpoints send it.
    #[serde(default, deserialize_with = "lenient::option")]
    pub index: Option<u32>,
}

impl ModelVersion {
    /// The file taken when nothing narrows the choice: the best by [`ModelFile::preference`],
    /// which is the primary file whenever one is flagged.
    pub fn preferred_file(&self) -> Option<&ModelFile> {
        self.files.iter().min_by_key(|file| file.preference())
    }

    /// Whether the version is behind a (paid) early-access gate.
    ///
    /// Only `availability` is consulted: the early-access timestamp fields changed three times
    /// and are unreliable (civitai/civitai#1314).
    pub fn is_early_access(&self) -> bool {
        self.availability.as_deref() == Some("EarlyAccess")
    }
}

/// The summary of the parent model inside a `/model-versions/{id}` response.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionModel {
    /// Model name.
    #[serde(default, deserialize_with = "lenient::option")]
    pub name: Option<String>,
    /// Kind of model.
    #[serde(rename = "type", default, deserialize_with = "lenient::option")]
    pub model_type: Option<ModelType>,
    /// Legacy "adult content" flag.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub nsfw: bool,
    /// Whether the model depicts a real person.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub poi: bool,
    /// `Archived` or `TakenDown`; absent on healthy models.
    #[serde(default, deserialize_with = "lenient::option")]
    pub mode: Option<ModelMode>,
}

/// One downloadable file of a version.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelFile {
    /// File id, usable as `?fileId=` on the download route.
    pub id: u64,
    /// Download name computed by the server; not sanitised, and not unique within a version.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub name: String,
    /// Kind of file.
    #[serde(rename = "type", default, deserialize_with = "lenient::or_default")]
    pub file_type: FileType,
    /// Size in KiB as reported by the uploader; see [`ModelFile::size_bytes`].
    #[serde(rename = "sizeKB", default, deserialize_with = "lenient::option")]
    pub size_kb: Option<f64>,
    /// Format, size and precision; the values the download route's file selection uses.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub metadata: FileMetadata,
    /// Hashes computed by Civitai's scanner; any of them may be missing.
    #[serde(default)]
    pub hashes: Hashes,
    /// Whether the bare version download URL serves this file (missing means false).
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub primary: bool,
    /// Per-file download URL; non-primary ones can 404, prefer `?fileId=`.
    #[serde(default, deserialize_with = "lenient::option")]
    pub download_url: Option<String>,
    /// `Pending`, `Success`, `Danger` or `Error`.
    #[serde(default, deserialize_with = "lenient::option")]
    pub pickle_scan_result: Option<String>,
    /// `Pending`, `Success`, `Danger` or `Error`.
    #[serde(default, deserialize_with = "lenient::option")]
    pub virus_scan_result: Option<String>,
}

/// Length of a SHA-256 digest in hex digits.
const SHA256_HEX_LEN: usize = 64;

/// Bytes per KiB, the unit of `sizeKB`.
const BYTES_PER_KIB: f64 = 1024.0;

impl ModelFile {
    /// The order in which one file of a version is preferred over another, smallest best: the
    /// primary file, then weights over other files (as Civitai's own download route prefers
    /// them), then SafeTensor, then the smallest, then the lowest id. It is total and does not
    /// depend on the order the API lists files in, so a rerun never picks another multi-GB file.
    pub fn preference(&self) -> impl Ord + use<> {
        let weights = matches!(
            self.file_type.as_str(),
            "Model" | "Pruned Model" | "Diffusion Model" | "UNet"
        );
        let safetensor = self
            .metadata
            .format
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case("SafeTensor"));
        (
            !self.primary,
            !weights,
            !safetensor,
            self.size_bytes().unwrap_or(u64::MAX),
            self.id,
        )
    }

    /// Size in bytes derived from `sizeKB`; `None` when missing or zero.
    ///
    /// Only a hint (the uploader's client reports it and some responses round it): the storage
    /// host's `Content-Length` is the truth.
    pub fn size_bytes(&self) -> Option<u64> {
        let bytes = (self.size_kb? * BYTES_PER_KIB).round();
        // `as` saturates, so a NaN or absurd value cannot wrap; zero and negatives mean "unknown".
        (bytes.is_finite() && bytes >= 1.0).then_some(bytes as u64)
    }

    /// The SHA-256 to verify against, if it is a full 64-hex-digit digest.
    ///
    /// Shortened values such as `"A5F58EB1C3..."` (seen in Civitai's own examples) cannot verify
    /// anything, so they count as missing.
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.sha256.as_deref().map(str::trim).filter(|hash| {
            hash.len() == SHA256_HEX_LEN && hash.bytes().all(|b| b.is_ascii_hexdigit())
        })
    }
}

/// The `metadata` object of a file; any key may be absent or `null`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileMetadata {
    /// `SafeTensor`, `PickleTensor`, `GGUF`, …
    #[serde(default, deserialize_with = "lenient::option")]
    pub format: Option<String>,
    /// `full` or `pruned`.
    #[serde(default, deserialize_with = "lenient::option")]
    pub size: Option<String>,
    /// Precision: `fp16`, `bf16`, `fp8`, …
    #[serde(default, deserialize_with = "lenient::option")]
    pub fp: Option<String>,
    /// GGUF quantisation (`Q4_K_M`, …).
    #[serde(default, deserialize_with = "lenient::option")]
    pub quant_type: Option<String>,
}

/// The `hashes` map of a file. Keys are matched without regard to case, since clients and
/// responses disagree on `SHA256` vs `sha256`; an empty map (hashing pending) is normal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hashes {
    /// SHA-256 of the whole file, 64 hex digits; see [`ModelFile::sha256`].
    pub sha256: Option<String>,
    /// A1111's old short hash (8 hex digits); missing for files under 2 MiB.
    pub auto_v1: Option<String>,
    /// First 10 hex digits of the SHA-256.
    pub auto_v2: Option<String>,
    /// Hash of the safetensors tensor data, truncated to 12 hex digits.
    pub auto_v3: Option<String>,
    /// CRC-32 (byte order differs between scanners).
    pub crc32: Option<String>,
    /// BLAKE3 of the whole file.
    pub blake3: Option<String>,
}

impl<'de> Deserialize<'de> for Hashes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut hashes = Self::default();
        let Value::Object(map) = Value::deserialize(deserializer)? else {
            return Ok(hashes);
        };
        for (key, value) in &map {
            let slot = match key.to_ascii_lowercase().as_str() {
                "sha256" => &mut hashes.sha256,
                "autov1" => &mut hashes.auto_v1,
                "autov2" => &mut hashes.auto_v2,
                "autov3" => &mut hashes.auto_v3,
                "crc32" => &mut hashes.crc32,
                "blake3" => &mut hashes.blake3,
                _ => continue,
            };
            *slot = lenient::text_of(value);
        }
        Ok(hashes)
    }
}

impl Hashes {
    /// Every hash present, of whatever kind: what `GET by-hash/{hash}` may have matched.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        [
            &self.sha256,
            &self.auto_v1,
            &self.auto_v2,
            &self.auto_v3,
            &self.crc32,
            &self.blake3,
        ]
        .into_iter()
        .filter_map(|hash| hash.as_deref())
    }
}

/// One entry of the answer of `POST /api/v1/model-versions/by-hash/ids`. Today's server sends
/// `{modelVersionId, modelId, hash}`; older ones sent a bare version id. Both decode; an entry of
/// neither shape is an error, which the caller skips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionIdByHash {
    /// The version holding a file with one of the hashes asked for.
    pub version_id: u64,
    /// Its model (today's shape only).
    pub model_id: Option<u64>,
    /// The SHA-256 it matched (today's shape only).
    pub hash: Option<String>,
}

impl<'de> Deserialize<'de> for VersionIdByHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry {
            model_version_id: u64,
            #[serde(default, deserialize_with = "lenient::option")]
            model_id: Option<u64>,
            #[serde(default, deserialize_with = "lenient::text")]
            hash: Option<String>,
        }
        match Value::deserialize(deserializer)? {
            Value::Number(id) => id
                .as_u64()
                .map(|version_id| VersionIdByHash {
                    version_id,
                    model_id: None,
                    hash: None,
                })
                .ok_or_else(|| D::Error::custom("a version id must be a positive integer")),
            other => {
                let entry = Entry::deserialize(other).map_err(D::Error::custom)?;
                Ok(VersionIdByHash {
                    version_id: entry.model_version_id,
                    model_id: entry.model_id,
                    hash: entry.hash,
                })
            }
        }
    }
}

/// A preview image or video, in a version's `images` or in `GET /api/v1/images`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "ImageWire")]
pub struct Image {
    /// Image id; only the `/models` list and `/images` send it.
    pub id: Option<u64>,
    /// Media URL.
    pub url: String,
    /// `image`, `video` or `audio`.
    pub image_type: Option<String>,
    /// Content level, normalised from whichever of `nsfwLevel` / `nsfw` the era sent.
    pub nsfw_level: Option<NsfwLevel>,
    /// Width in pixels.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
}

/// The wire shape of [`Image`], with both generations of the content-level field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageWire {
    #[serde(default, deserialize_with = "lenient::option")]
    id: Option<u64>,
    url: String,
    #[serde(rename = "type", default, deserialize_with = "lenient::option")]
    image_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::option")]
    nsfw_level: Option<NsfwLevel>,
    #[serde(default, deserialize_with = "lenient::option")]
    nsfw: Option<NsfwLevel>,
    #[serde(default, deserialize_with = "lenient::option")]
    width: Option<u32>,
    #[serde(default, deserialize_with = "lenient::option")]
    height: Option<u32>,
}

impl From<ImageWire> for Image {
    fn from(wire: ImageWire) -> Self {
        Self {
            id: wire.id,
            url: wire.url,
            image_type: wire.image_type,
            nsfw_level: wire.nsfw_level.or(wire.nsfw),
            width: wire.width,
            height: wire.height,
        }
    }
}

/// Extensions longer than this are taken as part of a name, not as a media type.
const MAX_EXTENSION_LEN: usize = 5;

impl Image {
    /// File extension for saving the preview, from the URL path (`jpeg`, `png`, `webp`, `mp4`,
    /// …), lower-cased. Falls back to `mp4` for videos and `jpeg` otherwise, because the URL's
    /// last segment is not guaranteed to carry one.
    pub fn extension(&self) -> String {
        let without_query = self.url.split(['?', '#']).next().unwrap_or_default();
        // The host name must not be mistaken for a file name (`https://host.com`).
        let path = match without_query.split_once("://") {
            Some((_, host_and_path)) => host_and_path.split_once('/').map_or("", |(_, path)| path),
            None => without_query,
        };
        let last_segment = path.rsplit('/').next().unwrap_or_default();
        last_segment
            .rsplit_once('.')
            .map(|(_, ext)| ext)
            .filter(|ext| {
                !ext.is_empty()
                    && ext.len() <= MAX_EXTENSION_LEN
                    && ext.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .map_or_else(
                || self.default_extension().to_owned(),
                str::to_ascii_lowercase,
            )
    }

    fn default_extension(&self) -> &'static str {
        match self.image_type.as_deref() {
            Some("video") => "mp4",
            _ => "jpeg",
        }
    }
}

/// Content level as Civitai's bitmask: PG=1, PG13=2, R=4, X=8, XXX=16, Blocked=32 (`docs/civitai-api.md#content-levels`).
///
/// Items carry the OR of their content. Older responses sent a name (`None`, `Soft`, `Mature`,
/// `X`, `Blocked`) or a bare `nsfw` bool; those are mapped onto the bits so callers see one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsfwLevel(pub u32);

impl NsfwLevel {
    /// Safe for everyone.
    pub const PG: Self = Self(1);
    /// Suggestive (legacy `Soft`).
    pub const PG13: Self = Self(2);
    /// Mature (legacy `Mature`).
    pub const R: Self = Self(4);
    /// Explicit (legacy `X`, and legacy `nsfw: true`).
    pub const X: Self = Self(8);
    /// Extreme.
    pub const XXX: Self = Self(16);
    /// Blocked content.
    pub const BLOCKED: Self = Self(32);

    /// The legacy names, matched without regard to case. `X` covered both X and XXX; the lower
    /// bit is the conservative reading.
    const LEGACY_NAMES: [(&'static str, Self); 5] = [
        ("None", Self::PG),
        ("Soft", Self::PG13),
        ("Mature", Self::R),
        ("X", Self::X),
        ("Blocked", Self::BLOCKED),
    ];

    /// Whether only the PG and PG13 bits are set, the levels Civitai shows on its SFW domain.
    pub fn is_sfw(self) -> bool {
        self.0 & !(Self::PG.0 | Self::PG13.0) == 0
    }

    /// Reads any of the three encodings; level 0 ("not computed yet") counts as unknown.
    fn from_json(value: &Value) -> Option<Self> {
        let level = match value {
            Value::Bool(true) => Self::X,
            Value::Bool(false) => Self::PG,
            Value::Number(number) => Self(u32::try_from(number.as_u64()?).ok()?),
            Value::String(text) => Self::from_name(text.trim())?,
            _ => return None,
        };
        (level.0 != 0).then_some(level)
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::LEGACY_NAMES
            .iter()
            .find(|(legacy, _)| legacy.eq_ignore_ascii_case(name))
            .map(|&(_, level)| level)
            .or_else(|| name.parse().ok().map(Self))
    }
}

impl<'de> Deserialize<'de> for NsfwLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_json(&value)
            .ok_or_else(|| D::Error::custom(format!("not a content level: {value}")))
    }
}

/// Defines an open enumeration of the API: known spellings become variants, anything else is
/// kept verbatim in `Other`, and `Display` gives back the API's spelling. Matching ignores ASCII
/// case. The default, `Other("")`, stands for "the API sent no value".
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$variant_meta:meta])* $variant:ident => $wire:literal,)+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
            /// A value this build does not know, kept as the API spelled it.
            Other(String),
        }

        impl $name {
            /// The API's spelling of this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(text) => text,
                }
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                $(if text.eq_ignore_ascii_case($wire) {
                    return Self::$variant;
                })+
                Self::Other(text.to_owned())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::Other(String::new())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                lenient::text(deserializer)?
                    .map(|text| Self::from(text.as_str()))
                    .ok_or_else(|| D::Error::custom(concat!("expected a ", stringify!($name))))
            }
        }
    };
}

open_enum! {
    /// The kind of a model (`type` of a Model). The server's list keeps growing (`docs/civitai-api.md#enumerations`).
    ModelType {
        /// Full Stable Diffusion-style checkpoint.
        Checkpoint => "Checkpoint",
        /// Embedding.
        TextualInversion => "TextualInversion",
        /// Hypernetwork.
        Hypernetwork => "Hypernetwork",
        /// Aesthetic gradient.
        AestheticGradient => "AestheticGradient",
        /// LoRA adapter.
        Lora => "LORA",
        /// LyCORIS LoCon adapter.
        LoCon => "LoCon",
        /// DoRA adapter.
        DoRA => "DoRA",
        /// ControlNet.
        Controlnet => "Controlnet",
        /// Upscaler.
        Upscaler => "Upscaler",
        /// AnimateDiff motion module.
        MotionModule => "MotionModule",
        /// VAE.
        Vae => "VAE",
        /// Pose collection.
        Poses => "Poses",
        /// Wildcard lists.
        Wildcards => "Wildcards",
        /// Workflows.
        Workflows => "Workflows",
    }
}

open_enum! {
    /// The kind of a file (`files[].type`); note the spaces in some spellings (`docs/civitai-api.md#enumerations`).
    FileType {
        /// The model weights.
        Model => "Model",
        /// Pruned weights.
        PrunedModel => "Pruned Model",
        /// The training data archive.
        TrainingData => "Training Data",
        /// A VAE bundled with the version.
        Vae => "VAE",
        /// A configuration file.
        Config => "Config",
        /// An archive.
        Archive => "Archive",
        /// A text encoder.
        TextEncoder => "Text Encoder",
        /// A negative embedding.
        Negative => "Negative",
    }
}

open_enum! {
    /// Why a model is not in its normal state (`mode`).
    ModelMode {
        /// Files removed by the creator; nothing to download.
        Archived => "Archived",
        /// Removed by moderation; no files and no images.
        TakenDown => "TakenDown",
    }
}

/// One page of a paged listing (`/models`, `/images`, …).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Page<T> {
    /// The page's items; may be fewer than asked for even when more pages follow.
    #[serde(default, deserialize_with = "lenient::list")]
    pub items: Vec<T>,
    /// Where the next page is.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub metadata: PageMetadata,
}

/// Paging metadata; its shape changed in 2024-03 (cursor fields in, totals out).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageMetadata {
    /// Opaque cursor for the next page, to send back unchanged; a JSON number is kept as its
    /// text. Absent on the last page.
    #[serde(default, deserialize_with = "lenient::text")]
    pub next_cursor: Option<String>,
    /// Full URL of the next page (carries a `token` query parameter if the request did).
    #[serde(default, deserialize_with = "lenient::option")]
    pub next_page: Option<String>,
    /// Current page number (page paging only).
    #[serde(default, deserialize_with = "lenient::option")]
    pub current_page: Option<u64>,
    /// Page size (page paging only).
    #[serde(default, deserialize_with = "lenient::option")]
    pub page_size: Option<u64>,
    /// Total number of items (pre-2024 and `/creators`, `/tags`; may be a lower bound).
    #[serde(default, deserialize_with = "lenient::option")]
    pub total_items: Option<u64>,
    /// Total number of pages (same caveats as `total_items`).
    #[serde(default, deserialize_with = "lenient::option")]
    pub total_pages: Option<u64>,
}

/// The caller as seen by `GET /api/v1/me`, used to check an API key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Me {
    /// User id.
    #[serde(default, deserialize_with = "lenient::option")]
    pub id: Option<u64>,
    /// User name (a JSON number is kept as its text).
    #[serde(default, deserialize_with = "lenient::text")]
    pub username: Option<String>,
}

/// Normalises `allowCommercialUse`, which has been a single string (2023), an array of strings
/// (2024–25) and a Postgres array literal such as `"{Image,RentCivit}"` (2026), into a list of
/// values (`None`, `Image`, `RentCivit`, `Rent`, `Sell`, kept as spelled).
pub fn normalise_commercial_use(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => match postgres_array_body(text) {
            Some(body) => body
                .split(',')
                .map(|item| item.trim().trim_matches('"').trim())
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect(),
            None => lenient::texts(value),
        },
        _ => lenient::texts(value),
    }
}

fn postgres_array_body(text: &str) -> Option<&str> {
    text.trim().strip_prefix('{')?.strip_suffix('}')
}

#[cfg(test)]
mod tests {
    use super::error_body::NO_ERROR_DETAIL;
    use super::*;
    use serde_json::json;

    const MODEL: &str = include_str!("../../../tests/fixtures/civitai-samples/model.json");
    const MODEL_VERSION: &str =
        include_str!("../../../tests/fixtures/civitai-samples/model_version.json");
    const MODELS_PAGE_CURSOR: &str =
        include_str!("../../../tests/fixtures/civitai-samples/models_page_cursor.json");
    const MODELS_PAGE_PAGED_2023: &str =
        include_str!("../../../tests/fixtures/civitai-samples/models_page_paged_2023.json");
    const IMAGES_PAGE: &str =
        include_str!("../../../tests/fixtures/civitai-samples/images_page.json");
    const ERROR_BODIES: &str =
        include_str!("../../../tests/fixtures/civitai-samples/error_bodies.json");

    fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).expect("sample must decode")
    }

    /// A minimal valid object of type `T` with `extra` fields laid over it.
    fn decode_with<T: serde::de::DeserializeOwned>(mut base: Value, extra: Value) -> T {
        if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
            base.extend(extra);
        }
        from_json(base)
    }

    fn file(extra: Value) -> ModelFile {
        decode_with(
            json!({"id": 1, "name": "a.safetensors", "type": "Model"}),
            extra,
        )
    }

    fn image(extra: Value) -> Image {
        let url = "https://image.civitai.com/acct/uuid/original=true/1.jpeg";
        decode_with(json!({ "url": url }), extra)
    }

    #[test]
    fn model_sample_decodes() {
        let model: Model = serde_json::from_str(MODEL).unwrap();
        assert_eq!(model.id, 1231067);
        assert_eq!(model.name, "Vivid Impressions Storybook Style");
        assert_eq!(model.model_type, ModelType::Lora);
        assert_eq!(model.nsfw_level, Some(1));
        assert_eq!(model.mode, None);
        assert_eq!(model.availability.as_deref(), Some("Public"));
        assert_eq!(
            model.allow_commercial_use,
            ["Image", "RentCivit", "Rent", "Sell"]
        );
        assert_eq!(model.tags, ["style", "illustration", "storybook"]);
        let creator = model.creator.as_ref().unwrap();
        assert_eq!(creator.username.as_deref(), Some("PixelPawsAI"));
        assert_eq!(model.stats.as_ref().unwrap().tipped_amount_count, Some(360));

        let version = &model.model_versions[0];
        assert_eq!((version.id, version.index), (1387174, Some(0)));
        assert_eq!(version.base_model.as_deref(), Some("Flux.1 D"));
        assert_eq!(version.trained_words, ["ppstorybook"]);
        assert!(!version.is_early_access());
        let primary = version.preferred_file().unwrap();
        assert_eq!(primary.id, 1289799);
        assert_eq!(primary.file_type, FileType::Model);
        assert_eq!(primary.metadata.format.as_deref(), Some("SafeTensor"));
        assert_eq!(primary.size_bytes(), Some(19_281_048));
        assert_eq!(
            primary.sha256(),
            Some("9753338AB693CA82BF89ED77A5D1912879E40051463EC6E330FB9866CE798668")
        );
        assert_eq!(primary.hashes.auto_v3.as_deref(), Some("34A22376739D"));
        assert_eq!(primary.hashes.crc32.as_deref(), Some("A65AE7B3"));
        assert_eq!(version.images[0].nsfw_level, Some(NsfwLevel::PG));
        assert_eq!(version.images[0].extension(), "jpeg");
    }

    #[test]
    fn model_version_sample_decodes() {
        let version: ModelVersion = serde_json::from_str(MODEL_VERSION).unwrap();
        assert_eq!((version.id, version.model_id), (1255556, Some(1117241)));
        assert_eq!(version.usage_control.as_deref(), Some("Download"));
        assert_eq!(
            version.air.as_deref(),
            Some("urn:air:flux1:lora:civitai:1117241@1255556")
        );
        assert_eq!(version.early_access_ends_at, None);
        assert_eq!(version.description, None);
        let model = version.model.as_ref().unwrap();
        assert_eq!(model.model_type, Some(ModelType::Lora));
        assert_eq!(model.name.as_deref(), Some("Enchanted Whimsy style (Flux)"));
        assert_eq!(model.mode, None);
        let primary = version.preferred_file().unwrap();
        assert_eq!(primary.id, 1160774);
        assert!(primary.primary);
        assert_eq!(primary.metadata.size, None);
        assert_eq!(primary.pickle_scan_result.as_deref(), Some("Success"));
        assert_eq!(
            primary.sha256(),
            Some("3202778C3EBE5CF7EBE5FC51561DEAE8611F4362036EB7C02EFA033C705E6240")
        );
        assert_eq!(version.images[0].width, Some(832));
        assert_eq!(version.images[0].nsfw_level, Some(NsfwLevel::PG));
    }

    #[test]
    fn cursor_page_sample_decodes() {
        let page: Page<Model> = serde_json::from_str(MODELS_PAGE_CURSOR).unwrap();
        assert_eq!(
            page.metadata.next_cursor.as_deref(),
            Some("75363|932023|257749")
        );
        assert_eq!(page.metadata.current_page, Some(1));
        assert_eq!(page.metadata.page_size, Some(100));
        assert_eq!(page.metadata.total_items, None);
        let model = &page.items[0];
        assert_eq!(model.id, 827184);
        assert_eq!(model.model_type, ModelType::Checkpoint);
        assert_eq!(model.nsfw_level, Some(31));
        assert_eq!(model.mode, None);
        assert_eq!(model.allow_commercial_use, ["Image", "RentCivit"]);
        let version = &model.model_versions[0];
        assert!(version.images.is_empty());
        let primary = version.preferred_file().unwrap();
        assert_eq!(primary.id, 2402203);
        assert_eq!(primary.hashes.sha256.as_deref(), Some("A5F58EB1C3..."));
        assert_eq!(primary.sha256(), None, "a truncated hash cannot verify");
        assert_eq!(primary.size_bytes(), Some(6_938_040_678));
        assert_eq!(primary.metadata.fp.as_deref(), Some("fp16"));
    }

    #[test]
    fn paged_2023_sample_decodes() {
        let page: Page<Model> = serde_json::from_str(MODELS_PAGE_PAGED_2023).unwrap();
        assert_eq!(page.metadata.next_cursor, None);
        assert_eq!(page.metadata.total_items, Some(1676));
        assert_eq!(page.metadata.total_pages, Some(559));
        assert_eq!(
            page.metadata.next_page.as_deref(),
            Some("https://civitai.com/api/v1/models?limit=3&types=TextualInversion&page=2")
        );
        let ids: Vec<u64> = page.items.iter().map(|model| model.id).collect();
        assert_eq!(ids, [3036, 4514, 8109]);
        for model in &page.items {
            assert_eq!(model.model_type, ModelType::TextualInversion);
            assert_eq!(model.allow_commercial_use, ["Rent"]);
        }
        let version = &page.items[0].model_versions[0];
        assert_eq!((version.id, version.model_id), (9857, Some(3036)));
        let primary = version.preferred_file().unwrap();
        assert_eq!(primary.hashes.auto_v1, None);
        assert_eq!(primary.size_bytes(), Some(17_426));
        assert_eq!(primary.metadata.format.as_deref(), Some("PickleTensor"));
        let images = &page.items[1].model_versions[0].images;
        assert_eq!(images[0].nsfw_level, Some(NsfwLevel::X));
        assert_eq!(images[1].nsfw_level, Some(NsfwLevel::PG));
    }

    #[test]
    fn images_page_sample_decodes() {
        let page: Page<Image> = serde_json::from_str(IMAGES_PAGE).unwrap();
        assert_eq!(
            page.metadata.next_cursor.as_deref(),
            Some("1|1744925337225")
        );
        let image = &page.items[0];
        assert_eq!(image.id, Some(9173928));
        assert_eq!(image.image_type.as_deref(), Some("image"));
        // `nsfwLevel` wins over the coarser legacy `nsfw: true`.
        assert_eq!(image.nsfw_level, Some(NsfwLevel::PG13));
        assert_eq!((image.width, image.height), (Some(832), Some(1216)));
        assert_eq!(image.extension(), "jpeg");
    }

    #[test]
    fn creator_username_keeps_text_of_any_scalar() {
        let cases = [
            (json!({"username": 12345}), Some("12345")),
            (json!({"username": "mousewrites"}), Some("mousewrites")),
            (json!({"username": null}), None),
            (json!({}), None),
            (json!({"username": {"nested": true}}), None),
        ];
        for (input, expected) in cases {
            let creator: Creator = from_json(input.clone());
            assert_eq!(creator.username.as_deref(), expected, "{input}");
        }
    }

    #[test]
    fn nsfw_level_normalises_every_encoding() {
        let cases = [
            (json!({"nsfwLevel": 4}), Some(NsfwLevel::R)),
            (json!({"nsfwLevel": 31}), Some(NsfwLevel(31))),
            (json!({"nsfwLevel": "None"}), Some(NsfwLevel::PG)),
            (json!({"nsfwLevel": "soft"}), Some(NsfwLevel::PG13)),
            (json!({"nsfwLevel": "Mature"}), Some(NsfwLevel::R)),
            (json!({"nsfwLevel": "X"}), Some(NsfwLevel::X)),
            (json!({"nsfwLevel": "Blocked"}), Some(NsfwLevel::BLOCKED)),
            (json!({"nsfwLevel": "16"}), Some(NsfwLevel::XXX)),
            (json!({"nsfw": true}), Some(NsfwLevel::X)),
            (json!({"nsfw": false}), Some(NsfwLevel::PG)),
            (json!({"nsfw": "Mature"}), Some(NsfwLevel::R)),
            (json!({"nsfwLevel": 2, "nsfw": true}), Some(NsfwLevel::PG13)),
            (
                json!({"nsfwLevel": "weird", "nsfw": false}),
                Some(NsfwLevel::PG),
            ),
            (json!({"nsfwLevel": 0}), None),
            (json!({"nsfwLevel": -1}), None),
            (json!({"nsfwLevel": null, "nsfw": null}), None),
            (json!({}), None),
        ];
        for (input, expected) in cases {
            assert_eq!(image(input.clone()).nsfw_level, expected, "{input}");
        }
    }

    #[test]
    fn nsfw_level_is_sfw_only_for_pg_and_pg13() {
        let cases = [
            (NsfwLevel::PG, true),
            (NsfwLevel(3), true),
            (NsfwLevel::R, false),
            (NsfwLevel(31), false),
            (NsfwLevel::BLOCKED, false),
        ];
        for (level, expected) in cases {
            assert_eq!(level.is_sfw(), expected, "{level:?}");
        }
    }

    #[test]
    fn next_cursor_keeps_text_of_string_or_number() {
        let cases = [
            (json!({"nextCursor": 1744925337}), Some("1744925337")),
            (
                json!({"nextCursor": "1|1744925337225"}),
                Some("1|1744925337225"),
            ),
            (json!({"nextCursor": null}), None),
            (json!({"nextCursor": ""}), None),
            (json!({}), None),
        ];
        for (metadata, expected) in cases {
            let page: Page<Image> = from_json(json!({"items": [], "metadata": metadata.clone()}));
            assert_eq!(page.metadata.next_cursor.as_deref(), expected, "{metadata}");
        }
    }

    #[test]
    fn page_tolerates_null_items_and_missing_metadata() {
        let page: Page<Model> = from_json(json!({"items": null}));
        assert!(page.items.is_empty());
        assert_eq!(page.metadata, PageMetadata::default());
    }

    #[test]
    fn open_enums_keep_unknown_values_and_match_known_ones() {
        let model_types = [
            ("LORA", ModelType::Lora),
            ("lora", ModelType::Lora),
            ("Checkpoint", ModelType::Checkpoint),
            ("CLIPVision", ModelType::Other("CLIPVision".into())),
        ];
        for (wire, expected) in model_types {
            assert_eq!(from_json::<ModelType>(json!(wire)), expected, "{wire}");
        }
        let file_types = [
            ("Pruned Model", FileType::PrunedModel),
            ("Text Encoder", FileType::TextEncoder),
            ("Diffusion Model", FileType::Other("Diffusion Model".into())),
        ];
        for (wire, expected) in file_types {
            assert_eq!(from_json::<FileType>(json!(wire)), expected, "{wire}");
        }
        let modes = [
            ("Archived", ModelMode::Archived),
            ("TakenDown", ModelMode::TakenDown),
            ("Quarantined", ModelMode::Other("Quarantined".into())),
        ];
        for (wire, expected) in modes {
            assert_eq!(from_json::<ModelMode>(json!(wire)), expected, "{wire}");
        }
    }

    #[test]
    fn open_enums_display_the_api_spelling() {
        let model_types = [
            (ModelType::Checkpoint, "Checkpoint"),
            (ModelType::TextualInversion, "TextualInversion"),
            (ModelType::Hypernetwork, "Hypernetwork"),
            (ModelType::AestheticGradient, "AestheticGradient"),
            (ModelType::Lora, "LORA"),
            (ModelType::LoCon, "LoCon"),
            (ModelType::DoRA, "DoRA"),
            (ModelType::Controlnet, "Controlnet"),
            (ModelType::Upscaler, "Upscaler"),
            (ModelType::MotionModule, "MotionModule"),
            (ModelType::Vae, "VAE"),
            (ModelType::Poses, "Poses"),
            (ModelType::Wildcards, "Wildcards"),
            (ModelType::Workflows, "Workflows"),
            (ModelType::Other("UNet".into()), "UNet"),
        ];
        for (value, wire) in model_types {
            assert_eq!(value.to_string(), wire);
            assert_eq!(ModelType::from(wire), value);
        }
        let file_types = [
            (FileType::Model, "Model"),
            (FileType::PrunedModel, "Pruned Model"),
            (FileType::TrainingData, "Training Data"),
            (FileType::Vae, "VAE"),
            (FileType::Config, "Config"),
            (FileType::Archive, "Archive"),
            (FileType::TextEncoder, "Text Encoder"),
            (FileType::Negative, "Negative"),
            (FileType::Other("UNet".into()), "UNet"),
        ];
        for (value, wire) in file_types {
            assert_eq!(value.to_string(), wire);
            assert_eq!(FileType::from(wire), value);
        }
        assert_eq!(ModelMode::TakenDown.to_string(), "TakenDown");
    }

    #[test]
    fn explicit_nulls_everywhere_decode_as_absent() {
        let model: Model = serde_json::from_str(
            r#"{
                "id": 7, "name": null, "description": null, "type": null, "nsfw": null,
                "nsfwLevel": null, "poi": null, "mode": null, "availability": null,
                "creator": null, "tags": null, "allowCommercialUse": null, "stats": null,
                "modelVersions": [{
                    "id": 8, "modelId": null, "name": null, "baseModel": null,
                    "baseModelType": null, "description": null, "trainedWords": null,
                    "publishedAt": null, "availability": null, "nsfwLevel": null,
                    "usageControl": null, "air": null, "earlyAccessDeadline": null,
                    "earlyAccessEndsAt": null, "model": null, "images": null,
                    "downloadUrl": null, "index": null,
                    "files": [{
                        "id": 9, "name": null, "type": null, "sizeKB": null, "metadata": null,
                        "hashes": null, "primary": null, "downloadUrl": null,
                        "pickleScanResult": null, "virusScanResult": null
                    }]
                }]
            }"#,
        )
        .unwrap();
        assert_eq!(model.id, 7);
        assert_eq!(model.name, "");
        assert_eq!(model.model_type, ModelType::default());
        assert!(!model.nsfw);
        assert_eq!((model.mode, model.creator, model.stats), (None, None, None));
        assert!(model.tags.is_empty() && model.allow_commercial_use.is_empty());
        let version = &model.model_versions[0];
        assert_eq!(
            (version.id, version.model_id, version.index),
            (8, None, None)
        );
        assert!(version.trained_words.is_empty() && version.images.is_empty());
        let file = &version.files[0];
        assert_eq!(file.id, 9);
        assert_eq!(file.hashes, Hashes::default());
        assert_eq!(file.metadata, FileMetadata::default());
        assert!(!file.primary);
        assert_eq!((file.size_bytes(), file.sha256()), (None, None));
    }

    #[test]
    fn wrongly_typed_fields_do_not_reject_the_model() {
        let model: Model = from_json(json!({
            "id": 7, "name": "m", "type": 3, "nsfwLevel": "high", "tags": "single",
            "stats": "hidden", "creator": 5, "poi": "no", "mode": {"x": 1},
            "modelVersions": [{"id": 8, "index": -1, "images": [{"nsfwLevel": 1}, {"url": "u.png"}]}]
        }));
        assert_eq!(model.model_type, ModelType::Other("3".into()));
        assert_eq!(model.nsfw_level, None);
        assert_eq!(model.tags, ["single"]);
        assert_eq!((model.stats, model.creator, model.mode), (None, None, None));
        let version = &model.model_versions[0];
        assert_eq!(version.index, None);
        assert_eq!(
            version.images.len(),
            1,
            "the image without a url is dropped"
        );
        assert_eq!(version.images[0].url, "u.png");
    }

    #[test]
    fn identity_fields_stay_required() {
        let cases = [
            json!({"name": "no id"}),
            json!({"id": "7"}),
            json!({"id": 7, "modelVersions": [{"name": "no id"}]}),
            json!({"id": 7, "modelVersions": [{"id": 8, "files": [{"name": "no id"}]}]}),
        ];
        for input in cases {
            assert!(
                serde_json::from_value::<Model>(input.clone()).is_err(),
                "{input}"
            );
        }
    }

    #[test]
    fn sha256_accepts_only_full_hex_digests() {
        let full = "3202778C3EBE5CF7EBE5FC51561DEAE8611F4362036EB7C02EFA033C705E6240";
        let lower = full.to_ascii_lowercase();
        let cases = [
            (json!({"hashes": {"SHA256": full}}), Some(full)),
            (json!({"hashes": {"sha256": lower}}), Some(lower.as_str())),
            (json!({"hashes": {"SHA256": "A5F58EB1C3..."}}), None),
            (json!({"hashes": {"SHA256": &full[1..]}}), None),
            (json!({"hashes": {"SHA256": full.replace('C', "Z")}}), None),
            (json!({"hashes": {"SHA256": null}}), None),
            (json!({"hashes": {}}), None),
            (json!({}), None),
        ];
        for (input, expected) in cases {
            assert_eq!(file(input.clone()).sha256(), expected, "{input}");
        }
    }

    #[test]
    fn by_hash_ids_entries_decode_in_both_shapes() {
        let cases = [
            (json!(123), Some((123, None, None))),
            (
                json!({"modelVersionId": 5, "modelId": 4, "hash": "AB", "extra": 1}),
                Some((5, Some(4), Some("AB"))),
            ),
            (
                json!({"modelVersionId": 5, "modelId": null, "hash": null}),
                Some((5, None, None)),
            ),
            (json!({"modelId": 4}), None),
            (json!(-1), None),
            (json!("123"), None),
            (json!(null), None),
        ];
        for (input, expected) in cases {
            let decoded = serde_json::from_value::<VersionIdByHash>(input.clone()).ok();
            let got = decoded
                .as_ref()
                .map(|e| (e.version_id, e.model_id, e.hash.as_deref()));
            assert_eq!(got, expected, "{input}");
        }
    }

    #[test]
    fn all_hashes_lists_every_kind_present() {
        let hashes: Hashes = from_json(json!({"SHA256": "S", "AutoV3": "A3", "CRC32": null}));
        assert_eq!(hashes.all().collect::<Vec<_>>(), ["S", "A3"]);
        assert_eq!(Hashes::default().all().count(), 0);
    }

    #[test]
    fn hashes_match_keys_in_any_case_and_tolerate_odd_shapes() {
        let hashes: Hashes = from_json(json!({
            "autov1": "40CAF049", "AUTOV2": "3202778C3E", "AutoV3": "BF82986F8597",
            "Crc32": "69DCD953", "blake3": "ED04", "unknown": "x"
        }));
        assert_eq!(hashes.auto_v1.as_deref(), Some("40CAF049"));
        assert_eq!(hashes.auto_v2.as_deref(), Some("3202778C3E"));
        assert_eq!(hashes.auto_v3.as_deref(), Some("BF82986F8597"));
        assert_eq!(hashes.crc32.as_deref(), Some("69DCD953"));
        assert_eq!(hashes.blake3.as_deref(), Some("ED04"));
        assert_eq!(hashes.sha256, None);
        for odd in [json!({}), json!(null), json!(["SHA256"]), json!("ABC")] {
            assert_eq!(from_json::<Hashes>(odd.clone()), Hashes::default(), "{odd}");
        }
    }

    #[test]
    fn size_bytes_is_a_hint_only_when_positive() {
        let cases = [
            (json!({"sizeKB": 17.017578125}), Some(17_426)),
            (json!({"sizeKB": 1}), Some(1024)),
            (json!({"sizeKB": 0}), None),
            (json!({"sizeKB": 0.0}), None),
            (json!({"sizeKB": -3.5}), None),
            (json!({"sizeKB": null}), None),
            (json!({"sizeKB": "12"}), None),
            (json!({}), None),
        ];
        for (input, expected) in cases {
            assert_eq!(file(input.clone()).size_bytes(), expected, "{input}");
        }
    }

    #[test]
    fn preferred_file_is_the_flagged_one_then_by_the_stated_order() {
        let cases = [
            (json!([{"id": 1}, {"id": 2, "primary": true}]), Some(2)),
            (json!([{"id": 1}, {"id": 2}]), Some(1)),
            (
                json!([{"id": 1, "primary": false}, {"id": 2, "primary": null}]),
                Some(1),
            ),
            (json!([]), None),
            // No primary: weights before other files, SafeTensor, the smallest, the lowest id.
            (
                json!([{"id": 1, "type": "Training Data", "sizeKB": 1},
                       {"id": 2, "type": "Model", "sizeKB": 9}]),
                Some(2),
            ),
            (
                json!([{"id": 1, "type": "Model", "metadata": {"format": "PickleTensor"}},
                       {"id": 2, "type": "Model", "metadata": {"format": "SafeTensor"}}]),
                Some(2),
            ),
            (
                json!([{"id": 3, "type": "Model", "sizeKB": 9},
                       {"id": 2, "type": "Model", "sizeKB": 4},
                       {"id": 1, "type": "Model", "sizeKB": 4}]),
                Some(1),
            ),
        ];
        for (files, expected) in cases {
            let version: ModelVersion = from_json(json!({"id": 5, "files": files.clone()}));
            let mut reversed = files.as_array().cloned().unwrap_or_default();
            reversed.reverse();
            let listed_backwards: ModelVersion = from_json(json!({"id": 5, "files": reversed}));
            assert_eq!(
                listed_backwards.preferred_file().map(|file| file.id),
                expected,
                "{files} listed backwards"
            );
            assert_eq!(
                version.preferred_file().map(|file| file.id),
                expected,
                "{files}"
            );
        }
        assert!(!file(json!({})).primary, "missing primary means false");
    }

    #[test]
    fn early_access_follows_availability() {
        let cases = [
            (json!("EarlyAccess"), true),
            (json!("Public"), false),
            (json!(null), false),
        ];
        for (availability, expected) in cases {
            let version: ModelVersion =
                from_json(json!({"id": 5, "availability": availability.clone()}));
            assert_eq!(version.is_early_access(), expected, "{availability}");
        }
    }

    #[test]
    fn commercial_use_normalises_every_era() {
        let cases = [
            (json!("Rent"), vec!["Rent"]),
            (json!(["Image", "Sell"]), vec!["Image", "Sell"]),
            (json!("{Image,RentCivit}"), vec!["Image", "RentCivit"]),
            (
                json!("{\"Rent Civit\", Image}"),
                vec!["Rent Civit", "Image"],
            ),
            (json!("{}"), vec![]),
            (json!(""), vec![]),
            (json!(null), vec![]),
            (json!([null, "Sell"]), vec!["Sell"]),
        ];
        for (input, expected) in cases {
            assert_eq!(normalise_commercial_use(&input), expected, "{input}");
        }
    }

    #[test]
    fn image_extension_comes_from_the_url_path() {
        let cases = [
            (
                "https://image.civitai.com/a/b/original=true/56547310.jpeg",
                None,
                "jpeg",
            ),
            ("https://image.civitai.com/a/b/width=450/1.PNG", None, "png"),
            (
                "https://image.civitai.com/a/b/original=true/1.webp?x=y.gif",
                None,
                "webp",
            ),
            (
                "https://image.civitai.com/a/b/original=true/1.mp4#t=1",
                Some("video"),
                "mp4",
            ),
            (
                "https://image.civitai.com/a/b/original=true/1",
                Some("video"),
                "mp4",
            ),
            (
                "https://image.civitai.com/a/b/original=true/1",
                None,
                "jpeg",
            ),
            ("https://image.civitai.com", None, "jpeg"),
            ("https://image.civitai.com/a/b/x.with spaces", None, "jpeg"),
            ("relative/name.gif", None, "gif"),
        ];
        for (url, image_type, expected) in cases {
            let image = image(json!({"url": url, "type": image_type}));
            assert_eq!(image.extension(), expected, "{url}");
        }
    }

    #[test]
    fn every_sample_error_body_has_a_summary() {
        let samples: Vec<Value> = serde_json::from_str(ERROR_BODIES).unwrap();
        assert!(!samples.is_empty());
        for sample in samples {
            let body = sample["body"].to_string();
            let parsed = parse_error_body(&body).unwrap_or_else(|| panic!("{body}"));
            assert!(!parsed.summary().trim().is_empty(), "{body}");
        }
    }

    #[test]
    fn error_bodies_prefer_message_and_keep_deadline() {
        let early_access = parse_error_body(
            r#"{"error":"Early Access","deadline":"2026-08-20T00:00:00.000Z","message":"Buy it"}"#,
        )
        .unwrap();
        assert_eq!(early_access.error.as_deref(), Some("Early Access"));
        assert_eq!(
            early_access.deadline.as_deref(),
            Some("2026-08-20T00:00:00.000Z")
        );
        assert_eq!(early_access.summary(), "Buy it");
        let unexpected =
            parse_error_body(r#"{"message":"An unexpected error occurred","error":{}}"#).unwrap();
        assert_eq!(unexpected.error, None);
        assert_eq!(unexpected.summary(), "An unexpected error occurred");
        assert_eq!(ApiErrorBody::default().summary(), NO_ERROR_DETAIL);
    }

    #[test]
    fn error_shapes_flatten_to_one_line() {
        let issue = r#"{"code":"invalid_type","path":["limit"],"message":"Expected number"}"#;
        let zod_message = serde_json::to_string(&format!("[{issue}]")).unwrap();
        let cases = [
            (r#"{"error":"File not found"}"#.to_owned(), "File not found"),
            (
                format!(r#"{{"error":{{"name":"ZodError","message":{zod_message}}}}}"#),
                "limit: Expected number",
            ),
            (format!(r#"{{"error":[{issue},{{"message":"bad\n cursor"}}]}}"#), "limit: Expected number; bad cursor"),
            (
                r#"{"error":{"formErrors":["bad query"],"fieldErrors":{"limit":["too big","not int"]}}}"#
                    .to_owned(),
                "bad query; limit: too big, not int",
            ),
            (format!(r#"{{"code":"BAD_REQUEST","issues":[{issue}]}}"#), "limit: Expected number"),
            (r#"{"error":{"weird":1}}"#.to_owned(), r#"{"weird":1}"#),
            (r#"{"error":404}"#.to_owned(), "404"),
        ];
        for (body, expected) in cases {
            let parsed = parse_error_body(&body).unwrap_or_else(|| panic!("{body}"));
            assert_eq!(parsed.summary(), expected, "{body}");
        }
    }

    #[test]
    fn non_error_bodies_are_rejected() {
        for body in [
            "<html>We're adjusting a few things</html>",
            "{}",
            r#""text""#,
            "[1]",
            r#"{"error":{}}"#,
        ] {
            assert_eq!(parse_error_body(body), None, "{body}");
        }
    }

    #[test]
    fn me_accepts_numeric_username() {
        let cases = [
            (
                json!({"id": 5, "username": "alice", "tier": "free"}),
                Some(5),
                Some("alice"),
            ),
            (json!({"id": 6, "username": 1234}), Some(6), Some("1234")),
            (json!({"id": null}), None, None),
        ];
        for (input, id, username) in cases {
            let me: Me = from_json(input.clone());
            assert_eq!((me.id, me.username.as_deref()), (id, username), "{input}");
        }
    }
}
