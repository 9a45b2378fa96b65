//! Paths in `--json`. A path is bytes on Unix, and serde refuses one that is not UTF-8, which
//! left `--json` printing nothing at all for a folder named in Latin-1. Each path is written as a
//! string (lossy: a byte that is not UTF-8 becomes U+FFFD), and, only when that lost something,
//! also as `path_bytes`, the exact bytes, so a script can still open the file.

use std::path::{Path, PathBuf};

use serde::Serializer;
use serde::ser::{SerializeMap, SerializeSeq};

/// For a `#[serde(flatten, serialize_with = …)]` field: `path`, and `path_bytes` when the path
/// is not UTF-8.
pub fn path_and_bytes<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(None)?;
    map.serialize_entry("path", &path.to_string_lossy())?;
    if let Some(bytes) = exact_bytes(path) {
        map.serialize_entry("path_bytes", &bytes)?;
    }
    map.end()
}

/// A list of paths as strings, lossy where a path is not UTF-8.
pub fn lossy_list<S: Serializer>(paths: &[PathBuf], serializer: S) -> Result<S::Ok, S::Error> {
    let mut seq = serializer.serialize_seq(Some(paths.len()))?;
    for path in paths {
        seq.serialize_element(&path.to_string_lossy())?;
    }
    seq.end()
}

/// The bytes of a path that is not UTF-8 (Unix; elsewhere paths that are not Unicode are not
/// bytes, and only the lossy string is given).
fn exact_bytes(path: &Path) -> Option<Vec<u8>> {
    if path.to_str().is_some() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Some(path.as_os_str().as_bytes().to_vec())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Entry {
        #[serde(flatten, serialize_with = "path_and_bytes")]
        path: PathBuf,
        #[serde(serialize_with = "lossy_list")]
        previews: Vec<PathBuf>,
    }

    #[test]
    fn a_utf8_path_is_a_plain_string() {
        let entry = Entry {
            path: "out/x.safetensors".into(),
            previews: vec!["out/x.preview.png".into()],
        };
        assert_eq!(
            serde_json::to_value(&entry).unwrap(),
            serde_json::json!({"path": "out/x.safetensors", "previews": ["out/x.preview.png"]})
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_path_that_is_not_utf8_keeps_its_bytes_beside_the_lossy_string() {
        use std::os::unix::ffi::OsStrExt;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"caf\xe9/x"));
        let entry = Entry {
            path: path.clone(),
            previews: vec![path],
        };
        assert_eq!(
            serde_json::to_value(&entry).unwrap(),
            serde_json::json!({
                "path": "caf\u{fffd}/x",
                "path_bytes": [99, 97, 102, 233, 47, 120],
                "previews": ["caf\u{fffd}/x"],
            })
        );
    }
}
