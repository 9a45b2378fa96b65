//! Property tests of the sidecar merges: the file already beside a model is outside input (a
//! user's edit, another tool's output, anything), so whatever it holds must merge without a
//! panic and without losing what the rules promise to keep.
//!
//! - A1111 card: every key of an existing card keeps its value.
//! - `.civitai.info`: with the same id, every other tool's `extensions` key and every key Civitai
//!   does not send survive; with another non-blank id, the file is refused.
//! - LoRA Manager: no existing key disappears, and the hash is always the one we verified.
//! - Sniffing: any bytes give an answer without a panic; a PNG signature is a PNG whatever follows.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::fixtures::Fixture;
use super::preview::{MediaType, sniff};
use super::{Refusal, SidecarKind, render};
use crate::props_config::cases;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[ -~]{0,12}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_ ]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map("[a-zA-Z_ ]{1,14}", value(), 0..8)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn an_a1111_card_keeps_every_key_it_had(existing in object()) {
        let fixture = Fixture::lora();
        let card = render(SidecarKind::A1111Json, &fixture.input(), Some(&Value::Object(existing.clone())))
            .expect("a card is never refused");
        for (key, old) in &existing {
            prop_assert_eq!(&card[key], old);
        }
        prop_assert!(card.get("sd version").is_some());
    }

    #[test]
    fn a_civitai_info_of_the_same_version_keeps_other_tools_keys(
        mut existing in object(),
        extensions in object(),
    ) {
        let fixture = Fixture::lora();
        existing.insert("id".into(), json!(1387174));
        existing.insert("extensions".into(), Value::Object(extensions.clone()));
        let info = render(SidecarKind::CivitaiInfo, &fixture.input(), Some(&Value::Object(existing.clone())))
            .expect("same id");
        for (key, old) in &extensions {
            if key != "civitai_dl" {
                prop_assert_eq!(&info["extensions"][key], old);
            }
        }
        for (key, old) in &existing {
            if fixture.version.get(key).is_none() && key != "extensions" && key != "creator" {
                prop_assert_eq!(&info[key], old, "{}", key);
            }
        }
        prop_assert_eq!(&info["extensions"]["civitai_dl"]["sha256"], &json!(fixture.on_disk.sha256));
    }

    #[test]
    fn a_civitai_info_of_another_version_is_refused(id in 1u64.., mut existing in object()) {
        prop_assume!(id != 1387174);
        let fixture = Fixture::lora();
        existing.insert("id".into(), json!(id));
        prop_assert_eq!(
            render(SidecarKind::CivitaiInfo, &fixture.input(), Some(&Value::Object(existing))),
            Err(Refusal::OtherVersion(id.to_string()))
        );
    }

    #[test]
    fn a_lora_manager_record_loses_no_key_and_has_our_hash(mut existing in object()) {
        existing.remove("civitai");
        let fixture = Fixture::lora();
        let record = render(SidecarKind::LmMetadata, &fixture.input(), Some(&Value::Object(existing.clone())))
            .expect("no version named");
        for key in existing.keys() {
            prop_assert!(record.get(key).is_some(), "{} lost", key);
        }
        prop_assert_eq!(&record["sha256"], &json!(fixture.on_disk.sha256));
    }

    #[test]
    fn any_existing_value_renders_or_is_refused_without_a_panic(existing in value()) {
        let fixture = Fixture::version_only();
        for kind in SidecarKind::ALL {
            let _ = render(kind, &fixture.input(), Some(&existing));
        }
    }

    #[test]
    fn sniffing_never_panics_and_a_png_signature_wins(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
        let _ = sniff(&bytes);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(&bytes);
        prop_assert_eq!(sniff(&png), Some(MediaType::Png));
    }
}
