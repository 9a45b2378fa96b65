//! What planning hands the run for one model file: the download, the facts `info` shows, the
//! sidecars and the preview images to go beside it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::civitai::wire::ModelVersion;
use crate::plan::PlannedFile;
use crate::plan::naming::{sanitize_file_name, sidecar_path};
use crate::sidecar::SidecarPlan;
use crate::state::CatalogItem;

/// One model file to fetch, with what goes beside it.
#[derive(Clone, Debug)]
pub struct Job {
    /// Stable key in the state file: `"{version_id}:{file_id}"`.
    pub key: String,
    /// The model, as the state file records it.
    pub model: CatalogItem,
    /// The version, as the state file records it.
    pub version: CatalogItem,
    /// File id and the name Civitai gives it.
    pub file_id: u64,
    /// The API's name for the file.
    pub file_name: String,
    /// The download itself.
    pub file: PlannedFile,
    /// Facts shown by `info` and `--dry-run`.
    pub facts: FileFacts,
    /// The sidecars to write beside the file and what goes into them; `None` for none.
    pub sidecars: Option<SidecarPlan>,
    /// The preview images to fetch beside the file.
    pub previews: PreviewPlan,
    /// For a pinned version's target: the target, the plan's settings and how many files it
    /// gave. Recorded with the file, so a rerun can trust finished files instead of asking
    /// Civitai again (`run::settled`).
    pub pin: Option<String>,
}

/// Preview images for one model file: how many are wanted, and the version's images to choose
/// them from (images before videos), with the layout that decides which formats its app shows.
#[derive(Clone, Debug, Default)]
pub struct PreviewPlan {
    /// How many to save (`--images N`).
    pub wanted: usize,
    /// Every image of the version, in the order they are tried.
    pub candidates: Vec<PreviewImage>,
    /// SwarmUI's layout accepts only PNG and JPEG previews; the others take the next candidate.
    pub swarm: bool,
}

/// One image of a version, a preview candidate.
#[derive(Clone, Debug)]
pub struct PreviewImage {
    /// Where it is.
    pub url: reqwest::Url,
    /// The extension its URL suggests (the saved file's comes from its bytes).
    pub url_extension: String,
    /// Civitai's content level of the image (0 when unknown).
    pub nsfw_level: u64,
}

impl PreviewPlan {
    /// The candidates the first `wanted` slots start from: what `info` shows.
    pub fn first(&self) -> &[PreviewImage] {
        &self.candidates[..self.wanted.min(self.candidates.len())]
    }
}

/// What `info` shows about a file.
#[derive(Clone, Debug, Serialize)]
pub struct FileFacts {
    /// Model id.
    pub model_id: u64,
    /// Model name.
    pub model_name: String,
    /// Model type.
    pub model_type: String,
    /// Version id.
    pub version_id: u64,
    /// Version name.
    pub version_name: String,
    /// Base model.
    pub base_model: Option<String>,
    /// File id.
    pub file_id: u64,
    /// File name as Civitai gives it.
    pub file_name: String,
    /// File type.
    pub file_type: String,
    /// Format, precision, size.
    pub format: Option<String>,
    /// Precision.
    pub fp: Option<String>,
    /// Pruned or full.
    pub size_kind: Option<String>,
    /// GGUF quantisation.
    pub quant_type: Option<String>,
    /// Size from the API (a hint).
    pub size_bytes: Option<u64>,
    /// Published SHA-256.
    pub sha256: Option<String>,
    /// Primary file of its version.
    pub primary: bool,
    /// Early access.
    pub early_access: bool,
    /// Where it would be saved.
    #[serde(flatten, serialize_with = "crate::observe::json_path::path_and_bytes")]
    pub path: PathBuf,
    /// Where its preview images would be saved (`--images N`).
    #[serde(serialize_with = "crate::observe::json_path::lossy_list")]
    pub previews: Vec<PathBuf>,
}

/// A version's images as preview candidates: images first, then videos (an image shows in more
/// apps), each group in Civitai's order. `scan --write-sidecars preview` takes the same first one.
pub fn preview_candidates(version: &ModelVersion) -> Vec<PreviewImage> {
    let mut candidates: Vec<(bool, PreviewImage)> = version
        .images
        .iter()
        .filter_map(|image| {
            let video = image
                .image_type
                .as_deref()
                .is_some_and(|t| !t.eq_ignore_ascii_case("image"));
            let candidate = PreviewImage {
                url: reqwest::Url::parse(&image.url).ok()?,
                url_extension: image.extension(),
                nsfw_level: image.nsfw_level.map_or(0, |level| u64::from(level.0)),
            };
            Some((video, candidate))
        })
        .collect();
    candidates.sort_by_key(|(video, _)| *video);
    candidates.into_iter().map(|(_, image)| image).collect()
}

/// The path of the `n`th preview (0-based) of a model file: `<stem>.preview.<ext>`, then
/// `<stem>.preview.2.<ext>`, …
pub fn preview_path(model_file: &Path, n: usize, ext: &str) -> PathBuf {
    let ext = sanitize_file_name(ext);
    if n == 0 {
        sidecar_path(model_file, &format!("preview.{ext}"))
    } else {
        sidecar_path(model_file, &format!("preview.{}.{ext}", n + 1))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn preview_paths() {
        let model = Path::new("/m/foo.safetensors");
        assert_eq!(
            preview_path(model, 0, "jpeg"),
            PathBuf::from("/m/foo.preview.jpeg")
        );
        assert_eq!(
            preview_path(model, 1, "png"),
            PathBuf::from("/m/foo.preview.2.png")
        );
    }

    #[test]
    fn preview_candidates_put_images_before_videos_in_civitai_order() {
        let version: ModelVersion = serde_json::from_value(json!({
            "id": 1,
            "images": [
                {"url": "https://i.example/a.mp4", "type": "video", "nsfwLevel": 1},
                {"url": "https://i.example/b.jpeg", "type": "image", "nsfwLevel": 4},
                {"url": "not a url", "type": "image"},
                {"url": "https://i.example/c.png", "nsfwLevel": 2},
            ]
        }))
        .unwrap();
        let candidates = preview_candidates(&version);
        let urls: Vec<&str> = candidates.iter().map(|c| c.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://i.example/b.jpeg",
                "https://i.example/c.png",
                "https://i.example/a.mp4"
            ]
        );
        assert_eq!(candidates[0].nsfw_level, 4);
        assert_eq!(candidates[2].url_extension, "mp4");
    }
}
