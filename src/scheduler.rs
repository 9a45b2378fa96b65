//! Drivers: how planned work is run. [`Run::process`] is the whole job for one model file (state,
//! download, sidecar, previews, report); [`run_sequential`] is a plain loop over it in one task.
//!
//! The drivers hold no logic of their own: whatever a file needs happens in [`Run`], so every
//! driver behaves the same and the failsafe can hand the rest of a queue from one to another.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::download::{
    DownloadError, Downloader, FileKind, Outcome, PlannedFile, Source, write_atomic,
};
use crate::plan::{Job, Planner, info_path, preview_path};
use crate::progress::Progress;
use crate::report::{FileResult, FileStatus, RunReport, StopReason, TargetFailure};
use crate::state::{self, CatalogItem, FileRecord, StateStore};
use crate::target::Target;

/// Everything a run shares: planner, downloader, state, progress and the report.
pub struct Run {
    planner: Planner,
    downloader: Arc<Downloader>,
    api: Arc<ApiClient>,
    state: Mutex<StateStore>,
    output: PathBuf,
    progress: Progress,
    report: Mutex<RunReport>,
    cancel: CancellationToken,
    started: Instant,
}

impl Run {
    /// A run writing under `output` and recording into `state`.
    pub fn new(
        planner: Planner,
        downloader: Arc<Downloader>,
        api: Arc<ApiClient>,
        state: StateStore,
        output: PathBuf,
        progress: Progress,
        cancel: CancellationToken,
    ) -> Run {
        Run {
            planner,
            downloader,
            api,
            state: Mutex::new(state),
            output,
            progress,
            report: Mutex::new(RunReport::new()),
            cancel,
            started: Instant::now(),
        }
    }

    /// Whether new work may start (not interrupted, quota not exhausted).
    pub fn may_continue(&self) -> bool {
        !self.cancel.is_cancelled() && self.report().stopped.is_none()
    }

    /// Plan one target; a failure is recorded and yields no jobs.
    pub async fn plan(&self, target: &Target) -> Vec<Job> {
        match self.planner.plan(target).await {
            Ok(jobs) => {
                self.progress.add_planned(jobs.len() as u64);
                jobs
            }
            Err(error) => {
                if !self.cancel.is_cancelled() {
                    tracing::error!("{target}: {error}");
                    self.report().failed_targets.push(TargetFailure {
                        target: target.to_string(),
                        reason: error.to_string(),
                    });
                }
                Vec::new()
            }
        }
    }

    /// The whole job for one model file: skip it when the state and the disk say it is done,
    /// otherwise download and verify it; then its sidecar and previews; record everything.
    pub async fn process(&self, job: Job) {
        let recorded = self.recorded_path(&job);
        let owned = recorded.is_some();
        let dest = recorded.unwrap_or_else(|| job.file.dest.clone());
        let result = match self.known_complete(&job, &dest) {
            Some(bytes) => Ok(Outcome::AlreadyPresent {
                path: dest.clone(),
                bytes,
                sha256: None,
            }),
            None => self.download_model(&job, dest.clone(), owned).await,
        };
        let final_path = match &result {
            Ok(outcome) => Some(outcome_path(outcome).to_path_buf()),
            Err(_) => None,
        };
        self.finish(&job, &dest, result);
        if let Some(path) = final_path {
            self.write_sidecar(&job, &path).await;
            self.fetch_previews(&job, &path).await;
        }
    }

    /// Close the run: flush the state and fill in the totals.
    pub fn finish_report(&self) -> RunReport {
        if let Err(error) = self.state().flush() {
            tracing::error!("{error}");
        }
        self.progress.finish();
        let mut report = self.report().clone();
        if self.cancel.is_cancelled() && report.stopped.is_none() {
            report.stopped = Some(StopReason::Interrupted);
        }
        report.wall_secs = self.started.elapsed().as_secs_f64();
        report.hosts = self.api.served_by_host();
        report.api_requests = self
            .api
            .counters
            .requests
            .load(std::sync::atomic::Ordering::Relaxed);
        report.retries = self
            .api
            .counters
            .retries
            .load(std::sync::atomic::Ordering::Relaxed);
        report
    }

