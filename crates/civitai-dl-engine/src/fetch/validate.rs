//! Is this answer the file? Checked before a byte touches disk: status and `Content-Range`, content
//! type, and length against Civitai's size; then the first bytes, since error pages arrive under
//! any content type (`docs/civitai-api.md#storage-error-answers`). Both transfer paths (one
//! stream, and the segmented probe) use the same checks.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};

use crate::fetch::{DownloadError, FileKind, PlannedFile};
use crate::http::{header, snippet};

/// The API's `sizeKB` is a rounded hint: a response within this fraction (or [`SIZE_SLACK_BYTES`])
/// of it is consistent; anything further off is not the file we asked for.
const SIZE_SLACK_FRACTION: f64 = 0.01;
/// See [`SIZE_SLACK_FRACTION`].
const SIZE_SLACK_BYTES: u64 = 64 * 1024;

/// The total size a one-stream answer announces, after checking its status, range, type and
/// length; `offset` is where the request asked to start.
pub(crate) fn response_total(
    file: &PlannedFile,
    response: &reqwest::Response,
    offset: u64,
) -> Result<Option<u64>, DownloadError> {
    check_type(file.kind, response)?;
    let length = header(response, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let total = if response.status() == StatusCode::PARTIAL_CONTENT {
        let got = header(response, CONTENT_RANGE).unwrap_or_default();
        match parse_content_range(&got) {
            Some((start, end, total))
                if start == offset
                    && total.is_none_or(|t| end + 1 == t)
                    && length.is_none_or(|l| l == end + 1 - start) =>
            {
                total.or(Some(end + 1))
            }
            _ => return Err(DownloadError::BadRange { got, offset }),
        }
    } else {
        length
    };
    if let Some(total) = total {
        check_size(file, total)?;
    }
    Ok(total)
}

/// Refuse a content type the file cannot have.
pub(crate) fn check_type(
    kind: FileKind,
    response: &reqwest::Response,
) -> Result<(), DownloadError> {
    let content_type = header(response, CONTENT_TYPE).unwrap_or_default();
    if acceptable_type(kind, &content_type) {
        Ok(())
    } else {
        Err(DownloadError::NotAFile {
            content_type,
            snippet: String::new(),
        })
    }
}

/// Judge a server's total size against Civitai's. Civitai's `sizeKB` comes from the uploading
/// client and can be wrong: with a published hash the bytes are judged by it (a warning here);
/// without one, the size is all there is.
pub(crate) fn check_size(file: &PlannedFile, got: u64) -> Result<(), DownloadError> {
    let Some(expected) = file.expected_size.filter(|e| !size_consistent(*e, got)) else {
        return Ok(());
    };
    if file.expected_sha256.is_none() {
        return Err(DownloadError::SizeMismatch { expected, got });
    }
    tracing::warn!(
        "{}: the server sends {got} bytes where Civitai lists about {expected}; the SHA-256 \
         check will decide",
        file.label
    );
    Ok(())
}

/// Parse `bytes START-END/TOTAL` (TOTAL may be `*`).
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    // `end < u64::MAX`: callers compute `end + 1`, which a `bytes 0-18446744073709551615/*`
    // from a hostile host would overflow (with a total, `end < total` already ensures it).
    (start <= end && end < u64::MAX && total.is_none_or(|t| end < t)).then_some((start, end, total))
}

/// Whether a server's length agrees with the API's rounded `sizeKB` hint.
pub fn size_consistent(expected: u64, got: u64) -> bool {
    let slack = ((expected as f64 * SIZE_SLACK_FRACTION) as u64).max(SIZE_SLACK_BYTES);
    expected.abs_diff(got) <= slack
}

/// Whether a `Content-Type` can be the file: model files are never web pages or error
/// documents; previews must be images or videos.
pub fn acceptable_type(kind: FileKind, content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    let markup = ["text/html", "json", "xml", "text/plain"]
        .iter()
        .any(|m| ct.contains(m));
    match kind {
        FileKind::Model => !markup,
        FileKind::Document => !ct.contains("text/html"),
        FileKind::Preview => {
            ct.is_empty()
                || ct.starts_with("image/")
                || ct.starts_with("video/")
                || ct.starts_with("application/octet-stream")
        }
    }
}

