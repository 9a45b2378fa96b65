//! Test inputs built from real Civitai bodies (`tests/fixtures/civitai-samples/`), and a check of
//! LoRA Manager records against the shape of its JSON Schema
//! (`tests/fixtures/lm-metadata.schema.json`).

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{OnDisk, SavedPreview, SidecarInput, SidecarKind, SidecarPlan};

const MODEL: &str = include_str!("../../tests/fixtures/civitai-samples/model.json");
const VERSION: &str = include_str!("../../tests/fixtures/civitai-samples/model_version.json");
const PAGE_2023: &str =
    include_str!("../../tests/fixtures/civitai-samples/models_page_paged_2023.json");
const LM_SCHEMA: &str = include_str!("../../tests/fixtures/lm-metadata.schema.json");

/// A model file on disk with what Civitai said about it.
pub(crate) struct Fixture {
    pub version: Value,
    pub model: Option<Value>,
    pub file_id: u64,
    pub vae: Option<String>,
    pub on_disk: OnDisk,
}

impl Fixture {
    /// The LoRA of `model.json` (Flux.1 D) and its only version, as planning hands it over from
    /// `/models/{id}`: the nested version with `modelId` and `model` added.
    pub fn lora() -> Fixture {
        Fixture::lora_at(Path::new("/lib/loras/pp-storybook_rank2_bf16.safetensors"))
    }

    /// [`Fixture::lora`] with the model file at `path`.
    pub fn lora_at(path: &Path) -> Fixture {
        let model: Value = serde_json::from_str(MODEL).expect("model.json");
        Fixture::from_model(model, 0, path)
    }

    /// `model_version.json` alone, as a `--version` target gives it: no parent model JSON.
    pub fn version_only() -> Fixture {
        let version: Value = serde_json::from_str(VERSION).expect("model_version.json");
        let file_id = version["files"][0]["id"].as_u64().expect("file id");
        Fixture {
            version,
            model: None,
            file_id,
            vae: None,
            on_disk: on_disk(
                Path::new("/lib/loras/pp-enchanted-whimsy.safetensors"),
                false,
            ),
        }
    }

    /// The 2023 page's first model, a TextualInversion for SD 2.1 (its newest version).
    pub fn embedding() -> Fixture {
        let page: Value = serde_json::from_str(PAGE_2023).expect("models page");
        let model = page["items"][0].clone();
        Fixture::from_model(model, 0, Path::new("/lib/embeddings/21charturnerv2.pt"))
    }

    /// `model.json` turned into an SDXL checkpoint: the real body with `type` and `baseModel`
    /// changed, because no checkpoint sample is stored.
    pub fn checkpoint() -> Fixture {
        let mut model: Value = serde_json::from_str(MODEL).expect("model.json");
        model["type"] = json!("Checkpoint");
        model["modelVersions"][0]["baseModel"] = json!("SDXL 1.0");
        Fixture::from_model(
            model,
            0,
            Path::new("/lib/checkpoints/pp-storybook_rank2_bf16.safetensors"),
        )
    }

    fn from_model(mut model: Value, index: usize, path: &Path) -> Fixture {
        let mut version = model["modelVersions"][index].take();
        if let Some(map) = model.as_object_mut() {
            map.remove("modelVersions");
        }
        version["modelId"] = model["id"].clone();
        version["model"] = json!({
            "name": model["name"],
            "type": model["type"],
            "nsfw": model["nsfw"],
            "poi": model["poi"],
        });
        let file_id = version["files"][0]["id"].as_u64().expect("file id");
        let sha256 = version["files"][0]["hashes"]["SHA256"]
            .as_str()
            .map(str::to_ascii_lowercase);
        let mut on_disk = on_disk(path, true);
        if let Some(sha256) = sha256 {
            on_disk.sha256 = sha256;
        }
        Fixture {
            version,
            model: Some(model),
            file_id,
            vae: None,
            on_disk,
        }
    }

