//! Property tests of [`parse_config`]: the config file is written by hand, so it can hold anything.
//!
//! - A file generated from valid keys and values (any subset, in any section, with comments
//!   and varied spacing) parses to exactly those values.
//! - An unknown key (or section) and a value of the wrong type are refused, and the message names
//!   the key and the file: a typo must not be silently ignored on a run that lasts hours.
//! - Arbitrary text never panics: it parses, or fails with a message that names the file.
//!
//! `PROPTEST_CASES` overrides the case counts below (proptest reads it only into
//! `ProptestConfig::default()`, which a count set in code would override).

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::*;

fn cases(cases: u32) -> Config {
    let default = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_some() {
        default
    } else {
        Config { cases, ..default }
    }
}

/// A setting's type in the file.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Text,
    /// An integer within these bounds (TOML integers are `i64`; ranged settings have their
    /// range from `limits`).
    Int(u64, u64),
    /// A float within these bounds.
    Float(f64, f64),
    Bool,
    Texts,
    Ints,
    Layout,
}

/// A representative key of every type in every section (section `""` is the top level).
const KEYS: [(&str, &str, Kind); 19] = [
    ("", "api_key", Kind::Text),
    ("", "base_url", Kind::Text),
    ("", "output", Kind::Text),
    ("", "layout", Kind::Layout),
    ("", "metadata", Kind::Bool),
    ("", "images", Kind::Int(0, 100)),
    ("", "fallback_base_urls", Kind::Texts),
    ("network", "rate_limit", Kind::Float(0.1, 10_000.0)),
    ("network", "rate_burst", Kind::Int(1, 1000)),
    ("network", "read_timeout_secs", Kind::Int(1, 3600)),
    ("retry", "delays_ms", Kind::Ints),
    ("retry", "jitter", Kind::Float(0.0, 1e9)),
    ("download", "accept_hash_mismatch", Kind::Bool),
    ("experimental", "segments", Kind::Int(1, 16)),
    ("experimental", "parallel_download", Kind::Bool),
    (
        "failsafe",
        "consecutive_failures",
        Kind::Int(0, u32::MAX as u64),
    ),
    ("failsafe", "emergency_stop_file", Kind::Text),
    ("monitor", "alert_error_rate", Kind::Float(0.0, 1e9)),
    ("monitor", "report_interval_secs", Kind::Int(1, 86_400)),
];

const SECTIONS: [&str; 7] = [
    "",
    "network",
    "retry",
    "download",
    "experimental",
    "failsafe",
    "monitor",
];

/// A value as the test wrote it and as it should come back.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Text(String),
    Int(u64),
    Float(f64),
    Bool(bool),
    Texts(Vec<String>),
    Ints(Vec<u64>),
    Layout(Layout),
}

