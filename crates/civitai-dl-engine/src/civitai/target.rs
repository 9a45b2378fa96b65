//! What the user asked to download, before any API call.
//!
//! Users paste whatever they have at hand: a bare id, the page URL from the browser (on any of
//! Civitai's colour domains, with or without a slug), a download link copied from the site, or the
//! AIR shown on a version page. This module turns all of them into one small [`Target`] so the rest of
//! the program never parses text, and rejects anything else with a message that lists the accepted
//! forms, because a typo should not become a request for model 0.

use std::fmt;
use std::str::FromStr;

use reqwest::Url;

/// Civitai's ids are Postgres `int4`; the API answers 400 for anything outside 1..=this.
const MAX_CIVITAI_ID: u64 = i32::MAX as u64;

/// Hosts serving the Civitai site; `.red` and `.green` are its colour domains (same app, same ids).
const CIVITAI_HOSTS: [&str; 4] = [
    "civitai.com",
    "www.civitai.com",
    "civitai.red",
    "civitai.green",
];

/// Shown with every parse error so the user sees what would have worked.
const ACCEPTED_FORMS: &str = "examples: 4201, https://civitai.com/models/4201, \
     urn:air:sdxl:lora:civitai:328553@368189";

/// Where [`Target`]'s `Display` points; parsing accepts every host in [`CIVITAI_HOSTS`].
const CANONICAL_ORIGIN: &str = "https://civitai.com";

/// One thing the user asked to download, before any API call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A model: all its versions, or only `version` when the URL or AIR named one.
    Model {
        /// The model id (`/models/{id}`).
        id: u64,
        /// The version picked by `?modelVersionId=` or an AIR's `@version`.
        version: Option<u64>,
    },
    /// One model version: all its files, or only `file` when a `fileId` was given.
    Version {
        /// The model version id (`/api/download/models/{id}`, `/model-versions/{id}`).
        id: u64,
        /// The file picked by `?fileId=` or an AIR's `+fileId`.
        file: Option<u64>,
    },
    /// Every model published by a creator.
    User {
        /// The creator's user name, as it appears in `/user/{name}`.
        username: String,
    },
}

/// Why a piece of text is not a download target.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// Neither an id, a Civitai URL nor an AIR.
    #[error("'{input}' is not a model id, Civitai URL or AIR ({ACCEPTED_FORMS})")]
    Unrecognised {
        /// The text as given.
        input: String,
    },
    /// A Civitai URL, but not one of the pages that name something to download.
    #[error(
        "'{input}' is a Civitai URL but not a model, model version, download or user page ({ACCEPTED_FORMS})"
    )]
    UnsupportedPage {
        /// The text as given.
        input: String,
    },
    /// A download link that picks its file by `type`/`format`/`size`/`fp` rather than by id.
    #[error(
        "'{input}' picks a file by '{selector}'; civitai-dl selects files by id or by its own flags: \
         use --version {version} with --file-type/--format/--size/--fp, or the file's ?fileId= link \
         (see `civitai-dl info --version {version}`)"
    )]
    FileSelector {
        /// The text as given.
        input: String,
        /// The version id in the link.
        version: u64,
        /// The query parameter that selects the file.
        selector: String,
    },
    /// An id that is not a positive integer within Civitai's range.
    #[error(
        "'{input}': '{id}' is not a valid Civitai id (a whole number from 1 to {MAX_CIVITAI_ID})"
    )]
    InvalidId {
        /// The text as given.
        input: String,
        /// The part that should have been an id.
        id: String,
    },
    /// A user name with characters Civitai user names do not have.
    #[error("'{input}': '{username}' is not a Civitai user name (letters, digits, '_', '-', '.')")]
    InvalidUsername {
        /// The text as given.
        input: String,
        /// The offending user name.
        username: String,
    },
    /// An AIR that does not follow `urn:air:{ecosystem}:{type}:{source}:{id}[@{version}][+{file}]`.
    #[error(
        "'{input}' is not a valid AIR (expected urn:air:{{ecosystem}}:{{type}}:civitai:{{modelId}}[@{{versionId}}][+{{fileId}}], e.g. urn:air:sdxl:lora:civitai:328553@368189)"
    )]
    MalformedAir {
        /// The text as given.
        input: String,
    },
    /// A well-formed AIR for a resource hosted somewhere else than Civitai.
    #[error("'{input}' names a resource on '{source_name}'; only 'civitai' AIRs can be downloaded")]
    ForeignAir {
        /// The text as given.
        input: String,
        /// The AIR's source segment.
        source_name: String,
    },
    /// A line of a `--from-file` list that failed to parse.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number in the list.
        line: usize,
        /// Why that line was rejected.
        reason: Box<TargetError>,
    },
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let redacted = redact_token(input);
        if redacted != input {
            tracing::warn!(
                "the ?token= in a pasted URL is ignored and never shown: pass the key with \
                 --api-key or CIVITAI_API_KEY"
            );
        }
        let input = redacted.as_str();
        let text = input.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let id = parse_id(input, text)?;
            return Ok(Self::Model { id, version: None });
        }
        if let Some(air) = strip_prefix_ignore_case(text, "urn:air:") {
            return parse_air(input, air);
        }
        if let Some(url) = civitai_url(text) {
            return parse_url(input, &url);
        }
        Err(TargetError::Unrecognised {
            input: input.to_owned(),
        })
    }
}