/// Refuse a body that starts like a web page or an error document, whatever its `Content-Type`
/// claimed. Model files never start like that (safetensors begin with a binary length, pickles
/// and zips with magic bytes); an error body often does.
pub(crate) fn reject_markup(
    kind: FileKind,
    content_type: &str,
    chunk: &[u8],
) -> Result<(), DownloadError> {
    let head = String::from_utf8_lossy(&chunk[..chunk.len().min(512)]).to_ascii_lowercase();
    if looks_like_error_document(kind, &head) {
        return Err(DownloadError::NotAFile {
            content_type: content_type.to_string(),
            snippet: snippet(&head),
        });
    }
    Ok(())
}

/// Whether the first bytes of a body (lowercased) look like HTML, an XML error or a JSON error.
pub fn looks_like_error_document(kind: FileKind, head: &str) -> bool {
    let head = head.trim_start();
    let html = head.starts_with("<!doctype html") || head.starts_with("<html");
    let xml_error = head.starts_with("<?xml") && head.contains("<error");
    let json_error =
        head.starts_with('{') && (head.contains("\"error\"") || head.contains("\"message\""));
    html || (kind == FileKind::Model && (xml_error || json_error))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::fetch::Source;

    #[test]
    fn content_range_table() {
        let cases = [
            ("bytes 0-99/100", Some((0, 99, Some(100)))),
            ("bytes 100-199/*", Some((100, 199, None))),
            ("bytes  5-5/6", Some((5, 5, Some(6)))),
            ("bytes 10-5/100", None),
            ("bytes 0-100/100", None),
            ("bytes */100", None),
            ("bytes 0-18446744073709551615/*", None),
            ("items 0-1/2", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_content_range(input), want, "{input}");
        }
    }

    #[test]
    fn size_hint_tolerance() {
        assert!(size_consistent(6_938_040_678, 6_938_040_683));
        assert!(size_consistent(1_000, 1_200));
        assert!(!size_consistent(100_000_000, 120));
        assert!(!size_consistent(10_000_000_000, 9_000_000_000));
    }

    #[test]
    fn content_types() {
        use FileKind::*;
        assert!(acceptable_type(Model, "application/octet-stream"));
        assert!(acceptable_type(Model, ""));
        assert!(!acceptable_type(Model, "text/html; charset=utf-8"));
        assert!(!acceptable_type(Model, "application/json"));
        assert!(!acceptable_type(Model, "application/xml"));
        assert!(acceptable_type(Preview, "image/jpeg"));
        assert!(acceptable_type(Preview, "video/mp4"));
        assert!(!acceptable_type(Preview, "text/html"));
        assert!(acceptable_type(Document, "application/json"));
        assert!(acceptable_type(Document, "text/plain"));
        assert!(!acceptable_type(Document, "text/html"));
        assert_eq!(FileKind::of_file_name("v1-inference.yaml"), Document);
        assert_eq!(FileKind::of_file_name("config.JSON"), Document);
        assert_eq!(FileKind::of_file_name("x.safetensors"), Model);
        assert_eq!(FileKind::of_file_name("noext"), Model);
    }

    fn planned(size: Option<u64>, sha256: Option<&str>) -> PlannedFile {
        PlannedFile {
            label: "model 1 file a".into(),
            source: Source::Civitai {
                version_id: 1,
                file_id: 2,
            },
            dest: PathBuf::from("a"),
            expected_size: size,
            expected_sha256: sha256.map(str::to_string),
            known_sha256: None,
            kind: FileKind::Model,
            replace_existing: false,
        }
    }

    #[test]
    fn a_size_far_from_civitais_fails_only_when_no_hash_can_judge() {
        let cases = [
            (planned(Some(1_000_000), None), 1_000_000, true),
            (planned(Some(1_000_000), None), 1_005_000, true),
            (planned(Some(1_000_000), None), 2_000_000, false),
            (planned(Some(1_000_000), Some("ab")), 2_000_000, true),
            (planned(None, None), 7, true),
        ];
        for (file, got, ok) in cases {
            let result = check_size(&file, got);
            assert_eq!(result.is_ok(), ok, "{:?} {got}", file.expected_size);
            if !ok {
                assert!(matches!(result, Err(DownloadError::SizeMismatch { .. })));
            }
        }
    }
}

#[cfg(test)]
mod props;
