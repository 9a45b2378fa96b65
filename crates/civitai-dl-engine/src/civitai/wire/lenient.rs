//! `deserialize_with` helpers that turn a wrong-typed or `null` value into "absent" instead of
//! an error. They buffer through [`Value`], which is cheap next to a network round trip.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// `None` for `null`, a missing key or a value of another type.
pub(crate) fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(T::deserialize(Value::deserialize(deserializer)?).ok())
}

/// Like [`option`], falling back to the type's default.
pub(crate) fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    Ok(option(deserializer)?.unwrap_or_default())
}

/// A string, or a number kept as its text (usernames, cursors).
pub(crate) fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(text_of(&Value::deserialize(deserializer)?))
}

/// A list of strings; a lone string counts as a one-element list, other values are skipped.
pub(crate) fn text_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(texts(&Value::deserialize(deserializer)?))
}

/// See [`super::normalise_commercial_use`].
pub(crate) fn commercial_use<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(super::normalise_commercial_use(&Value::deserialize(
        deserializer,
    )?))
}

/// A list whose `null` means empty, but whose items must decode: a file or version that
/// cannot be read is an error worth seeing, not something to skip silently.
pub(crate) fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A list that drops the items it cannot decode; for optional extras such as previews.
pub(crate) fn lossy_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let Value::Array(items) = Value::deserialize(deserializer)? else {
        return Ok(Vec::new());
    };
    Ok(items
        .into_iter()
        .filter_map(|item| T::deserialize(item).ok())
        .collect())
}

/// The text of a non-empty string or of a number.
pub(crate) fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The texts of an array's string and number items, or of a lone scalar.
pub(crate) fn texts(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().filter_map(text_of).collect(),
        scalar => text_of(scalar).into_iter().collect(),
    }
}