impl fmt::Display for Target {
    /// The canonical URL of the target, which [`Target::from_str`] parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model { id, version: None } => write!(f, "{CANONICAL_ORIGIN}/models/{id}"),
            Self::Model {
                id,
                version: Some(version),
            } => write!(f, "{CANONICAL_ORIGIN}/models/{id}?modelVersionId={version}"),
            Self::Version { id, file: None } => {
                write!(f, "{CANONICAL_ORIGIN}/api/download/models/{id}")
            }
            Self::Version {
                id,
                file: Some(file),
            } => write!(
                f,
                "{CANONICAL_ORIGIN}/api/download/models/{id}?fileId={file}"
            ),
            Self::User { username } => write!(f, "{CANONICAL_ORIGIN}/user/{username}"),
        }
    }
}

/// `input` with the value of every `token=` query parameter replaced: a pasted download link
/// may carry the user's API key, which must not reach an error message or a log.
fn redact_token(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = find_token_param(rest) {
        let value_start = at + "token=".len();
        out.push_str(&rest[..value_start]);
        out.push_str("<redacted>");
        let value_len = rest[value_start..]
            .find(['&', '#', ' '])
            .unwrap_or(rest.len() - value_start);
        rest = &rest[value_start + value_len..];
    }
    out.push_str(rest);
    out
}

/// Where a `token=` parameter starts (after `?` or `&`, any case).
fn find_token_param(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    ["?token=", "&token="]
        .iter()
        .filter_map(|p| lower.find(p).map(|i| i + 1))
        .min()
}

/// Parse a --from-file list: one target per line, blank lines and `#` comments (whole-line and trailing
/// after whitespace) ignored; errors carry the 1-based line number.
///
/// A `#` glued to the text is kept, so a URL fragment (`/models/4201#details`) is not a comment.
pub fn parse_target_list(text: &str) -> Result<Vec<Target>, TargetError> {
    // Editors on Windows save UTF-8 with a byte-order mark, invisible in the file.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut targets = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let entry = strip_comment(line).trim();
        if entry.is_empty() {
            continue;
        }
        let target = entry.parse().map_err(|reason| TargetError::Line {
            line: index + 1,
            reason: Box::new(reason),
        })?;
        targets.push(target);
    }
    Ok(targets)
}

/// The line up to a `#` that starts it or follows whitespace.
fn strip_comment(line: &str) -> &str {
    let mut previous_is_space = true;
    for (index, c) in line.char_indices() {
        if c == '#' && previous_is_space {
            return &line[..index];
        }
        previous_is_space = c.is_whitespace();
    }
    line
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// A Civitai id: digits only (no sign, no spaces), 1..=[`MAX_CIVITAI_ID`].
fn parse_id(input: &str, id: &str) -> Result<u64, TargetError> {
    let invalid = || TargetError::InvalidId {
        input: input.to_owned(),
        id: id.to_owned(),
    };
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    id.parse::<u64>()
        .ok()
        .filter(|value| (1..=MAX_CIVITAI_ID).contains(value))
        .ok_or_else(invalid)
}

fn parse_optional_id(input: &str, id: Option<&str>) -> Result<Option<u64>, TargetError> {
    id.map(|id| parse_id(input, id)).transpose()
}

/// `urn:air:{ecosystem}:{type}:{source}:{id}[@{version}][+{file}][.{format}]`, prefix already removed.
///
/// `id@version` stays a [`Target::Model`] narrowed to that version, like `?modelVersionId=`; a
/// `+file` can only select within a version, so it makes a [`Target::Version`].
fn parse_air(input: &str, air: &str) -> Result<Target, TargetError> {
    let malformed = || TargetError::MalformedAir {
        input: input.to_owned(),
    };
    let mut segments = air.splitn(4, ':');
    let (Some(ecosystem), Some(kind), Some(source), Some(resource)) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(malformed());
    };
    if ecosystem.is_empty() || kind.is_empty() {
        return Err(malformed());
    }
    if !source.eq_ignore_ascii_case("civitai") {
        return Err(TargetError::ForeignAir {
            input: input.to_owned(),
            source_name: source.to_owned(),
        });
    }
    let without_format = resource.split_once('.').map_or(resource, |(ids, _)| ids);
    let (ids, file) = split_optional(without_format, '+');
    let (model, version) = split_optional(ids, '@');
    let all_digits = |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    if ![Some(model), version, file]
        .into_iter()
        .flatten()
        .all(all_digits)
    {
        return Err(malformed());
    }
    let model = parse_id(input, model)?;
    let version = parse_optional_id(input, version)?;
    let file = parse_optional_id(input, file)?;
    match (version, file) {
        (None, None) => Ok(Target::Model {
            id: model,
            version: None,
        }),
        (Some(_), None) => Ok(Target::Model { id: model, version }),
        (Some(id), Some(_)) => Ok(Target::Version { id, file }),
        (None, Some(_)) => Err(malformed()),
    }
}

