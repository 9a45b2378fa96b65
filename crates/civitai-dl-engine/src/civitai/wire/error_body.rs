//! Error bodies, flattened to one readable line whatever their JSON shape: a plain `error`
//! string, a tRPC `issues` list, a serialised ZodError, a flattened Zod object
//! (`docs/civitai-api.md#error-bodies`).

use serde::Deserialize;
use serde_json::Value;

use super::lenient;

/// A JSON error body from the API or the download route, flattened to text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(from = "ErrorBodyWire")]
pub struct ApiErrorBody {
    /// The `error` field (or tRPC `issues`) as one readable line, whatever its JSON shape.
    pub error: Option<String>,
    /// The `message` field, on one line.
    pub message: Option<String>,
    /// End of an early-access window (403 "Early Access").
    pub deadline: Option<String>,
}

/// The wire shape of [`ApiErrorBody`].
#[derive(Deserialize)]
struct ErrorBodyWire {
    #[serde(default)]
    error: Value,
    #[serde(default)]
    issues: Value,
    #[serde(default)]
    message: Value,
    #[serde(default, deserialize_with = "lenient::text")]
    deadline: Option<String>,
}

impl From<ErrorBodyWire> for ApiErrorBody {
    fn from(wire: ErrorBodyWire) -> Self {
        Self {
            error: describe_error(&wire.error).or_else(|| describe_error(&wire.issues)),
            message: describe_error(&wire.message),
            deadline: wire.deadline,
        }
    }
}

/// Said when a body carries neither `message` nor `error`.
pub(crate) const NO_ERROR_DETAIL: &str = "no error details given";

impl ApiErrorBody {
    /// The best human sentence: `message` when present (it explains), else `error`.
    pub fn summary(&self) -> String {
        self.message
            .as_deref()
            .or(self.error.as_deref())
            .unwrap_or(NO_ERROR_DETAIL)
            .to_owned()
    }
}

/// Parses an error response body; `None` when it is not a JSON object with an `error`,
/// `message` or `issues` to report (HTML pages, plain text, `{}`).
pub fn parse_error_body(body: &str) -> Option<ApiErrorBody> {
    // Checked first because serde would also read a JSON array as the struct's fields in order.
    let fields: serde_json::Map<String, Value> = serde_json::from_str(body).ok()?;
    ApiErrorBody::deserialize(Value::Object(fields))
        .ok()
        .filter(|parsed| parsed.error.is_some() || parsed.message.is_some())
}

/// Flattens any JSON shape an `error` has taken (string, ZodError object whose `message` is a
/// JSON array, flattened `{formErrors, fieldErrors}`, array of issues) into one line.
fn describe_error(value: &Value) -> Option<String> {
    let text = match value {
        Value::Null => return None,
        Value::String(text) => describe_text(text)?,
        Value::Array(issues) => join_non_empty(issues.iter().filter_map(describe_issue), "; "),
        Value::Object(fields) => describe_object(fields)?,
        other => other.to_string(),
    };
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!line.is_empty()).then_some(line)
}

/// A ZodError's `message` is itself serialised JSON; decode it so the issues read as text.
fn describe_text(text: &str) -> Option<String> {
    let trimmed = text.trim();
    if trimmed.starts_with(['[', '{'])
        && let Ok(inner) = serde_json::from_str::<Value>(trimmed)
    {
        return describe_error(&inner);
    }
    Some(text.to_owned())
}

fn describe_object(fields: &serde_json::Map<String, Value>) -> Option<String> {
    if fields.contains_key("formErrors") || fields.contains_key("fieldErrors") {
        return Some(describe_flattened_zod(fields));
    }
    if let Some(message) = fields.get("message") {
        return describe_error(message);
    }
    if let Some(issues) = fields.get("issues") {
        return describe_error(issues);
    }
    (!fields.is_empty()).then(|| Value::Object(fields.clone()).to_string())
}

/// `{"formErrors": [..], "fieldErrors": {"limit": [..]}}` → `"..; limit: .."`.
fn describe_flattened_zod(fields: &serde_json::Map<String, Value>) -> String {
    let form_errors = fields
        .get("formErrors")
        .map(lenient::texts)
        .unwrap_or_default();
    let field_errors = fields
        .get("fieldErrors")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(field, messages)| format!("{field}: {}", lenient::texts(messages).join(", ")));
    join_non_empty(form_errors.into_iter().chain(field_errors), "; ")
}

/// A zod issue `{"path": ["limit"], "message": ".."}` → `"limit: .."`.
fn describe_issue(issue: &Value) -> Option<String> {
    let Some(message) = issue.get("message") else {
        return describe_error(issue);
    };
    let message = describe_error(message)?;
    let path = issue.get("path").map(lenient::texts).unwrap_or_default();
    Some(if path.is_empty() {
        message
    } else {
        format!("{}: {message}", path.join("."))
    })
}

fn join_non_empty(parts: impl Iterator<Item = String>, separator: &str) -> String {
    parts
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(separator)
}