    pub fn input(&self) -> SidecarInput<'_> {
        SidecarInput {
            version: &self.version,
            model: self.model.as_ref(),
            file: self
                .version
                .get("files")
                .and_then(Value::as_array)
                .and_then(|files| files.iter().find(|f| f["id"] == self.file_id))
                .unwrap_or(&Value::Null),
            vae: self.vae.as_deref(),
            on_disk: &self.on_disk,
        }
    }

    pub fn plan(&self, kinds: Vec<SidecarKind>) -> SidecarPlan {
        SidecarPlan {
            kinds,
            version: Arc::new(self.version.clone()),
            model: self.model.clone().map(Arc::new),
            file_id: self.file_id,
            vae: self.vae.clone(),
        }
    }
}

fn on_disk(path: &Path, verified: bool) -> OnDisk {
    let preview = path.with_file_name(format!(
        "{}.preview.jpeg",
        path.file_stem().unwrap().to_string_lossy()
    ));
    OnDisk {
        path: path.to_path_buf(),
        size: 19_281_048,
        sha256: "3202778c3ebe5cf7ebe5fc51561deae8611f4362036eb7c02efa033c705e6240".into(),
        verified,
        preview: Some(SavedPreview {
            path: preview,
            nsfw_level: 1,
        }),
        now_unix: 1_764_000_000.5,
        now_rfc3339: "2025-11-24T16:00:00Z".into(),
    }
}

/// Checks a value against a branch of the LoRA Manager schema, for the keywords that schema
/// uses: `type`, `required`, `properties`, `items`, `pattern`, `enum`, `minimum`, `maximum`,
/// `$ref` to `#/definitions/…`.
pub(crate) struct SchemaCheck {
    schema: Value,
}

impl SchemaCheck {
    pub fn lm() -> SchemaCheck {
        SchemaCheck {
            schema: serde_json::from_str(LM_SCHEMA).expect("schema fixture is JSON"),
        }
    }

    /// Every violation of the branch titled `branch`.
    pub fn errors(&self, value: &Value, branch: &str) -> Vec<String> {
        let branch = self.schema["anyOf"]
            .as_array()
            .and_then(|b| b.iter().find(|s| s["title"] == branch))
            .unwrap_or_else(|| panic!("no branch {branch}"));
        let mut errors = Vec::new();
        self.check(branch, value, "$", &mut errors);
        errors
    }

    pub fn assert_valid(&self, value: &Value, branch: &str) {
        let errors = self.errors(value, branch);
        assert!(errors.is_empty(), "{branch}: {errors:#?}\n{value:#}");
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.trim_start_matches("#/definitions/");
            return self.check(&self.schema["definitions"][name], value, at, errors);
        }
        if let Some(kinds) = schema.get("type") {
            let kinds: Vec<&str> = match kinds {
                Value::String(k) => vec![k.as_str()],
                Value::Array(ks) => ks.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !kinds.iter().any(|k| is_of_type(value, k)) {
                errors.push(format!("{at}: {value} is not {kinds:?}"));
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} not in {allowed:?}"));
        }
        if let (Some(pattern), Some(text)) = (
            schema.get("pattern").and_then(Value::as_str),
            value.as_str(),
        ) && !regex::Regex::new(pattern).expect("pattern").is_match(text)
        {
            errors.push(format!("{at}: {text:?} does not match {pattern}"));
        }
        if let (Some(min), Some(n)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) && n < min
        {
            errors.push(format!("{at}: {n} < {min}"));
        }
        if let (Some(max), Some(n)) = (
            schema.get("maximum").and_then(Value::as_f64),
            value.as_f64(),
        ) && n > max
        {
            errors.push(format!("{at}: {n} > {max}"));
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if value.get(key).is_none() {
                    errors.push(format!("{at}: missing {key}"));
                }
            }
        }
        if let (Some(properties), Some(object)) = (
            schema.get("properties").and_then(Value::as_object),
            value.as_object(),
        ) {
            for (key, sub) in properties {
                if let Some(child) = object.get(key) {
                    self.check(sub, child, &format!("{at}.{key}"), errors);
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, child) in array.iter().enumerate() {
                self.check(items, child, &format!("{at}[{i}]"), errors);
            }
        }
    }
}

fn is_of_type(value: &Value, kind: &str) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_u64() || value.is_i64(),
        _ => false,
    }
}
