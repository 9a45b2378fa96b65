//! Previews of one model file: the version's images tried in order until `--images N` are saved,
//! each downloaded to a staging name and then named by what its first bytes are
//! (`sidecar::preview`). Naming happens after the download because the URL's extension is not
//! a promise about the bytes, and a candidate the layout's app cannot show (WebP for SwarmUI)
//! gives its place to the next image instead of being saved where nothing will read it.

use std::path::{Path, PathBuf};

use super::{Run, outcome_path};
use crate::fetch::{Connections, DownloadError, FileKind, Outcome, PlannedFile, Source};
use crate::observe::report::{FileResult, FileStatus};
use crate::plan::naming::{Layout, sidecar_path};
use crate::plan::{Job, preview_path};
use crate::run::Mode;
use crate::sidecar::SavedPreview;
use crate::sidecar::preview::{self, MediaType};

impl Run {
    /// Fetch a job's previews, as many at once as `mode` allows, each named by what its bytes
    /// are; a candidate the layout's app cannot show gives its place to the next one. Returns the
    /// first preview on disk.
    pub(super) async fn fetch_previews(
        &self,
        job: &Job,
        model_path: &Path,
        mode: Mode,
    ) -> Option<SavedPreview> {
        let plan = &job.previews;
        let mut saved: Vec<SavedPreview> = Vec::new();
        // Slots an earlier run filled stay; their candidates are taken as used.
        while saved.len() < plan.wanted
            && let Some(path) = preview::existing(model_path, saved.len())
        {
            let nsfw_level = plan.candidates.get(saved.len()).map_or(0, |c| c.nsfw_level);
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            self.report_preview(job, saved.len(), &path, FileStatus::Present, bytes, 0, None);
            saved.push(SavedPreview { path, nsfw_level });
        }
        let mut next = saved.len();
        while saved.len() < plan.wanted && next < plan.candidates.len() && self.may_continue() {
            let batch = (plan.wanted - saved.len()).min(mode.previews.max(1));
            let end = (next + batch).min(plan.candidates.len());
            let fetched: Vec<Option<(PathBuf, u64)>> =
                futures_util::future::join_all((next..end).map(|index| async move {
                    let Ok(_permit) = self.previews.acquire().await else {
                        return None;
                    };
                    self.fetch_candidate(job, model_path, index).await
                }))
                .await;
            for (index, staged) in (next..end).zip(fetched) {
                let Some((staged, transferred)) = staged else {
                    continue;
                };
                let candidate = &plan.candidates[index];
                let slot = saved.len();
                if let Some(path) = self.name_preview(job, model_path, &staged, slot, transferred) {
                    saved.push(SavedPreview {
                        path,
                        nsfw_level: candidate.nsfw_level,
                    });
                }
            }
            next = end;
        }
        if saved.len() < plan.wanted && plan.swarm && !plan.candidates.is_empty() {
            tracing::warn!(
                "{}: {} of {} preview(s) saved: the version has no other PNG or JPEG image, the \
                 only formats SwarmUI shows",
                job.file.label,
                saved.len(),
                plan.wanted
            );
        }
        saved.into_iter().next()
    }

    /// Download candidate `index` to a staging name beside the model file; its path once there
    /// and the bytes this run transferred.
    async fn fetch_candidate(
        &self,
        job: &Job,
        model_path: &Path,
        index: usize,
    ) -> Option<(PathBuf, u64)> {
        let candidate = &job.previews.candidates[index];
        let staged = PlannedFile {
            label: format!("{} preview {}", job.file.label, index + 1),
            source: Source::Direct(candidate.url.clone()),
            dest: staging_path(model_path, index),
            expected_size: None,
            expected_sha256: None,
            known_sha256: None,
            kind: FileKind::Preview,
            replace_existing: true,
        };
        let bar = self
            .reporter
            .on_transfer_start(&format!("preview {}", index + 1));
        match self
            .downloader
            .download_file(&staged, bar.as_ref(), Connections::One)
            .await
        {
            Ok(outcome) => {
                let transferred = match &outcome {
                    Outcome::Downloaded { transferred, .. } => *transferred,
                    Outcome::AlreadyPresent { .. } | Outcome::HashMismatch { .. } => 0,
                };
                Some((outcome_path(&outcome).to_path_buf(), transferred))
            }
            Err(DownloadError::Cancelled) => None,
            Err(error) => {
                tracing::warn!("{}: {error}", staged.label);
                let reason = Some(error.to_string());
                self.report_preview(job, index, &staged.dest, FileStatus::Failed, 0, 0, reason);
                None
            }
        }
    }

