//! `<stem>.civitai.info`: the version JSON Civitai Helper (and SwarmUI, and library scanners that
//! skip files with one) reads, plus what the maintained Civitai Helper fork adds from the parent
//! model (its description, tags and licence flags, and the creator), so an extension reading it
//! never has to ask Civitai for the model again.
//!
//! Our own facts (tool version, the SHA-256 we verified, when, from where) go under
//! `extensions.civitai_dl`, beside whatever other tools keep under `extensions`. A file that names
//! another version is never replaced: it describes some other download, and Civitai Helper itself
//! refuses that overwrite.

use serde_json::{Map, Value, json};

use super::{Refusal, SidecarInput, without_token};

/// Our key under `extensions`.
const EXTENSION_KEY: &str = "civitai_dl";

/// The new `.civitai.info` content, merged into the existing one (already parsed as an object).
pub fn render(
    input: &SidecarInput<'_>,
    existing: Option<&Map<String, Value>>,
) -> Result<Value, Refusal> {
    let ours = input.version.get("id").cloned().unwrap_or(Value::Null);
    if let Some(old_id) = existing.and_then(|old| old.get("id"))
        && !is_blank(old_id)
        && !same_id(old_id, &ours)
    {
        return Err(Refusal::OtherVersion(id_text(old_id)));
    }
    let mut info = input.version_with_parent();
    let mut extensions = existing
        .and_then(|old| old.get("extensions"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let downloaded_at = extensions
        .get(EXTENSION_KEY)
        .filter(|block| block.get("sha256").and_then(Value::as_str) == Some(&input.on_disk.sha256))
        .and_then(|block| block.get("downloaded_at"))
        .cloned()
        .unwrap_or_else(|| json!(input.on_disk.now_rfc3339));
    extensions.insert(
        EXTENSION_KEY.to_owned(),
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "file_id": input.file.get("id"),
            "sha256": input.on_disk.sha256,
            "sha256_verified": input.on_disk.verified,
            "downloaded_at": downloaded_at,
            "source_url": input.file.get("downloadUrl").and_then(Value::as_str).map(without_token),
        }),
    );
    info.insert("extensions".to_owned(), Value::Object(extensions));
    // Keys only the old file has (a reader's own notes, Civitai Helper's `local_file` images are
    // inside `images` and are refreshed) survive; Civitai's current answer wins on the rest.
    if let Some(old) = existing {
        for (key, value) in old {
            info.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    Ok(Value::Object(info))
}

/// Civitai Helper's "not on Civitai" skeleton has `"id": ""`; such a file may be replaced.
fn is_blank(id: &Value) -> bool {
    match id {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// Ids compare as text: some writers store them as strings.
fn same_id(a: &Value, b: &Value) -> bool {
    id_text(a) == id_text(b)
}

fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::fixtures::Fixture;

    fn render_over(fixture: &Fixture, existing: Option<Value>) -> Result<Value, Refusal> {
        let existing = existing.map(|v| v.as_object().cloned().expect("object"));
        render(&fixture.input(), existing.as_ref())
    }

    #[test]
    fn the_version_json_gains_the_parent_fields_and_our_block() {
        let fixture = Fixture::lora();
        let info = render_over(&fixture, None).unwrap();
        assert_eq!(info["id"], 1387174);
        assert_eq!(info["modelId"], 1231067);
        assert_eq!(info["trainedWords"], json!(["ppstorybook"]));
        assert_eq!(info["model"]["name"], "Vivid Impressions Storybook Style");
        assert_eq!(info["model"]["type"], "LORA");
        assert!(
            info["model"]["description"]
                .as_str()
                .unwrap()
                .contains("ko-fi"),
            "the HTML description is kept as Civitai sends it"
        );
        assert_eq!(
            info["model"]["tags"],
            json!(["style", "illustration", "storybook"])
        );
        assert_eq!(
            info["model"]["allowCommercialUse"],
            json!(["Image", "RentCivit", "Rent", "Sell"])
        );
        assert_eq!(info["model"]["allowNoCredit"], true);
        assert_eq!(info["model"]["allowDerivatives"], true);
        assert_eq!(info["model"]["allowDifferentLicense"], true);
        assert_eq!(info["creator"]["username"], "PixelPawsAI");
        let block = &info["extensions"]["civitai_dl"];
        assert_eq!(block["sha256"], fixture.on_disk.sha256);
        assert_eq!(block["sha256_verified"], true);
        assert_eq!(block["file_id"], 1289799);
        assert_eq!(block["downloaded_at"], fixture.on_disk.now_rfc3339);
        assert_eq!(block["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            block["source_url"],
            "https://civitai.com/api/download/models/1387174"
        );
    }

    #[test]
    fn without_the_parent_model_the_version_json_is_written_as_is() {
        let fixture = Fixture::version_only();
        let info = render_over(&fixture, None).unwrap();
        assert_eq!(info["id"], 1255556);
        assert_eq!(
            info["model"],
            json!({"name": "Enchanted Whimsy style (Flux)", "type": "LORA", "nsfw": false, "poi": false})
        );
        assert_eq!(
            info["creator"]["username"], "PixelPawsAI",
            "the sample's own creator"
        );
        assert!(info["extensions"]["civitai_dl"].is_object());
    }

    #[test]
    fn other_extensions_and_unknown_keys_survive_a_rewrite() {
        let fixture = Fixture::lora();
        let existing = json!({
            "id": 1387174,
            "extensions": {
                "sd_civitai_helper": {"version": "1.8.13", "last_update": 1700000000, "skeleton_file": false},
                "civitai_dl": {"sha256": fixture.on_disk.sha256, "downloaded_at": "2020-01-01T00:00:00Z"}
            },
            "my_note": "keep me",
            "name": "old name"
        });
        let info = render_over(&fixture, Some(existing)).unwrap();
        assert_eq!(info["extensions"]["sd_civitai_helper"]["version"], "1.8.13");
        assert_eq!(
            info["extensions"]["civitai_dl"]["downloaded_at"], "2020-01-01T00:00:00Z",
            "the same bytes keep their first download time"
        );
        assert_eq!(info["my_note"], "keep me");
        assert_eq!(info["name"], "v1.0", "Civitai's current answer wins");
    }

    #[test]
    fn a_file_of_another_version_is_refused_and_a_skeleton_replaced() {
        let fixture = Fixture::lora();
        assert_eq!(
            render_over(&fixture, Some(json!({"id": 9, "name": "other"}))),
            Err(Refusal::OtherVersion("9".into()))
        );
        assert_eq!(
            render_over(&fixture, Some(json!({"id": "77"}))),
            Err(Refusal::OtherVersion("77".into()))
        );
        for existing in [
            json!({}),
            json!({"id": ""}),
            json!({"id": null, "skeleton_file": true}),
            json!({"id": "1387174"}),
        ] {
            let info = render_over(&fixture, Some(existing.clone())).expect("replaceable");
            assert_eq!(info["id"], 1387174, "{existing}");
        }
    }

    #[test]
    fn a_new_download_of_other_bytes_gets_a_new_time() {
        let fixture = Fixture::lora();
        let existing = json!({"id": 1387174, "extensions": {"civitai_dl": {"sha256": "00", "downloaded_at": "2020"}}});
        let info = render_over(&fixture, Some(existing)).unwrap();
        assert_eq!(
            info["extensions"]["civitai_dl"]["downloaded_at"],
            fixture.on_disk.now_rfc3339
        );
    }
}
