//! `<stem>.metadata.json`: ComfyUI-Lora-Manager's record of a model file. LoRA Manager trusts
//! the `sha256` in it and skips hashing the file and asking Civitai, which is what makes its
//! start-up fast on a large library; so the hash we write is the one we verified ourselves,
//! lowercase as its schema demands, never a copy of what the API publishes.
//!
//! The field set and its types follow LoRA Manager's JSON Schema (a copy of its shape is in this
//! crate's `tests/fixtures/lm-metadata.schema.json`, checked in the tests). Fields LoRA Manager treats
//! as the user's (`model_name`, `notes`, `favorite`, `usage_tips`, the date added) keep the value
//! of an existing file; what describes the bytes and Civitai's data is refreshed.

use serde_json::{Map, Value, json};

use super::{Refusal, SidecarInput, forward_slashes};

/// Describes this file and this download: always ours.
const REFRESHED: [&str; 12] = [
    "file_name",
    "file_path",
    "size",
    "sha256",
    "base_model",
    "from_civitai",
    "civitai",
    "metadata_source",
    "last_checked_at",
    "hash_status",
    "civitai_deleted",
    "autov3",
];

/// The new `.metadata.json`, merged into the existing one.
pub fn render(
    input: &SidecarInput<'_>,
    existing: Option<&Map<String, Value>>,
) -> Result<Value, Refusal> {
    let ours_id = input.version.get("id").cloned().unwrap_or(Value::Null);
    if let Some(old_id) = existing.and_then(|old| old.pointer_in("civitai", "id"))
        && !old_id.is_null()
        && old_id.to_string().trim_matches('"') != ours_id.to_string().trim_matches('"')
    {
        return Err(Refusal::OtherVersion(
            old_id.to_string().trim_matches('"').to_owned(),
        ));
    }
    let fresh = fresh(input);
    let mut record = existing.cloned().unwrap_or_default();
    for (key, value) in fresh {
        // The preview we saved is ours too, and moves with the model file.
        let our_preview = key.starts_with("preview_") && input.on_disk.preview.is_some();
        if REFRESHED.contains(&key.as_str()) || our_preview || !record.contains_key(&key) {
            record.insert(key, value);
        }
    }
    Ok(Value::Object(record))
}

trait PointerIn {
    fn pointer_in(&self, outer: &str, inner: &str) -> Option<&Value>;
}

impl PointerIn for Map<String, Value> {
    fn pointer_in(&self, outer: &str, inner: &str) -> Option<&Value> {
        self.get(outer)?.get(inner)
    }
}

/// Every field as a fresh download would have it.
fn fresh(input: &SidecarInput<'_>) -> Map<String, Value> {
    let disk = input.on_disk;
    let file_name = disk
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tags = input
        .model
        .and_then(|m| m.get("tags"))
        .filter(|t| t.is_array())
        .cloned()
        .unwrap_or_else(|| json!([]));
    let mut record = json!({
        "file_name": file_name,
        "model_name": input.version.pointer("/model/name").and_then(Value::as_str)
            .or_else(|| input.model_str("name")).unwrap_or(&file_name),
        "file_path": forward_slashes(&disk.path),
        "size": disk.size,
        "modified": disk.now_unix,
        "sha256": disk.sha256.to_ascii_lowercase(),
        "base_model": input.base_model(),
        "preview_url": disk.preview.as_ref().map(|p| forward_slashes(&p.path)).unwrap_or_default(),
        "preview_nsfw_level": disk.preview.as_ref().map_or(0, |p| p.nsfw_level),
        "notes": "",
        "from_civitai": true,
        "civitai": Value::Object(input.version_with_parent()),
        "tags": tags,
        "modelDescription": input.model_str("description").unwrap_or_default(),
        "civitai_deleted": false,
        "favorite": false,
        "exclude": false,
        "db_checked": false,
        "skip_metadata_refresh": false,
        "metadata_source": "civitai_api",
        "last_checked_at": disk.now_unix,
        "hash_status": "completed",
    });
    let map = record.as_object_mut().expect("a JSON object literal");
    // AutoV3 is the hash of the tensor bytes alone: the published one holds for our bytes only
    // when the whole file matched the published SHA-256. Absent means "not checked" to LoRA
    // Manager, which then reads it from the header itself.
    if disk.verified
        && let Some(autov3) = input.file.pointer("/hashes/AutoV3").and_then(Value::as_str)
        && autov3.len() == 12
        && autov3.bytes().all(|b| b.is_ascii_hexdigit())
    {
        map.insert("autov3".into(), json!(autov3.to_ascii_lowercase()));
    }
    if input.is_lora() {
        // A JSON *string*, as LoRA Manager stores it.
        map.insert("usage_tips".into(), json!("{}"));
    }
    if let Some(sub_type) = sub_type(input) {
        map.insert("sub_type".into(), json!(sub_type));
    }
    record.as_object().cloned().unwrap_or_default()
}

