//! Property tests of target parsing: what users paste is outside input of every shape.
//!
//! - Every written form of a target (bare id, site URL on any Civitai host with slug, query,
//!   fragment or no scheme, download link, AIR in any case) parses to that target.
//! - `Display` is canonical: it parses back to the same target.
//! - An id outside `1..=i32::MAX` is refused as [`TargetError::InvalidId`] naming that id.
//! - Arbitrary text never panics: it parses to a target whose canonical form round-trips, or fails
//!   with a message that quotes the input (with any `token=` value redacted, never echoed).
//! - A list file with blank lines, comments and CRLF endings yields its targets in order, and
//!   its first bad entry is reported with its 1-based line number.

use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::props_config::cases;

fn civitai_id() -> impl Strategy<Value = u64> {
    1..=MAX_CIVITAI_ID
}

fn username() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{0,8}[A-Za-z0-9][A-Za-z0-9_.-]{0,8}"
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (civitai_id(), proptest::option::of(civitai_id()))
            .prop_map(|(id, version)| Target::Model { id, version }),
        (civitai_id(), proptest::option::of(civitai_id()))
            .prop_map(|(id, file)| Target::Version { id, file }),
        username().prop_map(|username| Target::User { username }),
    ]
}

/// A Civitai origin as users paste it: any site host, either case, with or without a scheme.
fn origin() -> impl Strategy<Value = String> {
    (
        select(vec!["https://", "http://", ""]),
        select(CIVITAI_HOSTS.to_vec()),
        any::<bool>(),
    )
        .prop_map(|(scheme, host, upper)| {
            let host = if upper {
                host.to_ascii_uppercase()
            } else {
                host.to_owned()
            };
            format!("{scheme}{host}")
        })
}

/// What may follow a model page's id without changing the target: a slug, a slash, a fragment.
fn page_tail() -> impl Strategy<Value = String> {
    ("(/[a-z0-9-]{1,10})?/?", "(#[a-z]{1,6})?").prop_map(|(path, fragment)| path + &fragment)
}

/// `urn:air:{ecosystem}:{type}:civitai:` with the case of the fixed parts varied.
fn air_prefix() -> impl Strategy<Value = String> {
    (
        select(vec!["urn:air:", "URN:AIR:", "Urn:Air:"]),
        "[a-z0-9]{1,6}",
        "[a-z]{1,10}",
        select(vec!["civitai", "Civitai", "CIVITAI"]),
    )
        .prop_map(|(urn, ecosystem, kind, source)| format!("{urn}{ecosystem}:{kind}:{source}:"))
}

/// An AIR's optional `.{format}` suffix.
fn air_format() -> impl Strategy<Value = String> {
    "(\\.[a-z]{1,11})?".prop_map(String::from)
}

/// The ways a user can write `target`.
fn written(target: &Target) -> BoxedStrategy<String> {
    match target.clone() {
        Target::Model { id, version: None } => prop_oneof![
            ("[ \t]{0,2}", "[ \t]{0,2}").prop_map(move |(a, b)| format!("{a}{id}{b}")),
            (origin(), page_tail()).prop_map(move |(o, tail)| format!("{o}/models/{id}{tail}")),
            origin().prop_map(move |o| format!("{o}/api/v1/models/{id}")),
            (air_prefix(), air_format()).prop_map(move |(air, f)| format!("{air}{id}{f}")),
        ]
        .boxed(),
        Target::Model {
            id,
            version: Some(version),
        } => prop_oneof![
            (
                origin(),
                "(/[a-z0-9-]{1,10})?",
                "(sort=[a-z]{1,5}&)?",
                "(#[a-z]{1,6})?"
            )
                .prop_map(move |(o, slug, other, fragment)| format!(
                    "{o}/models/{id}{slug}?{other}modelVersionId={version}{fragment}"
                )),
            (air_prefix(), air_format())
                .prop_map(move |(air, f)| format!("{air}{id}@{version}{f}")),
        ]
        .boxed(),
        Target::Version { id, file: None } => prop_oneof![
            origin().prop_map(move |o| format!("{o}/api/download/models/{id}")),
            origin().prop_map(move |o| format!("{o}/api/v1/model-versions/{id}")),
            (origin(), page_tail())
                .prop_map(move |(o, tail)| format!("{o}/model-versions/{id}{tail}")),
        ]
        .boxed(),
        Target::Version {
            id,
            file: Some(file),
        } => prop_oneof![
            (origin(), "(type=Model&)?").prop_map(move |(o, selector)| format!(
                "{o}/api/download/models/{id}?{selector}fileId={file}"
            )),
            (air_prefix(), civitai_id(), air_format())
                .prop_map(move |(air, model, f)| format!("{air}{model}@{id}+{file}{f}")),
        ]
        .boxed(),
        Target::User { username } => (origin(), "(/models)?")
            .prop_map(move |(o, tail)| format!("{o}/user/{username}{tail}"))
            .boxed(),
    }
}

fn target_and_text() -> impl Strategy<Value = (Target, String)> {
    target().prop_flat_map(|target| (Just(target.clone()), written(&target)))
}