    async fn download_model(
        &self,
        job: &Job,
        dest: PathBuf,
        owned: bool,
    ) -> Result<Outcome, DownloadError> {
        self.record(job, &dest, |r| {
            r.status = state::FileStatus::Downloading;
            r.attempts += 1;
        });
        let bar = self.progress.file(&job.file_name);
        let file = PlannedFile {
            dest,
            replace_existing: owned,
            ..job.file.clone()
        };
        self.downloader.download_file(&file, &bar).await
    }

    /// Record the outcome in the state file and the report, and print failures as they happen.
    fn finish(&self, job: &Job, dest: &Path, result: Result<Outcome, DownloadError>) {
        let label = job.file.label.clone();
        let entry = match result {
            Ok(Outcome::Downloaded {
                path,
                bytes,
                transferred,
                sha256,
                verified,
            }) => {
                if !verified {
                    tracing::warn!("{label}: Civitai publishes no SHA-256; checked by size only");
                }
                self.record(job, &path, |r| {
                    r.status = state::FileStatus::Done;
                    r.local_sha256 = Some(sha256);
                    r.bytes_on_disk = bytes;
                    r.last_error = None;
                });
                file_result(
                    label,
                    path,
                    FileStatus::Downloaded,
                    bytes,
                    transferred,
                    None,
                )
            }
            Ok(Outcome::AlreadyPresent {
                path,
                bytes,
                sha256,
            }) => {
                self.record(job, &path, |r| {
                    r.status = state::FileStatus::Done;
                    r.bytes_on_disk = bytes;
                    r.local_sha256 = sha256.or(r.local_sha256.take());
                    r.last_error = None;
                });
                file_result(label, path, FileStatus::Present, bytes, 0, None)
            }
            Ok(Outcome::HashMismatch {
                path,
                expected,
                actual,
                accepted,
            }) => {
                let reason = format!(
                    "two downloads gave SHA-256 {actual} but Civitai publishes {expected}; the \
                     published hash is likely wrong. Kept as {}{}",
                    path.display(),
                    if accepted {
                        ""
                    } else {
                        " (pass --accept-hash-mismatch to keep it under its real name)"
                    }
                );
                tracing::warn!("{label}: {reason}");
                self.record(job, &path, |r| {
                    r.status = if accepted {
                        state::FileStatus::Done
                    } else {
                        state::FileStatus::Quarantined
                    };
                    r.local_sha256 = Some(actual);
                    r.last_error = Some(reason.clone());
                });
                let status = if accepted {
                    FileStatus::Downloaded
                } else {
                    FileStatus::Unverified
                };
                file_result(label, path, status, 0, 0, Some(reason))
            }
            Err(DownloadError::Cancelled) => {
                self.record(job, dest, |r| {
                    r.status = state::FileStatus::Pending;
                });
                return;
            }
            Err(error) => {
                if let DownloadError::Api(ApiError::QuotaExhausted { .. }) = &error {
                    self.report().stopped = Some(StopReason::QuotaExhausted);
                }
                let reason = error.to_string();
                tracing::error!("{label}: {reason}");
                self.record(job, dest, |r| {
                    r.status = state::FileStatus::Failed;
                    r.last_error = Some(reason.clone());
                });
                file_result(
                    label,
                    job.file.dest.clone(),
                    FileStatus::Failed,
                    0,
                    0,
                    Some(reason),
                )
            }
        };
        self.progress.file_finished(&job.file_name);
        self.report().files.push(entry);
    }

    async fn write_sidecar(&self, job: &Job, model_path: &Path) {
        let Some(info) = &job.sidecar else {
            return;
        };
        let bytes = serde_json::to_vec_pretty(info).unwrap_or_default();
        if let Err(error) = write_atomic(&info_path(model_path), bytes).await {
            tracing::warn!("{}: metadata sidecar not written: {error}", job.file.label);
        }
    }