fn split_optional(text: &str, separator: char) -> (&str, Option<&str>) {
    match text.split_once(separator) {
        Some((head, tail)) => (head, Some(tail)),
        None => (text, None),
    }
}

/// The text as an http(s) URL on a Civitai host; a missing scheme (`civitai.com/models/4201`, as
/// copied from some address bars) is assumed to be https.
fn civitai_url(text: &str) -> Option<Url> {
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    let url = Url::parse(&with_scheme).ok()?;
    let is_civitai = url
        .host_str()
        .is_some_and(|host| CIVITAI_HOSTS.contains(&host));
    (matches!(url.scheme(), "http" | "https") && is_civitai).then_some(url)
}

/// Map a Civitai URL's path (and query) to a target.
fn parse_url(input: &str, url: &Url) -> Result<Target, TargetError> {
    let segments: Vec<&str> = url
        .path_segments()
        .map(|segments| segments.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let query = |key: &str| {
        url.query_pairs()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.into_owned())
    };
    match segments.as_slice() {
        ["models", id, ..] => Ok(Target::Model {
            id: parse_id(input, id)?,
            version: parse_optional_id(input, query("modelVersionId").as_deref())?,
        }),
        ["api", "v1", "models", id] => Ok(Target::Model {
            id: parse_id(input, id)?,
            version: None,
        }),
        ["api", "download", "models", id] => {
            let file = parse_optional_id(input, query("fileId").as_deref())?;
            // A per-file link selects by type/format/size/fp; taken as a plain version link it
            // would silently fetch the primary file instead of the one the user copied.
            let selector = ["type", "format", "size", "fp", "quantType"]
                .into_iter()
                .find(|key| query(key).is_some());
            if let (None, Some(selector)) = (file, selector) {
                return Err(TargetError::FileSelector {
                    input: input.to_owned(),
                    version: parse_id(input, id)?,
                    selector: selector.to_owned(),
                });
            }
            Ok(Target::Version {
                id: parse_id(input, id)?,
                file,
            })
        }
        ["api", "v1", "model-versions", id] | ["model-versions", id, ..] => Ok(Target::Version {
            id: parse_id(input, id)?,
            file: None,
        }),
        ["user", username] | ["user", username, "models"] => Ok(Target::User {
            username: parse_username(input, username)?,
        }),
        _ => Err(TargetError::UnsupportedPage {
            input: input.to_owned(),
        }),
    }
}

