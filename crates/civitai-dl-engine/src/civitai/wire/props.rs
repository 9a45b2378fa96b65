//! Property tests of the lenient API models against mutated real responses
//! (`tests/fixtures/civitai-samples/`), since Civitai changes its bodies without notice.
//!
//! - Outside the ids that identify a model, version, file or image (and the lists holding
//!   them), no mutation fails the decode: a field removed, or turned into a string, number,
//!   bool, null, array or object, still decodes, and every id and list of ids keeps its value.
//! - A `null` decodes exactly as the key's absence, anywhere (both fail or both give one value).
//! - An unknown key added to any object changes nothing.
//! - A body cut short never decodes: it is an end-of-input error (a syntax error when the cut
//!   leaves a number like `0.`); junk inserted anywhere decodes or gives a located serde error;
//!   nothing panics.
//! - `parse_error_body`: any text gives `None` or a body with an error or message, each one
//!   trimmed line; non-objects are `None`; an unknown key changes nothing.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};

use super::*;
use crate::props_config::cases;

const SAMPLES: [(&str, &str); 5] = [
    (
        "model",
        include_str!("../../../tests/fixtures/civitai-samples/model.json"),
    ),
    (
        "model_version",
        include_str!("../../../tests/fixtures/civitai-samples/model_version.json"),
    ),
    (
        "models_page",
        include_str!("../../../tests/fixtures/civitai-samples/models_page_cursor.json"),
    ),
    (
        "models_page",
        include_str!("../../../tests/fixtures/civitai-samples/models_page_paged_2023.json"),
    ),
    (
        "images_page",
        include_str!("../../../tests/fixtures/civitai-samples/images_page.json"),
    ),
];

const ERROR_BODIES: &str =
    include_str!("../../../tests/fixtures/civitai-samples/error_bodies.json");

/// A sample decoded as the endpoint it came from.
#[derive(Debug, PartialEq)]
enum Decoded {
    Model(Model),
    Version(ModelVersion),
    Models(Page<Model>),
    Images(Page<Image>),
}

fn decode(kind: &str, text: &str) -> Result<Decoded, serde_json::Error> {
    Ok(match kind {
        "model" => Decoded::Model(serde_json::from_str(text)?),
        "model_version" => Decoded::Version(serde_json::from_str(text)?),
        "models_page" => Decoded::Models(serde_json::from_str(text)?),
        _ => Decoded::Images(serde_json::from_str(text)?),
    })
}

/// The ids that say what a body is about: model, version and file ids, image URLs.
fn skeleton(decoded: &Decoded) -> Vec<String> {
    fn version(v: &ModelVersion) -> String {
        let files: Vec<u64> = v.files.iter().map(|f| f.id).collect();
        format!("{}{files:?}", v.id)
    }
    fn model(m: &Model) -> String {
        let versions: Vec<String> = m.model_versions.iter().map(version).collect();
        format!("{}{versions:?}", m.id)
    }
    match decoded {
        Decoded::Model(m) => vec![model(m)],
        Decoded::Version(v) => vec![version(v)],
        Decoded::Models(page) => page.items.iter().map(model).collect(),
        Decoded::Images(page) => page.items.iter().map(|i| i.url.clone()).collect(),
    }
}