    async fn fetch_previews(&self, job: &Job, model_path: &Path) {
        for (n, (url, ext)) in job.previews.iter().enumerate() {
            if !self.may_continue() {
                return;
            }
            let preview = PlannedFile {
                label: format!("{} preview {}", job.file.label, n + 1),
                source: Source::Direct(url.clone()),
                dest: preview_path(model_path, n, ext),
                expected_size: None,
                expected_sha256: None,
                kind: FileKind::Preview,
                replace_existing: false,
            };
            let bar = self.progress.file(&format!("preview {}", n + 1));
            let result = self.downloader.download_file(&preview, &bar).await;
            let entry = match result {
                Ok(outcome) => {
                    let (status, bytes, transferred) = match &outcome {
                        Outcome::Downloaded {
                            bytes, transferred, ..
                        } => (FileStatus::Downloaded, *bytes, *transferred),
                        Outcome::AlreadyPresent { bytes, .. } => (FileStatus::Present, *bytes, 0),
                        Outcome::HashMismatch { .. } => (FileStatus::Unverified, 0, 0),
                    };
                    let path = outcome_path(&outcome).to_path_buf();
                    file_result(preview.label, path, status, bytes, transferred, None)
                }
                Err(DownloadError::Cancelled) => return,
                Err(error) => {
                    tracing::error!("{}: {error}", preview.label);
                    file_result(
                        preview.label,
                        preview.dest,
                        FileStatus::Failed,
                        0,
                        0,
                        Some(error.to_string()),
                    )
                }
            };
            self.report().files.push(entry);
        }
    }

    /// The path this file was saved under by an earlier run (it may carry a disambiguating id).
    fn recorded_path(&self, job: &Job) -> Option<PathBuf> {
        let state = self.state();
        let record = state.get(&job.key)?;
        Some(self.output.join(&record.relative_path))
    }

    /// When the state says the file is done and the disk agrees on its size: no need to hash
    /// gigabytes again on every rerun.
    fn known_complete(&self, job: &Job, dest: &Path) -> Option<u64> {
        let state = self.state();
        let record = state.get(&job.key)?;
        let on_disk = std::fs::metadata(dest).ok()?.len();
        (record.status == state::FileStatus::Done
            && record.bytes_on_disk == on_disk
            && record.expected_sha256 == job.file.expected_sha256)
            .then_some(on_disk)
    }

    /// Create or update the state record of a job.
    fn record(&self, job: &Job, path: &Path, change: impl FnOnce(&mut FileRecord)) {
        let relative = path
            .strip_prefix(&self.output)
            .unwrap_or(path)
            .to_path_buf();
        let mut state = self.state();
        let mut record = state.get(&job.key).cloned().unwrap_or_else(|| {
            FileRecord::new(
                job.key.clone(),
                CatalogItem::new(job.model.0, job.model.1.clone()),
                CatalogItem::new(job.version.0, job.version.1.clone()),
                CatalogItem::new(job.file_id, job.file_name.clone()),
                relative.clone(),
            )
        });
        record.relative_path = relative;
        record.expected_size = job.file.expected_size;
        record.expected_sha256 = job.file.expected_sha256.clone();
        change(&mut record);
        if let Err(error) = state.upsert(record) {
            tracing::error!("{error}");
        }
    }

    fn state(&self) -> MutexGuard<'_, StateStore> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self) -> MutexGuard<'_, RunReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sequential driver: one target after another, one file after another, in one task.
pub async fn run_sequential(run: &Run, targets: &[Target]) {
    for target in targets {
        if !run.may_continue() {
            break;
        }
        for job in run.plan(target).await {
            if !run.may_continue() {
                break;
            }
            run.process(job).await;
        }
    }
}

fn outcome_path(outcome: &Outcome) -> &Path {
    match outcome {
        Outcome::Downloaded { path, .. }
        | Outcome::AlreadyPresent { path, .. }
        | Outcome::HashMismatch { path, .. } => path,
    }
}

fn file_result(
    label: String,
    path: PathBuf,
    status: FileStatus,
    bytes: u64,
    transferred: u64,
    reason: Option<String>,
) -> FileResult {
    FileResult {
        label,
        path,
        status,
        bytes,
        transferred,
        reason,
    }
}
