//! Sidecars: the metadata files beside a model file that the apps people use read instead of
//! asking Civitai again. Each app reads its own format and ignores the others', so we write the
//! ones the user names (`--sidecars`), each exactly as its reader expects (`docs/sidecars.md`):
//!
//! - [`civitai_info`]: `<stem>.civitai.info`, Civitai Helper's format, also read by SwarmUI;
//! - [`a1111`]: `<stem>.json`, the A1111 / Forge card metadata the user edits in the web UI;
//! - [`lm_metadata`]: `<stem>.metadata.json`, ComfyUI-Lora-Manager's record, whose hash spares it
//!   hashing the file again on every start.
//!
//! Each format is a pure function from what Civitai said, what is on disk and the file already
//! there to the new content, so the merge rules are tested without a server. Writing happens only
//! after the model file is verified, atomically, and a sidecar that cannot be written is a warning:
//! the model file is what the user asked for.

pub mod a1111;
pub mod civitai_info;
pub mod lm_metadata;
pub mod preview;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::fs::{Durability, WriteError, write_atomic};
use crate::plan::naming::sidecar_path;

/// A sidecar format civitai-dl can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SidecarKind {
    /// `<stem>.civitai.info` for Civitai Helper (A1111 / Forge) and SwarmUI.
    CivitaiInfo,
    /// `<stem>.json`, the card metadata of A1111 and Forge.
    A1111Json,
    /// `<stem>.metadata.json` for ComfyUI-Lora-Manager.
    LmMetadata,
}

impl SidecarKind {
    /// Every format, in the order they are written.
    pub const ALL: [SidecarKind; 3] = [
        SidecarKind::CivitaiInfo,
        SidecarKind::A1111Json,
        SidecarKind::LmMetadata,
    ];

    /// What follows the model file's stem.
    pub fn suffix(self) -> &'static str {
        match self {
            SidecarKind::CivitaiInfo => "civitai.info",
            SidecarKind::A1111Json => "json",
            SidecarKind::LmMetadata => "metadata.json",
        }
    }

    /// The name on the command line and in the config file.
    pub fn name(self) -> &'static str {
        match self {
            SidecarKind::CivitaiInfo => "civitai-info",
            SidecarKind::A1111Json => "a1111-json",
            SidecarKind::LmMetadata => "lm-metadata",
        }
    }

    /// The path of this sidecar for a model file.
    pub fn path(self, model_file: &Path) -> PathBuf {
        sidecar_path(model_file, self.suffix())
    }
}

/// What planning knows for a model file's sidecars: which formats, and what Civitai said.
#[derive(Clone, Debug)]
pub struct SidecarPlan {
    /// The formats to write (never empty).
    pub kinds: Vec<SidecarKind>,
    /// The version JSON as `/model-versions/{id}` gives it (with `modelId` and `model`).
    pub version: Arc<Value>,
    /// The parent model's JSON (without its versions), when planning fetched it anyway.
    pub model: Option<Arc<Value>>,
    /// The file's id in `version.files`.
    pub file_id: u64,
    /// The file name of a VAE of the same version downloaded in the same run (for a checkpoint's
    /// preferred VAE in A1111).
    pub vae: Option<String>,
}

/// The model file as it is on disk once verified.
#[derive(Clone, Debug)]
pub struct OnDisk {
    /// Absolute path of the model file.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// Whether the SHA-256 equals the one Civitai publishes.
    pub verified: bool,
    /// The first preview saved beside it, if any.
    pub preview: Option<SavedPreview>,
    /// The time of writing: Unix seconds and RFC 3339.
    pub now_unix: f64,
    /// The same instant as RFC 3339 UTC.
    pub now_rfc3339: String,
}

/// A preview image on disk and the content level Civitai gave it.
#[derive(Clone, Debug)]
pub struct SavedPreview {
    /// Absolute path.
    pub path: PathBuf,
    /// Civitai's `nsfwLevel` bitmask value of the image (0 when unknown).
    pub nsfw_level: u64,
}

/// The parent model's fields copied into the version JSON's `model`.
const PARENT_MODEL_FIELDS: [&str; 10] = [
    "name",
    "type",
    "nsfw",
    "poi",
    "description",
    "tags",
    "allowNoCredit",
    "allowCommercialUse",
    "allowDerivatives",
    "allowDifferentLicense",
];

/// Everything a format's pure function reads.
#[derive(Clone, Copy, Debug)]
pub struct SidecarInput<'a> {
    /// The version JSON.
    pub version: &'a Value,
    /// The parent model JSON, if known.
    pub model: Option<&'a Value>,
    /// The file's entry in `version.files` (`Value::Null` when absent).
    pub file: &'a Value,
    /// A VAE of the same version downloaded with it.
    pub vae: Option<&'a str>,
    /// The model file on disk.
    pub on_disk: &'a OnDisk,
}