    /// Give a fetched preview its name from its first bytes, in `slot`; `None` (and the staged
    /// file removed) when it is no image or video, or one the layout's app cannot show.
    fn name_preview(
        &self,
        job: &Job,
        model_path: &Path,
        staged: &Path,
        slot: usize,
        transferred: u64,
    ) -> Option<PathBuf> {
        let label = &job.file.label;
        let media = preview::read_head(staged).and_then(|head| preview::sniff(&head));
        let refusal = match media {
            None => Some("its bytes are no image or video format civitai-dl knows".to_owned()),
            Some(media) if job.previews.swarm && !media.shown_by(Layout::Swarm) => Some(format!(
                "it is {}, which SwarmUI cannot show; trying the next image",
                media.extension().to_ascii_uppercase()
            )),
            Some(_) => None,
        };
        if let Some(refusal) = refusal {
            tracing::info!("{label}: a preview was skipped: {refusal}");
            let _ = std::fs::remove_file(staged);
            return None;
        }
        let ext = media.map(MediaType::extension).unwrap_or_default();
        let path = preview_path(model_path, slot, ext);
        if let Err(error) = std::fs::rename(staged, &path) {
            tracing::warn!("{label}: preview not saved as {}: {error}", path.display());
            return None;
        }
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        let status = FileStatus::Downloaded;
        self.report_preview(job, slot, &path, status, bytes, transferred, None);
        Some(path)
    }

    /// A preview's line in the run report.
    #[allow(clippy::too_many_arguments)]
    fn report_preview(
        &self,
        job: &Job,
        slot: usize,
        path: &Path,
        status: FileStatus,
        bytes: u64,
        transferred: u64,
        reason: Option<String>,
    ) {
        let label = format!("{} preview {}", job.file.label, slot + 1);
        let entry = FileResult::model_file(
            label,
            path.to_path_buf(),
            status,
            bytes,
            transferred,
            reason,
        );
        self.report().push(FileResult {
            preview: true,
            ..entry
        });
    }
}

/// Where candidate `index` is downloaded before its bytes say what to name it.
fn staging_path(model_path: &Path, index: usize) -> PathBuf {
    sidecar_path(model_path, &format!("preview-candidate-{index}.download"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_preview_is_found_whatever_its_format_and_empty_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.safetensors");
        assert_eq!(preview::existing(&model, 0), None);
        std::fs::write(dir.path().join("m.preview.webp"), b"RIFF").unwrap();
        std::fs::write(dir.path().join("m.preview.2.png"), b"").unwrap();
        assert_eq!(
            preview::existing(&model, 0),
            Some(dir.path().join("m.preview.webp"))
        );
        assert_eq!(
            preview::existing(&model, 1),
            None,
            "an empty file is no preview"
        );
        assert_eq!(
            staging_path(&model, 3),
            dir.path().join("m.preview-candidate-3.download")
        );
    }

    #[test]
    fn the_head_is_at_most_the_sniffed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, [0u8; 100]).unwrap();
        assert_eq!(
            preview::read_head(&path).map(|h| h.len()),
            Some(preview::SNIFF_BYTES)
        );
        assert_eq!(preview::read_head(&dir.path().join("missing")), None);
    }
}
