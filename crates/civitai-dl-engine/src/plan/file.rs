//! What planning hands the fetcher: one file, where its bytes come from, where they go, and what
//! they must be. Planning decides all of it; fetching only carries it out.

use std::path::PathBuf;

/// Where a file's bytes come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A model file: resolved through the API's download route.
    Civitai {
        /// Model version id.
        version_id: u64,
        /// File id (always sent as `fileId`, which selects the file exactly).
        file_id: u64,
    },
    /// A preview image on Civitai's image CDN: fetched as is.
    Direct(reqwest::Url),
}

/// What kind of content is acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Model weights, archives and other binary files: never HTML, JSON, XML or plain text.
    Model,
    /// A text file a model ships with (a `.yaml` or `.json` config): any type but a web page.
    Document,
    /// A preview: must be an image or video.
    Preview,
}

impl FileKind {
    /// The kind of a Civitai file, from its name: configs and notes are text, the rest binary.
    pub fn of_file_name(name: &str) -> FileKind {
        let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        match extension.as_deref() {
            Some("json" | "yaml" | "yml" | "txt" | "md" | "toml" | "xml" | "csv") => {
                FileKind::Document
            }
            _ => FileKind::Model,
        }
    }
}

/// How a model file is named in messages, the same whether it was planned from Civitai's answer
/// or rebuilt from the state (a trusted rerun).
pub fn model_file_label(
    model_id: u64,
    model_name: &str,
    version_id: u64,
    file_name: &str,
) -> String {
    format!("model {model_id} \"{model_name}\" version {version_id} file {file_name}")
}

/// One file to fetch.
#[derive(Clone, Debug)]
pub struct PlannedFile {
    /// How the file is named in messages: model, version and file name.
    pub label: String,
    /// Where the bytes come from.
    pub source: Source,
    /// Final path (absolute or relative to the working directory).
    pub dest: PathBuf,
    /// The API's size hint, if any.
    pub expected_size: Option<u64>,
    /// The published SHA-256 (uppercase or lowercase hex), if any.
    pub expected_sha256: Option<String>,
    /// The SHA-256 an earlier run computed for this file when Civitai publishes none: without
    /// one of the two, nothing at the path is taken for this file.
    pub known_sha256: Option<String>,
    /// What content is acceptable.
    pub kind: FileKind,
    /// The final path holds a file civitai-dl wrote in an earlier run (the state says so): if it
    /// no longer matches, it is repaired in place instead of being left beside a renamed copy.
    pub replace_existing: bool,
}
