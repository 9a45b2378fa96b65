//! `<stem>.json`: the card metadata A1111 and Forge show and let the user edit (description,
//! notes, the activation text added to the prompt with a LoRA, its preferred weight, the SD
//! family that hides LoRAs of other families, a checkpoint's preferred VAE).
//!
//! The user owns this file once it exists: we only fill keys it lacks and keep every other key
//! (other tools add their own), so a rerun never undoes an edit made in the web UI.

use serde_json::{Map, Value, json};

use super::SidecarInput;
use crate::plan::naming::is_sdxl_family;

/// Filled only when missing, never changed.
pub fn render(input: &SidecarInput<'_>, existing: Option<&Map<String, Value>>) -> Value {
    let mut card = existing.cloned().unwrap_or_default();
    for (key, value) in ours(input) {
        card.entry(key).or_insert(value);
    }
    Value::Object(card)
}

/// The keys we would write into an empty card.
fn ours(input: &SidecarInput<'_>) -> Vec<(String, Value)> {
    let mut keys = Vec::new();
    // The model description needs the parent model's JSON; without it the key stays missing,
    // for a later run that has it to fill.
    if let Some(description) = input.model_str("description") {
        keys.push(("description", json!(description)));
    }
    let notes = input
        .version
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    keys.push(("notes", json!(notes)));
    keys.push((
        "activation text",
        json!(activation_text(&input.trained_words())),
    ));
    keys.push(("sd version", json!(sd_version(input.base_model()))));
    if input.is_lora() {
        // 0 means "the global default weight" in A1111.
        keys.push(("preferred weight", json!(0)));
    }
    if input.model_type().eq_ignore_ascii_case("checkpoint")
        && let Some(vae) = input.vae
    {
        keys.push(("vae", json!(vae)));
    }
    keys.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Trigger words joined with `", "`; when a word itself holds a comma (a whole phrase), with
/// `" || "` instead, as Civitai Helper does, so the phrases stay apart.
pub fn activation_text(words: &[&str]) -> String {
    let separator = if words.iter().any(|w| w.contains(',')) {
        " || "
    } else {
        ", "
    };
    words.join(separator)
}

/// The `sd version` value A1111 filters LoRAs by: `SD1`, `SD2`, `SDXL` or `Unknown`. Pony,
/// Illustrious and NoobAI are SDXL underneath, and their LoRAs load with SDXL checkpoints.
pub fn sd_version(base_model: &str) -> &'static str {
    let lower = base_model.trim().to_ascii_lowercase();
    if lower.starts_with("sd 1") {
        "SD1"
    } else if lower.starts_with("sd 2") {
        "SD2"
    } else if lower.starts_with("sdxl") || is_sdxl_family(&lower) {
        "SDXL"
    } else {
        "Unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::fixtures::Fixture;

    #[test]
    fn sd_version_table() {
        let cases = [
            ("SD 1.5", "SD1"),
            ("SD 1.4", "SD1"),
            ("SD 2.1", "SD2"),
            ("SD 2.0 768", "SD2"),
            ("SDXL 1.0", "SDXL"),
            ("SDXL Turbo", "SDXL"),
            ("Pony", "SDXL"),
            ("Illustrious", "SDXL"),
            ("NoobAI", "SDXL"),
            ("Flux.1 D", "Unknown"),
            ("SD 3.5", "Unknown"),
            ("", "Unknown"),
        ];
        for (base, expected) in cases {
            assert_eq!(sd_version(base), expected, "{base:?}");
        }
    }

    #[test]
    fn activation_text_table() {
        let cases: [(&[&str], &str); 4] = [
            (&[], ""),
            (&["ppstorybook"], "ppstorybook"),
            (&["a", "b"], "a, b"),
            (
                &["red hair, smile", "blue eyes"],
                "red hair, smile || blue eyes",
            ),
        ];
        for (words, expected) in cases {
            assert_eq!(activation_text(words), expected, "{words:?}");
        }
    }

    #[test]
    fn a_lora_card_from_the_real_sample() {
        let fixture = Fixture::lora();
        let card = render(&fixture.input(), None);
        let description = card["description"].as_str().unwrap();
        assert!(description.starts_with("<h3"), "HTML kept: {description}");
        assert_eq!(card["notes"], "");
        assert_eq!(card["activation text"], "ppstorybook");
        assert_eq!(
            card["sd version"], "Unknown",
            "Flux.1 D has no A1111 family"
        );
        assert_eq!(card["preferred weight"], 0);
        assert!(card.get("vae").is_none(), "a LoRA has no preferred VAE");
    }

    #[test]
    fn an_embedding_card_gets_no_weight() {
        let fixture = Fixture::embedding();
        let card = render(&fixture.input(), None);
        assert_eq!(card["sd version"], "SD2");
        assert_eq!(card["activation text"], "21charturnerv2");
        assert!(card.get("preferred weight").is_none());
        assert!(card["description"].as_str().unwrap().contains("CharTurner"));
    }

    #[test]
    fn a_checkpoint_names_the_vae_downloaded_with_it() {
        let mut fixture = Fixture::checkpoint();
        assert!(render(&fixture.input(), None).get("vae").is_none());
        fixture.vae = Some("sdxl_vae.safetensors".into());
        let card = render(&fixture.input(), None);
        assert_eq!(card["vae"], "sdxl_vae.safetensors");
        assert_eq!(card["sd version"], "SDXL");
    }

    #[test]
    fn only_missing_keys_are_filled_and_others_kept() {
        let fixture = Fixture::lora();
        let existing = json!({
            "activation text": "my own words",
            "preferred weight": 0.8,
            "negative text": "blurry",
            "sha256": "BP's key"
        });
        let card = render(&fixture.input(), existing.as_object());
        assert_eq!(card["activation text"], "my own words");
        assert_eq!(card["preferred weight"], 0.8);
        assert_eq!(card["negative text"], "blurry");
        assert_eq!(card["sha256"], "BP's key");
        assert_eq!(card["sd version"], "Unknown");
        assert!(card.get("description").is_some());
    }

    #[test]
    fn without_the_parent_model_the_description_stays_missing() {
        let fixture = Fixture::version_only();
        let card = render(&fixture.input(), None);
        assert!(card.get("description").is_none());
        assert_eq!(card["activation text"], "in the style of ppWhimsy");
    }
}
