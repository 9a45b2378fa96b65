//! JSON bodies: models, versions, files and images shaped per endpoint like the real API's.

use serde_json::{Value, json};

use crate::query::percent_encode;
use crate::state::Shared;
use crate::{Access, FakeFile, FakeModel, FakeVersion, ImageFormat};

/// BlurHash sent for every preview (copied from a real response).
const IMAGE_BLURHASH: &str = "U7Am@@$^J3%100R;pLR.M]tQ-ps+?wRiVrof";

/// Which endpoint a body is for: the real API shapes models and versions differently per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
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
    pub(crate) fn model_json(&self, model: &FakeModel, endpoint: Endpoint) -> Value {
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
    pub(crate) fn version_json(&self, model: &FakeModel, version: &FakeVersion) -> Value {
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
            ("quantType", &file.quant_type),
        ] {
            if let Some(value) = value {
                metadata.insert(key.to_owned(), json!(value));
            }
        }
        let mut hashes = match self.published_sha256(file) {
            Some(sha) => json!({ "SHA256": sha, "AutoV2": sha[..10] }),
            None => json!({}),
        };
        if let Some(autov3) = self.published_autov3(file) {
            hashes["AutoV3"] = json!(autov3);
        }
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
            ("quantType", file.quant_type.as_ref()),
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
                    "type": if version.image_format(i) == ImageFormat::Mp4 { "video" } else { "image" },
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