impl SidecarInput<'_> {
    /// The model type as the API spells it (`LORA`, `Checkpoint`, …).
    pub fn model_type(&self) -> &str {
        self.model
            .and_then(|m| m.get("type"))
            .or_else(|| self.version.pointer("/model/type"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The version JSON with what the maintained Civitai Helper fork copies from the parent model
    /// (also what LoRA Manager keeps under `civitai`): name, type, description, tags and licence
    /// flags into `model`, and the `creator`, each only where the version JSON lacks it.
    pub fn version_with_parent(&self) -> Map<String, Value> {
        let mut info = match self.version {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        let Some(Value::Object(parent)) = self.model else {
            return info;
        };
        if let Value::Object(model) = info
            .entry("model")
            .or_insert_with(|| Value::Object(Map::new()))
        {
            for key in PARENT_MODEL_FIELDS {
                if let Some(value) = parent.get(key) {
                    model.entry(key).or_insert_with(|| value.clone());
                }
            }
        }
        if let Some(creator) = parent.get("creator") {
            info.entry("creator").or_insert_with(|| creator.clone());
        }
        info
    }

    /// A string field of the parent model.
    fn model_str(&self, key: &str) -> Option<&str> {
        self.model.and_then(|m| m.get(key)).and_then(Value::as_str)
    }

    /// The version's `baseModel`.
    fn base_model(&self) -> &str {
        self.version
            .get("baseModel")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The version's trigger words, trimmed, without empty ones.
    fn trained_words(&self) -> Vec<&str> {
        self.version
            .get("trainedWords")
            .and_then(Value::as_array)
            .map(|words| {
                words
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .filter(|w| !w.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the model is a LoRA of any flavour (the `preferred weight` and `usage_tips` kind).
    fn is_lora(&self) -> bool {
        let normalized = self.model_type().to_ascii_lowercase();
        matches!(normalized.as_str(), "lora" | "locon" | "dora" | "lycoris")
    }
}

/// Why a sidecar was not written.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The existing sidecar describes another version: it stays, ours is not written.
    #[error(
        "{} describes version {existing}, not {ours}; left as it is (move it away to get a new one)",
        path.display()
    )]
    OtherVersion {
        /// The sidecar.
        path: PathBuf,
        /// The version id in it.
        existing: String,
        /// The version id of this download.
        ours: u64,
    },
    /// The existing file is not a JSON object: somebody else's file, left alone.
    #[error("{} is not a JSON object; left as it is", path.display())]
    NotAnObject {
        /// The sidecar.
        path: PathBuf,
    },
    /// The existing file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The sidecar.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// What a format's pure function found wrong with the file already there.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It names another version id.
    OtherVersion(String),
    /// It is not a JSON object.
    NotAnObject,
}

impl Refusal {
    fn at(self, path: &Path, ours: u64) -> SidecarError {
        let path = path.to_path_buf();
        match self {
            Refusal::OtherVersion(existing) => SidecarError::OtherVersion {
                path,
                existing,
                ours,
            },
            Refusal::NotAnObject => SidecarError::NotAnObject { path },
        }
    }
}

/// The new content of one format from its input and the file already there (parsed; `None` when
/// there is none).
pub fn render(
    kind: SidecarKind,
    input: &SidecarInput<'_>,
    existing: Option<&Value>,
) -> Result<Value, Refusal> {
    let existing = match existing {
        Some(Value::Object(map)) => Some(map),
        Some(_) => return Err(Refusal::NotAnObject),
        None => None,
    };
    match kind {
        SidecarKind::CivitaiInfo => civitai_info::render(input, existing),
        SidecarKind::A1111Json => Ok(a1111::render(input, existing)),
        SidecarKind::LmMetadata => lm_metadata::render(input, existing),
    }
}

/// Write every planned sidecar of a verified model file; one error per sidecar not written.
pub async fn write_all(plan: &SidecarPlan, on_disk: &OnDisk) -> Vec<SidecarError> {
    let file = file_entry(&plan.version, plan.file_id);
    let input = SidecarInput {
        version: &plan.version,
        model: plan.model.as_deref(),
        file: &file,
        vae: plan.vae.as_deref(),
        on_disk,
    };
    let ours = plan.version.get("id").and_then(Value::as_u64).unwrap_or(0);
    let mut errors = Vec::new();
    for kind in &plan.kinds {
        let path = kind.path(&on_disk.path);
        if let Err(error) = write_one(*kind, &input, &path, ours).await {
            errors.push(error);
        }
    }
    errors
}

async fn write_one(
    kind: SidecarKind,
    input: &SidecarInput<'_>,
    path: &Path,
    ours: u64,
) -> Result<(), SidecarError> {
    let existing = match tokio::fs::read(path).await {
        Ok(bytes) => Some(parse_existing(&bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(SidecarError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let content = render(kind, input, existing.as_ref()).map_err(|r| r.at(path, ours))?;
    if existing.as_ref() == Some(&content) {
        return Ok(());
    }
    write_atomic(path, to_pretty_bytes(&content), Durability::Durable).await?;
    Ok(())
}

/// An existing sidecar as JSON; an empty file counts as `{}` (Civitai Helper writes `{}` for "not
/// on Civitai"), anything else that is not JSON as a string, which no format accepts.
fn parse_existing(bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return Value::Object(Map::new());
    }
    serde_json::from_str(text).unwrap_or(Value::String(String::new()))
}

/// The file's entry in the version JSON.
fn file_entry(version: &Value, file_id: u64) -> Value {
    version
        .get("files")
        .and_then(Value::as_array)
        .and_then(|files| {
            files
                .iter()
                .find(|f| f.get("id").and_then(Value::as_u64) == Some(file_id))
        })
        .cloned()
        .unwrap_or(Value::Null)
}

/// JSON indented by four spaces, non-ASCII written as is: how A1111's card editor and Civitai
/// Helper write their files, so a user's diff after an edit in the UI stays small.
pub fn to_pretty_bytes(value: &Value) -> Vec<u8> {
    use serde::Serialize;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serialising a `Value` into a `Vec` cannot fail.
    let _ = value.serialize(&mut serializer);
    out.push(b'\n');
    out
}

/// A URL without any `token` query parameter: download URLs are stored in sidecars, and an API
/// key must never be.
pub fn without_token(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.split('?').next().unwrap_or_default().to_owned();
    };
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(key, _)| !key.eq_ignore_ascii_case("token"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    parsed.to_string()
}

/// A path as LoRA Manager stores it: absolute, with `/` separators on every platform.
pub fn forward_slashes(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_suffixes() {
        let model = Path::new("/m/a.b.safetensors");
        let paths: Vec<PathBuf> = SidecarKind::ALL.iter().map(|k| k.path(model)).collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/m/a.b.civitai.info"),
                PathBuf::from("/m/a.b.json"),
                PathBuf::from("/m/a.b.metadata.json"),
            ]
        );
        for kind in SidecarKind::ALL {
            let parsed: SidecarKind = serde_json::from_value(json!(kind.name())).unwrap();
            assert_eq!(parsed, kind);
        }
    }

    #[test]
    fn tokens_never_reach_a_sidecar() {
        let cases = [
            (
                "https://civitai.com/api/download/models/1?type=Model&token=SECRET",
                "https://civitai.com/api/download/models/1?type=Model",
            ),
            (
                "https://civitai.com/api/download/models/1?Token=SECRET",
                "https://civitai.com/api/download/models/1",
            ),
            (
                "https://civitai.com/api/download/models/1",
                "https://civitai.com/api/download/models/1",
            ),
            ("not a url?token=SECRET", "not a url"),
        ];
        for (url, expected) in cases {
            assert_eq!(without_token(url), expected);
        }
    }

    #[test]
    fn pretty_output_is_indented_by_four_and_keeps_unicode() {
        let bytes = to_pretty_bytes(&json!({"description": "美少女"}));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "{\n    \"description\": \"美少女\"\n}\n"
        );
    }

    #[test]
    fn existing_files_parse_leniently() {
        assert_eq!(parse_existing(b""), json!({}));
        assert_eq!(
            parse_existing("\u{feff}{\"a\":1}".as_bytes()),
            json!({"a": 1})
        );
        assert_eq!(parse_existing(b"not json"), json!(""));
    }

    #[test]
    fn a_file_that_is_not_an_object_is_refused_by_every_format() {
        let fixture = fixtures::Fixture::lora();
        for kind in SidecarKind::ALL {
            assert_eq!(
                render(kind, &fixture.input(), Some(&json!([1, 2]))),
                Err(Refusal::NotAnObject)
            );
        }
    }

    #[tokio::test]
    async fn write_all_writes_each_format_and_reports_the_refused_one() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = fixtures::Fixture::lora_at(&dir.path().join("pp.safetensors"));
        let info = SidecarKind::CivitaiInfo.path(&fixture.on_disk.path);
        std::fs::write(&info, r#"{"id": 42}"#).unwrap();
        let errors = write_all(&fixture.plan(SidecarKind::ALL.to_vec()), &fixture.on_disk).await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            matches!(&errors[0], SidecarError::OtherVersion { existing, .. } if existing == "42"),
            "{errors:?}"
        );
        assert_eq!(std::fs::read_to_string(&info).unwrap(), r#"{"id": 42}"#);
        for kind in [SidecarKind::A1111Json, SidecarKind::LmMetadata] {
            let text = std::fs::read_to_string(kind.path(&fixture.on_disk.path)).unwrap();
            assert!(text.starts_with("{\n    \""), "{kind:?}: {text}");
        }
    }
}