/// Civitai user names are ASCII words; refusing anything else keeps percent-escapes and path
/// tricks out of the API query and out of folder names built from it.
fn parse_username(input: &str, username: &str) -> Result<String, TargetError> {
    let valid = username
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && username.bytes().any(|b| b.is_ascii_alphanumeric());
    if valid {
        Ok(username.to_owned())
    } else {
        Err(TargetError::InvalidUsername {
            input: input.to_owned(),
            username: username.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: u64, version: Option<u64>) -> Target {
        Target::Model { id, version }
    }

    fn version(id: u64, file: Option<u64>) -> Target {
        Target::Version { id, file }
    }

    fn user(username: &str) -> Target {
        Target::User {
            username: username.to_owned(),
        }
    }

    #[test]
    fn accepted_forms() {
        let cases = [
            ("4201", model(4201, None)),
            (" 4201\t", model(4201, None)),
            ("2147483647", model(2_147_483_647, None)),
            ("https://civitai.com/models/4201", model(4201, None)),
            ("http://civitai.com/models/4201", model(4201, None)),
            ("civitai.com/models/4201", model(4201, None)),
            ("https://www.civitai.com/models/4201/", model(4201, None)),
            (
                "https://civitai.red/models/4201/some-slug",
                model(4201, None),
            ),
            (
                "https://civitai.green/models/4201#details",
                model(4201, None),
            ),
            ("https://CIVITAI.COM/models/4201", model(4201, None)),
            (
                "https://civitai.com/models/4201/slug?modelVersionId=130072",
                model(4201, Some(130_072)),
            ),
            (
                "https://civitai.com/models/4201?other=1&modelVersionId=130072",
                model(4201, Some(130_072)),
            ),
            ("https://civitai.com/api/v1/models/4201", model(4201, None)),
            (
                "https://civitai.com/api/download/models/130072",
                version(130_072, None),
            ),
            (
                "https://civitai.com/api/download/models/130072?type=Model&fileId=98765",
                version(130_072, Some(98_765)),
            ),
            (
                "https://civitai.com/api/v1/model-versions/130072",
                version(130_072, None),
            ),
            (
                "https://civitai.com/model-versions/130072",
                version(130_072, None),
            ),
            (
                "https://civitai.com/user/some_creator",
                user("some_creator"),
            ),
            (
                "https://civitai.com/user/Some-Creator.x/models",
                user("Some-Creator.x"),
            ),
            ("urn:air:sdxl:lora:civitai:328553", model(328_553, None)),
            (
                "urn:air:sdxl:lora:civitai:328553@368189",
                model(328_553, Some(368_189)),
            ),
            (
                "urn:air:sdxl:lora:civitai:328553@368189+12345",
                version(368_189, Some(12_345)),
            ),
            (
                "urn:air:flux1:checkpoint:civitai:1117241@1255556.safetensors",
                model(1_117_241, Some(1_255_556)),
            ),
            (
                "URN:AIR:sdxl:lora:Civitai:328553@368189+12345.safetensors",
                version(368_189, Some(12_345)),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<Target>(), Ok(expected), "input {input:?}");
        }
    }

    #[test]
    fn rejected_inputs() {
        let unrecognised = |input: &str| TargetError::Unrecognised {
            input: input.to_owned(),
        };
        let unsupported = |input: &str| TargetError::UnsupportedPage {
            input: input.to_owned(),
        };
        let invalid_id = |input: &str, id: &str| TargetError::InvalidId {
            input: input.to_owned(),
            id: id.to_owned(),
        };
        let malformed = |input: &str| TargetError::MalformedAir {
            input: input.to_owned(),
        };
        let per_file =
            "https://civitai.com/api/download/models/130072?type=Model&format=SafeTensor";
        let cases = [
            (
                per_file,
                TargetError::FileSelector {
                    input: per_file.to_owned(),
                    version: 130072,
                    selector: "type".to_owned(),
                },
            ),
            ("foo", unrecognised("foo")),
            ("", unrecognised("")),
            ("-5", unrecognised("-5")),
            ("+5", unrecognised("+5")),
            ("42.5", unrecognised("42.5")),
            ("0", invalid_id("0", "0")),
            ("2147483648", invalid_id("2147483648", "2147483648")),
            (
                "99999999999999999999999",
                invalid_id("99999999999999999999999", "99999999999999999999999"),
            ),
            (
                "https://example.com/models/4201",
                unrecognised("https://example.com/models/4201"),
            ),
            (
                "https://civitai.com.evil.io/models/1",
                unrecognised("https://civitai.com.evil.io/models/1"),
            ),
            (
                "ftp://civitai.com/models/4201",
                unrecognised("ftp://civitai.com/models/4201"),
            ),
            ("https://civitai.com/", unsupported("https://civitai.com/")),
            (
                "https://civitai.com/images/123",
                unsupported("https://civitai.com/images/123"),
            ),
            (
                "https://civitai.com/user/bob/images",
                unsupported("https://civitai.com/user/bob/images"),
            ),
            (
                "https://civitai.com/models/abc",
                invalid_id("https://civitai.com/models/abc", "abc"),
            ),
            (
                "https://civitai.com/models/0",
                invalid_id("https://civitai.com/models/0", "0"),
            ),
            (
                "https://civitai.com/models/4201?modelVersionId=x",
                invalid_id("https://civitai.com/models/4201?modelVersionId=x", "x"),
            ),
            (
                "https://civitai.com/api/download/models/1?fileId=0",
                invalid_id("https://civitai.com/api/download/models/1?fileId=0", "0"),
            ),
            (
                "https://civitai.com/user/a%2F..",
                TargetError::InvalidUsername {
                    input: "https://civitai.com/user/a%2F..".to_owned(),
                    username: "a%2F..".to_owned(),
                },
            ),
            (
                "urn:air:sdxl:lora:civitai",
                malformed("urn:air:sdxl:lora:civitai"),
            ),
            (
                "urn:air:sdxl:lora:civitai:",
                malformed("urn:air:sdxl:lora:civitai:"),
            ),
            (
                "urn:air:sdxl:lora:civitai:abc",
                malformed("urn:air:sdxl:lora:civitai:abc"),
            ),
            (
                "urn:air::lora:civitai:1",
                malformed("urn:air::lora:civitai:1"),
            ),
            (
                "urn:air:sdxl:lora:civitai:1@",
                malformed("urn:air:sdxl:lora:civitai:1@"),
            ),
            (
                "urn:air:sdxl:lora:civitai:1+5",
                malformed("urn:air:sdxl:lora:civitai:1+5"),
            ),
            (
                "urn:air:sdxl:lora:civitai:0@5",
                invalid_id("urn:air:sdxl:lora:civitai:0@5", "0"),
            ),
            (
                "urn:air:sdxl:lora:huggingface:1@2",
                TargetError::ForeignAir {
                    input: "urn:air:sdxl:lora:huggingface:1@2".to_owned(),
                    source_name: "huggingface".to_owned(),
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<Target>(), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn error_message_names_the_input_and_the_accepted_forms() {
        let error = "foo".parse::<Target>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "'foo' is not a model id, Civitai URL or AIR (examples: 4201, \
             https://civitai.com/models/4201, urn:air:sdxl:lora:civitai:328553@368189)"
        );
        let error = "0".parse::<Target>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "'0': '0' is not a valid Civitai id (a whole number from 1 to 2147483647)"
        );
    }

    #[test]
    fn display_round_trips_through_from_str() {
        let targets = [
            model(4201, None),
            model(4201, Some(130_072)),
            version(130_072, None),
            version(130_072, Some(5)),
            user("some_creator"),
        ];
        for target in targets {
            assert_eq!(target.to_string().parse::<Target>(), Ok(target.clone()));
        }
    }

    #[test]
    fn target_list_skips_blanks_and_comments() {
        let list = "# my models\n\
                    4201\n\
                    \n\
                    https://civitai.com/models/7#top   # trailing comment\n\
                    \t   \n\
                    urn:air:sdxl:lora:civitai:328553@368189+12345\t# file\n\
                    https://civitai.com/user/bob #\n";
        assert_eq!(
            parse_target_list(list),
            Ok(vec![
                model(4201, None),
                model(7, None),
                version(368_189, Some(12_345)),
                user("bob"),
            ])
        );
    }

    #[test]
    fn target_list_errors_carry_the_line_number() {
        let error = parse_target_list("4201\n# comment\nnot-a-target\n5\n").unwrap_err();
        assert_eq!(
            error,
            TargetError::Line {
                line: 3,
                reason: Box::new(TargetError::Unrecognised {
                    input: "not-a-target".to_owned()
                }),
            }
        );
        assert!(
            error
                .to_string()
                .starts_with("line 3: 'not-a-target' is not")
        );
    }

    #[test]
    fn a_byte_order_mark_before_the_first_target_is_ignored() {
        assert_eq!(
            parse_target_list("\u{feff}4201\r\n").unwrap(),
            vec![Target::Model {
                id: 4201,
                version: None
            }]
        );
    }

    #[test]
    fn empty_target_list_is_empty() {
        assert_eq!(parse_target_list("\n# nothing\n   \n"), Ok(Vec::new()));
    }

    #[test]
    fn a_key_in_a_pasted_url_is_never_echoed() {
        let error = "https://civitai.com/api/download/models/x?token=SECRET&type=Model"
            .parse::<Target>()
            .unwrap_err();
        assert!(!error.to_string().contains("SECRET"), "{error}");
        assert!(error.to_string().contains("token=<redacted>"), "{error}");
        assert_eq!(
            "https://civitai.com/api/download/models/7?Token=SECRET"
                .parse::<Target>()
                .unwrap(),
            Target::Version { id: 7, file: None }
        );
    }
}

#[cfg(test)]
mod props;