/// One step into a JSON tree.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// The paths of the nodes of `value` that `pick` keeps.
fn paths(
    value: &Value,
    prefix: &mut Vec<Step>,
    pick: fn(&Value, &[Step]) -> bool,
    out: &mut Vec<Vec<Step>>,
) {
    if pick(value, prefix) {
        out.push(prefix.clone());
    }
    match value {
        Value::Object(fields) => {
            for (key, child) in fields {
                prefix.push(Step::Key(key.clone()));
                paths(child, prefix, pick, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                prefix.push(Step::Index(index));
                paths(child, prefix, pick, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// Whether a mutation at `path` may fail the decode: the root, a required id (or an image's
/// URL in `/images`), or a list of versions, files or items or one of their entries.
fn may_fail(kind: &str, path: &[Step]) -> bool {
    let tokens: Vec<&str> = path
        .iter()
        .map(|step| match step {
            Step::Key(key) => key.as_str(),
            Step::Index(_) => "#",
        })
        .collect();
    let version = |rest: &[&str]| {
        matches!(
            rest,
            [] | ["id"] | ["files"] | ["files", "#"] | ["files", "#", "id"]
        )
    };
    let model = |rest: &[&str]| match rest {
        [] | ["id"] | ["modelVersions"] | ["modelVersions", "#"] => true,
        ["modelVersions", "#", rest @ ..] => version(rest),
        _ => false,
    };
    match (kind, tokens.as_slice()) {
        ("model", rest) => model(rest),
        ("model_version", rest) => version(rest),
        (_, [] | ["items"] | ["items", "#"]) => true,
        ("models_page", ["items", "#", rest @ ..]) => model(rest),
        (_, ["items", "#", "url"]) => true,
        _ => false,
    }
}

fn node<'a>(value: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(value, |node, step| match step {
        Step::Key(key) => &mut node[key.as_str()],
        Step::Index(index) => &mut node[*index],
    })
}

/// What a field can turn into.
#[derive(Clone, Debug)]
enum Mutation {
    Remove,
    Replace(Value),
}

fn small_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12..1e12f64).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(json!([])),
        Just(json!(["x", 1])),
        Just(json!({})),
        Just(json!({"id": "x"})),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Remove),
        small_value().prop_map(Mutation::Replace)
    ]
}

/// Apply `mutation` at `path`; removing the root or an array entry replaces it with `null`.
fn mutated(sample: &Value, path: &[Step], mutation: &Mutation) -> Value {
    let mut value = sample.clone();
    match (mutation, path.split_last()) {
        (Mutation::Remove, Some((Step::Key(key), parent))) => {
            if let Value::Object(fields) = node(&mut value, parent) {
                fields.remove(key);
            }
        }
        (Mutation::Remove, _) => *node(&mut value, path) = Value::Null,
        (Mutation::Replace(new), _) => *node(&mut value, path) = new.clone(),
    }
    value
}

/// A sample (its kind and JSON) and a path into it, chosen among the nodes `pick` keeps (picked
/// up front rather than filtered, so long runs do not hit proptest's limit on rejected cases).
fn sample_and_path(
    pick: fn(&Value, &[Step]) -> bool,
) -> impl Strategy<Value = (&'static str, Value, Vec<Step>)> {
    select(SAMPLES.to_vec()).prop_flat_map(move |(kind, text)| {
        let value: Value = serde_json::from_str(text).unwrap();
        let mut picked = Vec::new();
        paths(&value, &mut Vec::new(), pick, &mut picked);
        (Just(kind), Just(value), select(picked))
    })
}

fn any_node(_: &Value, _: &[Step]) -> bool {
    true
}

fn object_member(_: &Value, path: &[Step]) -> bool {
    matches!(path.last(), Some(Step::Key(_)))
}

fn object(node: &Value, _: &[Step]) -> bool {
    node.is_object()
}

fn error_bodies() -> Vec<Value> {
    let samples: Vec<Value> = serde_json::from_str(ERROR_BODIES).unwrap();
    samples
        .into_iter()
        .map(|sample| sample["body"].clone())
        .collect()
}