/// LoRA Manager's `sub_type` for checkpoints and embeddings.
fn sub_type(input: &SidecarInput<'_>) -> Option<&'static str> {
    let model_type = input.model_type().to_ascii_lowercase();
    let file_type = input
        .file
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    match model_type.as_str() {
        "checkpoint" if matches!(file_type.as_str(), "unet" | "diffusion model") => {
            Some("diffusion_model")
        }
        "checkpoint" => Some("checkpoint"),
        "textualinversion" => Some("embedding"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::fixtures::{Fixture, SchemaCheck};

    #[test]
    fn a_lora_record_has_the_full_field_set_and_our_hash() {
        let fixture = Fixture::lora();
        let record = render(&fixture.input(), None).unwrap();
        SchemaCheck::lm().assert_valid(&record, "LoRA");
        assert_eq!(record["sha256"], fixture.on_disk.sha256);
        assert_eq!(record["file_name"], "pp-storybook_rank2_bf16");
        assert_eq!(record["model_name"], "Vivid Impressions Storybook Style");
        assert_eq!(record["size"], fixture.on_disk.size);
        assert_eq!(record["base_model"], "Flux.1 D");
        assert_eq!(record["usage_tips"], "{}");
        assert_eq!(record["autov3"], "34a22376739d");
        assert_eq!(
            record["tags"],
            json!(["style", "illustration", "storybook"])
        );
        assert_eq!(record["civitai"]["id"], 1387174);
        assert_eq!(record["civitai"]["model"]["tags"], record["tags"]);
        assert_eq!(record["civitai"]["creator"]["username"], "PixelPawsAI");
        assert!(
            record["modelDescription"]
                .as_str()
                .unwrap()
                .contains("ko-fi")
        );
        assert_eq!(
            record["preview_url"],
            "/lib/loras/pp-storybook_rank2_bf16.preview.jpeg"
        );
        assert_eq!(record["preview_nsfw_level"], 1);
        assert!(record.get("sub_type").is_none());
    }

    #[test]
    fn checkpoints_and_embeddings_get_their_sub_type_and_validate() {
        let record = render(&Fixture::checkpoint().input(), None).unwrap();
        SchemaCheck::lm().assert_valid(&record, "Checkpoint");
        assert_eq!(record["sub_type"], "checkpoint");
        assert!(record.get("usage_tips").is_none());
        let record = render(&Fixture::embedding().input(), None).unwrap();
        SchemaCheck::lm().assert_valid(&record, "Embedding");
        assert_eq!(record["sub_type"], "embedding");
    }

    #[test]
    fn an_unverified_file_has_no_autov3_and_an_unknown_parent_empty_tags() {
        let mut fixture = Fixture::version_only();
        fixture.on_disk.verified = false;
        let record = render(&fixture.input(), None).unwrap();
        SchemaCheck::lm().assert_valid(&record, "LoRA");
        assert!(record.get("autov3").is_none());
        assert_eq!(record["tags"], json!([]));
        assert_eq!(record["modelDescription"], "");
        assert_eq!(record["model_name"], "Enchanted Whimsy style (Flux)");
    }

    #[test]
    fn the_schema_check_catches_what_lora_manager_would_reject() {
        let fixture = Fixture::lora();
        let good = render(&fixture.input(), None).unwrap();
        let schema = SchemaCheck::lm();
        let mut upper = good.clone();
        upper["sha256"] = json!(fixture.on_disk.sha256.to_ascii_uppercase());
        let mut float_size = good.clone();
        float_size["size"] = json!(1.5);
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("base_model");
        let mut bad_status = good;
        bad_status["hash_status"] = json!("done");
        for (bad, what) in [
            (upper, "uppercase hash"),
            (float_size, "float size"),
            (missing, "missing base_model"),
            (bad_status, "unknown hash_status"),
        ] {
            assert!(!schema.errors(&bad, "LoRA").is_empty(), "{what} passed");
        }
    }

    #[test]
    fn the_users_fields_survive_and_the_file_facts_are_refreshed() {
        let fixture = Fixture::lora();
        let existing = json!({
            "model_name": "My name",
            "notes": "great at 0.7",
            "favorite": true,
            "modified": 1600000000.0,
            "usage_tips": "{\"strength\": 0.7}",
            "sha256": "0".repeat(64),
            "size": 1,
            "civitai": {"id": 1387174},
            "lm_private": [1]
        });
        let record = render(&fixture.input(), existing.as_object()).unwrap();
        assert_eq!(record["model_name"], "My name");
        assert_eq!(record["notes"], "great at 0.7");
        assert_eq!(record["favorite"], true);
        assert_eq!(record["modified"], 1600000000.0);
        assert_eq!(record["usage_tips"], "{\"strength\": 0.7}");
        assert_eq!(record["lm_private"], json!([1]));
        assert_eq!(record["sha256"], fixture.on_disk.sha256);
        assert_eq!(record["size"], fixture.on_disk.size);
        assert_eq!(record["civitai"]["name"], "v1.0");
    }

    #[test]
    fn a_record_of_another_version_is_refused() {
        let fixture = Fixture::lora();
        let existing = json!({"civitai": {"id": 5}});
        assert_eq!(
            render(&fixture.input(), existing.as_object()),
            Err(Refusal::OtherVersion("5".into()))
        );
    }
}