impl Val {
    fn toml(&self) -> String {
        fn quoted(text: &str) -> String {
            format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
        }
        match self {
            Val::Text(text) => quoted(text),
            Val::Int(n) => n.to_string(),
            // Debug prints the shortest text that reads back to the same f64, always with a `.`
            // or an exponent, as TOML wants.
            Val::Float(x) => format!("{x:?}"),
            Val::Bool(b) => b.to_string(),
            Val::Texts(texts) => {
                format!(
                    "[{}]",
                    texts
                        .iter()
                        .map(|t| quoted(t))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Val::Ints(ints) => format!("{ints:?}"),
            Val::Layout(layout) => format!("\"{}\"", layout.name()),
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    "[ -~]{0,16}"
}

fn value(kind: Kind) -> BoxedStrategy<Val> {
    match kind {
        Kind::Text => text().prop_map(Val::Text).boxed(),
        Kind::Int(min, max) => (min..=max).prop_map(Val::Int).boxed(),
        Kind::Float(min, max) => (min..max).prop_map(Val::Float).boxed(),
        Kind::Bool => any::<bool>().prop_map(Val::Bool).boxed(),
        Kind::Texts => proptest::collection::vec(text(), 0..4)
            .prop_map(Val::Texts)
            .boxed(),
        Kind::Ints => proptest::collection::vec(0..=i64::MAX as u64, 0..5)
            .prop_map(Val::Ints)
            .boxed(),
        Kind::Layout => proptest::sample::select(Layout::ALL.to_vec())
            .prop_map(Val::Layout)
            .boxed(),
    }
}

/// A value of another type than `kind` takes (an integer is a valid float, so floats get a bool).
fn wrong_value(kind: Kind) -> BoxedStrategy<String> {
    match kind {
        Kind::Text | Kind::Texts | Kind::Layout => (0..1000u32).prop_map(|n| n.to_string()).boxed(),
        Kind::Int(..) => prop_oneof![
            Just("\"4\"".to_owned()),
            Just("1.5".to_owned()),
            Just("-1".to_owned())
        ]
        .boxed(),
        Kind::Float(..) | Kind::Bool | Kind::Ints => {
            prop_oneof![Just("\"yes\"".to_owned()), Just("{ a = 1 }".to_owned())].boxed()
        }
    }
}

/// What [`parse_config`] gave for a key of [`KEYS`].
fn parsed(file: &FileConfig, key: &str) -> Option<Val> {
    let int = |n: Option<u64>| n.map(Val::Int);
    let size = |n: Option<usize>| n.map(|n| Val::Int(n as u64));
    let text = |t: &Option<String>| t.clone().map(Val::Text);
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| Val::Text(p.to_str().unwrap().to_owned()))
    };
    match key {
        "api_key" => text(&file.api_key),
        "base_url" => text(&file.base_url),
        "output" => path(&file.output),
        "layout" => file.layout.map(Val::Layout),
        "metadata" => file.metadata.map(Val::Bool),
        "images" => size(file.images),
        "fallback_base_urls" => file.fallback_base_urls.clone().map(Val::Texts),
        "rate_limit" => file.network.rate_limit.map(Val::Float),
        "rate_burst" => int(file.network.rate_burst.map(u64::from)),
        "read_timeout_secs" => int(file.network.read_timeout_secs),
        "delays_ms" => file.retry.delays_ms.clone().map(Val::Ints),
        "jitter" => file.retry.jitter.map(Val::Float),
        "accept_hash_mismatch" => file.download.accept_hash_mismatch.map(Val::Bool),
        "segments" => size(file.experimental.segments),
        "parallel_download" => file.experimental.parallel_download.map(Val::Bool),
        "consecutive_failures" => int(file.failsafe.consecutive_failures.map(u64::from)),
        "emergency_stop_file" => path(&file.failsafe.emergency_stop_file),
        "alert_error_rate" => file.monitor.alert_error_rate.map(Val::Float),
        "report_interval_secs" => int(file.monitor.report_interval_secs),
        _ => unreachable!("{key} is not in KEYS"),
    }
}

/// One `key = value` line, with the spacing and trailing comments people write.
fn line(key: &str, value: &str, spacing: &(String, String, bool)) -> String {
    let (before, after, comment) = spacing;
    let comment = if *comment { "  # note" } else { "" };
    format!("{key}{before}={after}{value}{comment}\n")
}

/// The file text: top-level lines first, then each section with its lines; `extra` lands in
/// the section it names.
fn render(
    values: &[Option<Val>],
    spacing: &(String, String, bool),
    extra: Option<(&str, String)>,
) -> String {
    let mut text = String::from("# civitai-dl settings\n");
    for section in SECTIONS {
        if !section.is_empty() {
            text.push_str(&format!("\n[{section}]\n"));
        }
        for ((key_section, key, _), value) in KEYS.iter().zip(values) {
            if let (true, Some(value)) = (*key_section == section, value) {
                text.push_str(&line(key, &value.toml(), spacing));
            }
        }
        if let Some((extra_section, extra_line)) = &extra
            && *extra_section == section
        {
            text.push_str(extra_line);
        }
    }
    text
}

fn values() -> impl Strategy<Value = Vec<Option<Val>>> {
    KEYS.iter()
        .map(|&(_, _, kind)| proptest::option::of(value(kind)))
        .collect::<Vec<_>>()
}

fn spacing() -> impl Strategy<Value = (String, String, bool)> {
    ("[ \t]{0,2}", "[ \t]{0,2}", any::<bool>())
}

fn config_path() -> impl Strategy<Value = PathBuf> {
    "[a-z]{1,8}( [a-z]{1,4})?/[a-z]{1,8}\\.toml".prop_map(PathBuf::from)
}

/// Every key and section name the shipped, documented config file lists (some commented out).
fn known_names() -> Vec<String> {
    include_str!("../../config/civitai-dl.toml")
        .lines()
        .filter_map(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            let name = match line.strip_prefix('[') {
                Some(section) => section.strip_suffix(']')?,
                None => line.split_once(" =")?.0,
            };
            let word = name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            word.then(|| name.to_owned())
        })
        .collect()
}

/// A name no section takes: a typo of a known one (a letter dropped or added) or any word,
/// made unknown by construction (no known name ends in `_x`) rather than filtered, so long runs
/// do not hit proptest's limit on rejected cases.
fn unknown_name() -> impl Strategy<Value = String> {
    let known = known_names();
    let typo = (
        proptest::sample::select(known.clone()),
        any::<prop::sample::Index>(),
        proptest::option::of("[a-z]"),
    )
        .prop_map(|(name, at, letter)| {
            let at = at.index(name.len());
            match letter {
                Some(letter) => format!("{}{letter}{}", &name[..at], &name[at..]),
                None => format!("{}{}", &name[..at], &name[at + 1..]),
            }
        });
    prop_oneof![typo, "[a-z][a-z_]{0,11}"].prop_map(move |name| {
        if name.is_empty() || known.contains(&name) {
            name + "_x"
        } else {
            name
        }
    })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn generated_files_parse_to_their_values(values in values(), spacing in spacing()) {
        let text = render(&values, &spacing, None);
        let file = parse_config(&text, Path::new("t.toml")).unwrap();
        for ((_, key, _), value) in KEYS.iter().zip(&values) {
            prop_assert_eq!(&parsed(&file, key), value, "{} in\n{}", key, text);
        }
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_key_and_the_file(
        values in values(),
        spacing in spacing(),
        section in proptest::sample::select(SECTIONS.to_vec()),
        key in unknown_name(),
        as_section in any::<bool>(),
        path in config_path(),
    ) {
        let extra = if as_section {
            ("monitor", format!("[{key}]\nx = 1\n"))
        } else {
            (section, line(&key, "1", &spacing))
        };
        let text = render(&values, &spacing, Some(extra));
        let error = parse_config(&text, &path).unwrap_err();
        prop_assert!(matches!(error, ConfigError::Parse { .. }), "{:?}", error);
        let message = error.to_string();
        prop_assert!(message.contains(&key) && message.contains(&path.display().to_string()), "{}", message);
    }

    #[test]
    fn wrong_types_are_refused_naming_the_key_and_the_file(
        values in values(),
        spacing in spacing(),
        (index, wrong) in (0..KEYS.len()).prop_flat_map(|index| (Just(index), wrong_value(KEYS[index].2))),
        path in config_path(),
    ) {
        let (section, key, _) = KEYS[index];
        let mut values = values;
        values[index] = None;
        let text = render(&values, &spacing, Some((section, line(key, &wrong, &spacing))));
        let error = parse_config(&text, &path).unwrap_err();
        let message = error.to_string();
        prop_assert!(message.contains(key) && message.contains(&path.display().to_string()), "{}", message);
    }

    #[test]
    fn arbitrary_text_parses_or_names_the_file(
        text in prop_oneof![
            any::<String>(),
            (values(), spacing(), any::<prop::sample::Index>(), "[\\PC]{0,4}").prop_map(
                |(values, spacing, at, junk)| {
                    let text = render(&values, &spacing, None);
                    let boundaries: Vec<usize> =
                        (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
                    let at = *at.get(&boundaries);
                    format!("{}{junk}", &text[..at])
                },
            ),
        ],
        path in config_path(),
    ) {
        if let Err(error) = parse_config(&text, &path) {
            let prefix = format!("config file {}: ", path.display());
            prop_assert!(error.to_string().starts_with(&prefix), "{}", error);
        }
    }
}