/// Arbitrary JSON whose keys are often the ones error bodies use.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        select(vec![
            "error",
            "message",
            "issues",
            "path",
            "formErrors",
            "fieldErrors",
            "deadline"
        ])
        .prop_map(String::from),
        "[a-z]{1,5}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(Value::from(" [\"a\", {\"message\": \"b\\nc\"}] ")),
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Whether `text` is one non-empty line without runs of blanks.
fn one_line(text: &str) -> bool {
    !text.is_empty() && text.split_whitespace().collect::<Vec<_>>().join(" ") == text
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn mutations_outside_the_ids_decode_and_keep_the_ids(
        (kind, sample, path) in sample_and_path(any_node),
        mutation in mutation(),
    ) {
        let original = decode(kind, &sample.to_string()).unwrap();
        let text = mutated(&sample, &path, &mutation).to_string();
        match decode(kind, &text) {
            Ok(decoded) if !may_fail(kind, &path) => {
                prop_assert_eq!(skeleton(&decoded), skeleton(&original), "at {:?}", path);
            }
            Ok(_) => {}
            Err(error) => {
                prop_assert!(may_fail(kind, &path), "{:?} at {:?}: {}", mutation, path, error);
                prop_assert!(!error.to_string().is_empty());
            }
        }
    }

    #[test]
    fn null_decodes_as_absence((kind, sample, path) in sample_and_path(object_member)) {
        let null = decode(kind, &mutated(&sample, &path, &Mutation::Replace(Value::Null)).to_string());
        let absent = decode(kind, &mutated(&sample, &path, &Mutation::Remove).to_string());
        match (null, absent) {
            (Ok(null), Ok(absent)) => prop_assert_eq!(null, absent, "at {:?}", path),
            (null, absent) => prop_assert!(null.is_err() && absent.is_err(), "at {:?}", path),
        }
    }

    #[test]
    fn unknown_keys_change_nothing(
        (kind, sample, path) in sample_and_path(object),
        junk in small_value(),
    ) {
        let mut value = sample.clone();
        let Value::Object(fields) = node(&mut value, &path) else {
            unreachable!("an object was picked");
        };
        fields.insert("zzUnknownKey".to_owned(), junk);
        let original = decode(kind, &sample.to_string()).unwrap();
        prop_assert_eq!(decode(kind, &value.to_string()).unwrap(), original, "at {:?}", path);
    }

    #[test]
    fn cut_bodies_are_end_of_input_errors(
        (kind, text) in select(SAMPLES.to_vec()),
        cut in any::<prop::sample::Index>(),
    ) {
        let end = text.trim_end().len() - 1;
        let at = (0..end).filter(|&at| text.is_char_boundary(at)).nth(cut.index(end)).unwrap_or(0);
        let error = decode(kind, &text[..at]).unwrap_err();
        // A cut inside a number can leave `0.`, which serde_json calls invalid before it sees the end.
        prop_assert!(error.is_eof() || error.is_syntax(), "cut at {}: {}", at, error);
    }

    #[test]
    fn junk_anywhere_decodes_or_is_a_located_error(
        (kind, text) in select(SAMPLES.to_vec()),
        at in any::<prop::sample::Index>(),
        junk in "[\\PC]{1,6}|[{}\\[\\]\",:0-9a-z\\\\ ]{1,6}",
    ) {
        let boundaries: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        let at = *at.get(&boundaries);
        let spliced = format!("{}{junk}{}", &text[..at], &text[at..]);
        if let Err(error) = decode(kind, &spliced) {
            // serde_json counts lines from 1; column 0 means "before the line's first character".
            prop_assert!(error.line() >= 1, "{}", error);
        }
    }

    #[test]
    fn error_bodies_give_one_line_or_none(
        text in prop_oneof![
            json_value().prop_map(|value| value.to_string()),
            (select(error_bodies()), any::<prop::sample::Index>()).prop_map(|(body, cut)| {
                let text = body.to_string();
                let boundaries: Vec<usize> =
                    (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
                text[..*cut.get(&boundaries)].to_owned()
            }),
            any::<String>(),
        ]
    ) {
        let Some(body) = parse_error_body(&text) else {
            return Ok(());
        };
        prop_assert!(serde_json::from_str::<Value>(&text).is_ok_and(|v| v.is_object()));
        prop_assert!(body.error.is_some() || body.message.is_some());
        for line in [&body.error, &body.message].into_iter().flatten() {
            prop_assert!(one_line(line), "{:?} from {}", line, text);
        }
        prop_assert!(one_line(&body.summary()));
    }

    #[test]
    fn non_objects_are_not_error_bodies(
        value in json_value().prop_map(|v| if v.is_object() { Value::Array(vec![v]) } else { v }),
    ) {
        prop_assert_eq!(parse_error_body(&value.to_string()), None);
    }

    #[test]
    fn unknown_keys_do_not_change_error_bodies(
        body in select(error_bodies()),
        junk in json_value(),
    ) {
        let mut extended = body.clone();
        extended["zzUnknownKey"] = junk;
        prop_assert_eq!(
            parse_error_body(&extended.to_string()),
            parse_error_body(&body.to_string())
        );
    }
}