/// Text near the accepted forms, where parsing bugs hide, and plain noise.
fn noise() -> impl Strategy<Value = String> {
    let near = prop_oneof![
        Just(""),
        Just("urn:air:"),
        Just("urn:air:sdxl:lora:civitai:"),
        Just("https://civitai.com/"),
        Just("civitai.red/models/"),
        Just("https://civitai.com/api/download/models/"),
        Just("https://civitai.com/user/"),
    ];
    prop_oneof![
        any::<String>(),
        (near, "[0-9a-zA-Z:/@+.?&=#%_ -]{0,30}").prop_map(|(head, tail)| format!("{head}{tail}")),
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn every_written_form_parses_to_its_target((target, text) in target_and_text()) {
        prop_assert_eq!(text.parse::<Target>(), Ok(target));
    }

    #[test]
    fn display_is_canonical_and_parses_back(target in target()) {
        let canonical = target.to_string();
        prop_assert!(canonical.starts_with(CANONICAL_ORIGIN), "{}", canonical);
        prop_assert_eq!(canonical.parse::<Target>(), Ok(target));
    }

    #[test]
    fn ids_out_of_range_are_refused_naming_the_id(
        bad in prop_oneof![Just(0u64), (MAX_CIVITAI_ID + 1)..=u64::MAX],
        form in 0..4usize,
    ) {
        let text = match form {
            0 => bad.to_string(),
            1 => format!("https://civitai.com/models/{bad}"),
            2 => format!("https://civitai.com/api/download/models/{bad}"),
            _ => format!("urn:air:sdxl:lora:civitai:1@{bad}"),
        };
        prop_assert_eq!(
            text.parse::<Target>(),
            Err(TargetError::InvalidId { input: text.clone(), id: bad.to_string() })
        );
    }

    #[test]
    fn arbitrary_text_parses_canonically_or_names_the_input(text in noise()) {
        match text.parse::<Target>() {
            Ok(target) => prop_assert_eq!(target.to_string().parse::<Target>(), Ok(target)),
            Err(error) => {
                let quoted = format!("'{}'", redact_token(&text));
                prop_assert!(error.to_string().contains(&quoted), "{} lacks {}", error, quoted);
            }
        }
    }

    #[test]
    fn a_token_in_pasted_text_is_never_echoed(
        head in "[a-z0-9:/.?&=# -]{0,30}",
        secret in "[A-Z]{12}",
        separator in select(vec!["?", "&"]),
        tail in "([&# ][a-z0-9:/.?&=# -]{0,20})?",
    ) {
        let text = format!("{head}{separator}token={secret}{tail}");
        if let Err(error) = text.parse::<Target>() {
            prop_assert!(!error.to_string().contains(&secret), "{}", error);
        }
    }

    #[test]
    fn list_files_give_targets_in_order_and_line_numbers(
        lines in proptest::collection::vec(list_line(), 0..12),
        trailing_newline in any::<bool>(),
    ) {
        let mut text = String::new();
        for (index, (line, _, crlf)) in lines.iter().enumerate() {
            text.push_str(line);
            if index + 1 < lines.len() || trailing_newline {
                text.push_str(if *crlf { "\r\n" } else { "\n" });
            }
        }
        let first_bad = lines.iter().position(|(_, entry, _)| matches!(entry, Entry::Bad(_)));
        let result = parse_target_list(&text);
        match first_bad {
            None => {
                let expected: Vec<Target> = lines
                    .iter()
                    .filter_map(|(_, entry, _)| match entry {
                        Entry::Target(target) => Some(target.clone()),
                        _ => None,
                    })
                    .collect();
                prop_assert_eq!(result, Ok(expected));
            }
            Some(index) => {
                let Entry::Bad(bad) = &lines[index].1 else { unreachable!() };
                let error = result.unwrap_err();
                let prefix = format!("line {}: '{bad}'", index + 1);
                prop_assert!(error.to_string().starts_with(&prefix), "{}", error);
                prop_assert_eq!(
                    error,
                    TargetError::Line {
                        line: index + 1,
                        reason: Box::new(TargetError::Unrecognised { input: bad.clone() }),
                    }
                );
            }
        }
    }
}

/// What one line of a generated list holds.
#[derive(Clone, Debug)]
enum Entry {
    Nothing,
    Target(Target),
    /// Text that is no target (it starts with `x`, so it is neither an id nor an AIR nor a host).
    Bad(String),
}

/// A list line (its text, what it holds, whether it ends in CRLF).
fn list_line() -> impl Strategy<Value = (String, Entry, bool)> {
    let comment = "( +#[^\r\n]{0,10})?";
    prop_oneof![
        "[ \t]{0,3}".prop_map(|blank| (blank, Entry::Nothing)),
        "[ \t]{0,2}#[^\r\n]{0,12}".prop_map(|line| (line, Entry::Nothing)),
        (target_and_text(), comment)
            .prop_map(|((target, text), comment)| (text + &comment, Entry::Target(target))),
        ("x[a-z0-9-]{0,8}", comment)
            .prop_map(|(bad, comment)| (format!("{bad}{comment}"), Entry::Bad(bad))),
    ]
    .prop_flat_map(|(line, entry)| (Just(line), Just(entry), any::<bool>()))
}
