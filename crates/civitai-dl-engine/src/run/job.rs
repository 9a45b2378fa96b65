//! The unit of work: planning turns one target into jobs, [`Run::process`] does the whole job
//! for one model file (state, download, sidecar, previews, report) and returns a [`JobOutcome`].
//! It knows nothing about the driver that calls it: limits arrive as a [`Mode`], and a passing
//! failure is returned for the driver to judge instead of being settled here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::civitai::target::Target;
use crate::civitai::{ApiClient, ApiError};
use crate::fetch::{DownloadError, Downloader, Outcome, PlannedFile, UNVERIFIED_SUFFIX};
use crate::fs::with_suffix;
use crate::http::retry::{RetryClass, Retryable};
use crate::lock;
use crate::observe::report::{
    FileDetail, FileResult, FileStatus, RunReport, StopReason, TargetFailure,
};
use crate::observe::{ActiveFile, Reporter, SavedFile};
use crate::plan::naming::join_inside;
use crate::plan::{Job, ListingPage, PlanError, Planned, Planner, Step, preview_path};
use crate::run::relocate::{Relocated, relocate};
use crate::run::settled::{self, Settled};
use crate::run::{JobOutcome, Mode, Performance, PlanOutcome, Unit, emergency};
use crate::sidecar::preview;
use crate::sidecar::{self, OnDisk, SavedPreview, SidecarKind};
use crate::state::{self, CatalogItem, FileRecord, StateStore};

mod previews;

/// Everything a run shares: planner, downloader, state, the subscribers and the report.
pub struct Run {
    planner: Planner,
    /// Pinned targets an earlier run finished, from the state as the run found it.
    settled: Settled,
    downloader: Arc<Downloader>,
    api: Arc<ApiClient>,
    reporter: Arc<dyn Reporter>,
    state: Mutex<StateStore>,
    output: PathBuf,
    performance: Performance,
    /// Previews in flight across the whole run (not per model file).
    previews: Semaphore,
    report: Mutex<RunReport>,
    cancel: CancellationToken,
    started: Instant,
}

/// What [`Run::new`] needs.
pub struct RunParts {
    /// Turns targets into jobs.
    pub planner: Planner,
    /// Fetches files.
    pub downloader: Arc<Downloader>,
    /// The API client (for the summary's per-host counts).
    pub api: Arc<ApiClient>,
    /// Where events go (metrics, progress bars, the failsafe).
    pub reporter: Arc<dyn Reporter>,
    /// The state file.
    pub state: StateStore,
    /// The output directory.
    pub output: PathBuf,
    /// Concurrency limits.
    pub performance: Performance,
    /// Stops the run (Ctrl-C, emergency stop).
    pub cancel: CancellationToken,
    /// Which files' entries the report keeps (all of them only when they are printed).
    pub report_detail: FileDetail,
}

impl Run {
    /// A run from its parts.
    pub fn new(parts: RunParts) -> Run {
        Run {
            settled: Settled::index(&parts.state),
            planner: parts.planner,
            downloader: parts.downloader,
            api: parts.api,
            reporter: parts.reporter,
            state: Mutex::new(parts.state),
            output: parts.output,
            previews: Semaphore::new(parts.performance.images.max(1)),
            performance: parts.performance,
            report: Mutex::new(RunReport::keeping(parts.report_detail)),
            cancel: parts.cancel,
            started: Instant::now(),
        }
    }

    /// Stop starting work for `reason`; work in flight ends as soon as it can, keeping `.part`
    /// files.
    pub fn stop(&self, reason: StopReason) {
        self.report().stopped.get_or_insert(reason);
        self.cancel.cancel();
    }

    /// Stop the run when the emergency stop file appears (`path`, or its name in the working
    /// and output directories).
    pub async fn watch_emergency_stop(self: Arc<Self>, path: PathBuf) {
        let candidates = emergency::candidates(path, &self.output);
        if emergency::watch(&candidates, &self.cancel).await.is_some() {
            self.stop(StopReason::EmergencyStop);
        }
    }

    /// Whether new work may start (not interrupted, quota not exhausted).
    pub fn may_continue(&self) -> bool {
        !self.cancel.is_cancelled() && self.report().stopped.is_none()
    }

    /// The whole job for one model file: skip it when the state and the disk say it is done,
    /// otherwise download and verify it; then its sidecar and previews; record everything.
    pub async fn process(&self, job: Job, mode: Mode) -> JobOutcome<Job, DownloadError> {
        let _active = ActiveFile::start(self.reporter.as_ref());
        let finished = self.finished_record(&job);
        let mut dest = finished
            .as_ref()
            .and_then(|r| self.inside_output(&r.relative_path))
            .unwrap_or_else(|| job.file.dest.clone());
        let known = finished
            .as_ref()
            .and_then(|r| self.known_outcome(&job, r, &dest));
        let result = match known {
            Some(Outcome::AlreadyPresent { bytes, sha256, .. })
                if dest != job.file.dest && self.move_to_planned(&job, &dest) =>
            {
                dest = job.file.dest.clone();
                Ok(Outcome::AlreadyPresent {
                    path: dest.clone(),
                    bytes,
                    sha256,
                })
            }
            Some(outcome) => Ok(outcome),
            None => {
                let started = Instant::now();
                let result = self
                    .download_model(&job, dest.clone(), finished.as_ref(), mode)
                    .await;
                self.announce_saved(&result, started);
                result
            }
        };
        let path = match self.finish(&job, &dest, result) {
            Ok(Some(path)) => path,
            Ok(None) => return JobOutcome::Settled,
            Err(error) => return JobOutcome::Transient { job, error },
        };
        // Previews first: LoRA Manager's record names the preview file.
        let preview = self.fetch_previews(&job, &path, mode).await;
        self.write_sidecars(&job, &path, preview).await;
        JobOutcome::Settled
    }

    /// Close the run: flush the state and fill in the totals.
    pub fn finish_report(&self) -> RunReport {
        if let Err(error) = self.state().flush() {
            tracing::error!("{error}");
        }
        // Taken, not cloned: a run's report is handed out once, and may be large (`--json`).
        let mut report = std::mem::replace(&mut *self.report(), RunReport::new());
        report.mode = if self.performance.concurrent {
            "concurrent".into()
        } else {
            "sequential".into()
        };
        if self.cancel.is_cancelled() && report.stopped.is_none() {
            report.stopped = Some(StopReason::Interrupted);
        }
        report.wall_secs = self.started.elapsed().as_secs_f64();
        report.hosts = self.api.served_by_host();
        report
    }

    async fn download_model(
        &self,
        job: &Job,
        dest: PathBuf,
        finished: Option<&FileRecord>,
        mode: Mode,
    ) -> Result<Outcome, DownloadError> {
        self.record(job, &dest, |r| {
            r.status = state::RecordStatus::Downloading;
            r.attempts += 1;
        });
        let bar = self.reporter.on_transfer_start(&job.file_name);
        let file = PlannedFile {
            dest,
            replace_existing: finished.is_some(),
            known_sha256: finished.and_then(|r| r.local_sha256.clone()),
            ..job.file.clone()
        };
        self.downloader
            .download_file(&file, bar.as_ref(), mode.connections)
            .await
    }

    /// Record the outcome in the state file and the report, and print failures as they happen.
    /// Returns the model file's real path when it is there to describe (sidecar, previews), or
    /// a passing failure, unrecorded, for the driver to judge.
    fn finish(
        &self,
        job: &Job,
        dest: &Path,
        result: Result<Outcome, DownloadError>,
    ) -> Result<Option<PathBuf>, DownloadError> {
        let label = job.file.label.clone();
        let (entry, real_path) = match result {
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
                    r.status = state::RecordStatus::Done;
                    r.local_sha256 = Some(sha256);
                    r.bytes_on_disk = bytes;
                    r.last_error = None;
                });
                let entry = FileResult::model_file(
                    label,
                    path.clone(),
                    FileStatus::Downloaded,
                    bytes,
                    transferred,
                    None,
                );
                (entry, path)
            }
            Ok(Outcome::AlreadyPresent {
                path,
                bytes,
                sha256,
            }) => {
                self.record(job, &path, |r| {
                    r.status = state::RecordStatus::Done;
                    r.bytes_on_disk = bytes;
                    r.local_sha256 = sha256.or(r.local_sha256.take());
                    r.last_error = None;
                });
                let entry = FileResult::model_file(
                    label,
                    path.clone(),
                    FileStatus::Present,
                    bytes,
                    0,
                    None,
                );
                (entry, path)
            }
            Ok(Outcome::HashMismatch {
                path,
                bytes,
                expected,
                actual,
                accepted,
            }) => {
                let reason = format!(
                    "two downloads gave SHA-256 {} but Civitai publishes {}; the published hash \
                     is likely wrong. Kept as {}{}",
                    actual.to_ascii_uppercase(),
                    expected.to_ascii_uppercase(),
                    path.display(),
                    if accepted {
                        ""
                    } else {
                        " (pass --accept-hash-mismatch to keep it under its real name)"
                    }
                );
                tracing::warn!("{label}: {reason}");
                let real = real_name(&path, accepted);
                self.record(job, &real, |r| {
                    r.status = if accepted {
                        state::RecordStatus::Done
                    } else {
                        state::RecordStatus::Quarantined
                    };
                    r.local_sha256 = Some(actual);
                    r.bytes_on_disk = bytes;
                    r.last_error = Some(reason.clone());
                });
                let status = if accepted {
                    FileStatus::Downloaded
                } else {
                    FileStatus::Unverified
                };
                (
                    FileResult::model_file(label, path, status, bytes, 0, Some(reason)),
                    real,
                )
            }
            Err(DownloadError::Cancelled) => {
                self.record(job, dest, |r| {
                    r.status = state::RecordStatus::Pending;
                });
                let kept = std::fs::metadata(with_suffix(dest, "part")).map_or(0, |m| m.len());
                self.report().kept_in_parts += kept;
                return Ok(None);
            }
            Err(error) if error.retry_class() != RetryClass::Fatal => return Err(error),
            Err(error) => {
                self.fail(job, dest, error);
                return Ok(None);
            }
        };
        self.settled(job, entry);
        Ok(Some(real_path))
    }

    /// Record a failure as final.
    fn fail(&self, job: &Job, dest: &Path, error: DownloadError) {
        if let DownloadError::Api(ApiError::QuotaExhausted { .. }) = &error {
            self.report()
                .stopped
                .get_or_insert(StopReason::QuotaExhausted);
        }
        let reason = error.to_string();
        tracing::error!("{}: {reason}", job.file.label);
        self.record(job, dest, |r| {
            r.status = state::RecordStatus::Failed;
            r.last_error = Some(reason.clone());
        });
        let entry = FileResult::model_file(
            job.file.label.clone(),
            dest.to_path_buf(),
            FileStatus::Failed,
            0,
            0,
            Some(reason),
        );
        self.settled(job, entry);
    }

    /// A model file's outcome is final for this run.
    fn settled(&self, job: &Job, entry: FileResult) {
        self.reporter
            .on_model_file_settled(job.file.expected_size.unwrap_or(0), entry.transferred);
        let resolves = self.downloader.resolves(&job.file);
        self.report().push(FileResult { resolves, ..entry });
    }

    /// Where the last attempt at `job` wrote: the path its state record names.
    fn recorded_path(&self, job: &Job) -> PathBuf {
        let relative = self.state().get(&job.key).map(|r| r.relative_path);
        relative
            .and_then(|r| self.inside_output(&r))
            .unwrap_or_else(|| job.file.dest.clone())
    }

    /// A path read back from the state file, under the output folder, or `None` when it would
    /// leave it: the state file is input like any other, and may have been edited or copied.
    fn inside_output(&self, relative: &Path) -> Option<PathBuf> {
        join_inside(&self.output, relative)
            .inspect_err(|error| tracing::warn!("ignoring the state file's path: {error}"))
            .ok()
    }

    /// Write the job's sidecars beside its verified model file; a sidecar that cannot be written
    /// is a warning, the model file stays a success.
    async fn write_sidecars(&self, job: &Job, model_path: &Path, preview: Option<SavedPreview>) {
        let Some(plan) = &job.sidecars else {
            return;
        };
        // A file kept as `<name>.unverified` is not at its real name: nothing describes it.
        let Ok(size) = std::fs::metadata(model_path).map(|m| m.len()) else {
            return;
        };
        let Some(sha256) = self.state().get(&job.key).and_then(|r| r.local_sha256) else {
            tracing::warn!(
                "{}: sidecars not written: the file's SHA-256 is not known",
                job.file.label
            );
            return;
        };
        let verified = job
            .file
            .expected_sha256
            .as_ref()
            .is_some_and(|published| published.eq_ignore_ascii_case(&sha256));
        let on_disk = OnDisk {
            path: std::path::absolute(model_path).unwrap_or_else(|_| model_path.to_path_buf()),
            size,
            sha256: sha256.to_ascii_lowercase(),
            verified,
            preview,
            now_unix: unix_now(),
            now_rfc3339: state::now_rfc3339(),
        };
        for error in sidecar::write_all(plan, &on_disk).await {
            tracing::warn!("{}: sidecar not written: {error}", job.file.label);
        }
    }

    /// The record of an earlier run that finished this file (verified, or kept unverified).
    /// Only such a record makes a path ours: a run stopped mid-way may have recorded a planned
    /// path that turned out to hold somebody else's file.
    fn finished_record(&self, job: &Job) -> Option<FileRecord> {
        let state = self.state();
        let record = state.get(&job.key)?;
        let finished = matches!(
            record.status,
            state::RecordStatus::Done | state::RecordStatus::Quarantined
        );
        (finished
            && record.local_sha256.is_some()
            && record.expected_sha256 == job.file.expected_sha256
            && join_inside(&self.output, &record.relative_path).is_ok())
        .then_some(record)
    }

    /// Tell the subscribers a file reached its final path (the unattended log's line per file).
    fn announce_saved(&self, result: &Result<Outcome, DownloadError>, started: Instant) {
        if let Ok(Outcome::Downloaded {
            path,
            bytes,
            transferred,
            verified,
            ..
        }) = result
        {
            self.reporter.on_model_file_saved(&SavedFile {
                path: path
                    .strip_prefix(&self.output)
                    .unwrap_or(path)
                    .to_path_buf(),
                bytes: *bytes,
                transferred: *transferred,
                elapsed: started.elapsed(),
                verified: *verified,
            });
        }
    }

    /// Move a finished file at `from` and its sidecars to the path the plan now gives it;
    /// whether it moved. The new path is recorded when the outcome is.
    fn move_to_planned(&self, job: &Job, from: &Path) -> bool {
        let to = &job.file.dest;
        let mut sidecars: Vec<(PathBuf, PathBuf)> = SidecarKind::ALL
            .iter()
            .map(|kind| (kind.path(from), kind.path(to)))
            .collect();
        for n in 0..job.previews.wanted {
            sidecars.extend(
                preview::EXTENSIONS
                    .iter()
                    .map(|ext| (preview_path(from, n, ext), preview_path(to, n, ext))),
            );
        }
        let label = &job.file.label;
        match relocate(from, to, &sidecars) {
            Ok(Relocated::Moved) => {
                tracing::info!(
                    "{label}: moved {} to {}, where the layout now puts it",
                    from.display(),
                    to.display()
                );
                true
            }
            Ok(Relocated::Taken) => {
                tracing::warn!(
                    "{label}: the layout now puts this file at {}, which is taken; it stays at {}",
                    to.display(),
                    from.display()
                );
                false
            }
            Err(error) => {
                tracing::warn!(
                    "{label}: cannot move {} to {} ({error}); it stays where it is",
                    from.display(),
                    to.display()
                );
                false
            }
        }
    }

    /// What an earlier run left, when the disk still agrees on the size: no need to hash
    /// gigabytes again on every rerun. A file kept as unverified is reported again, or, with
    /// `--accept-hash-mismatch`, moved to its real name.
    fn known_outcome(&self, job: &Job, record: &FileRecord, dest: &Path) -> Option<Outcome> {
        let size_is =
            |path: &Path| std::fs::metadata(path).is_ok_and(|m| m.len() == record.bytes_on_disk);
        let actual = record.local_sha256.clone().unwrap_or_default();
        match record.status {
            state::RecordStatus::Done if size_is(dest) => Some(Outcome::AlreadyPresent {
                path: dest.to_path_buf(),
                bytes: record.bytes_on_disk,
                sha256: None,
            }),
            state::RecordStatus::Quarantined => {
                let kept = with_suffix(dest, UNVERIFIED_SUFFIX);
                if !size_is(&kept) {
                    return None;
                }
                let accepted = self.downloader.accepts_hash_mismatch()
                    && !dest.exists()
                    && std::fs::rename(&kept, dest).is_ok();
                Some(Outcome::HashMismatch {
                    path: if accepted { dest.to_path_buf() } else { kept },
                    bytes: record.bytes_on_disk,
                    expected: job.file.expected_sha256.clone().unwrap_or_default(),
                    actual,
                    accepted,
                })
            }
            _ => None,
        }
    }

    /// Create or update the state record of a job.
    fn record(&self, job: &Job, path: &Path, change: impl FnOnce(&mut FileRecord)) {
        let relative = path
            .strip_prefix(&self.output)
            .unwrap_or(path)
            .to_path_buf();
        let mut state = self.state();
        let mut record = state.get(&job.key).unwrap_or_else(|| {
            FileRecord::new(
                job.key.clone(),
                job.model.clone(),
                job.version.clone(),
                CatalogItem::new(job.file_id, job.file_name.clone()),
                relative.clone(),
            )
        });
        record.relative_path = relative;
        record.expected_size = job.file.expected_size;
        record.expected_sha256 = job.file.expected_sha256.clone();
        record.pin.clone_from(&job.pin);
        change(&mut record);
        if state.holds(&record) {
            // Nothing new (a file found present as recorded): a rerun of 100,000 finished files
            // must not append 100,000 journal lines and rewrite the snapshot hundreds of times.
            return;
        }
        if let Err(error) = state.upsert(record) {
            tracing::error!("{error}");
        }
    }

    /// Tell the planner which targets it will plan, leaving out the pinned ones an earlier run
    /// finished: their models are not asked for ([`settled`]).
    pub async fn expect(&self, targets: &[Target]) {
        let unsettled: Vec<Target> = targets
            .iter()
            .filter(|target| {
                let step = Step::Target((*target).clone());
                self.pin_prefix(&step)
                    .is_none_or(|prefix| self.settled_jobs(&prefix).is_none())
            })
            .cloned()
            .collect();
        self.planner.expect(&unsettled).await;
    }

    /// What names a pinned target's plan, for [`settled`].
    fn pin_prefix(&self, step: &Step) -> Option<String> {
        match step {
            Step::Target(target) => settled::pin_prefix(target, &self.planner.settings_key()),
            Step::Page(_) => None,
        }
    }

    fn settled_jobs(&self, prefix: &str) -> Option<Vec<Job>> {
        self.settled.jobs(prefix, &self.state(), &self.output)
    }

    /// A creator's listing that broke in an earlier run resumes at the page that failed.
    fn resume_listing(&self, step: &Step) -> Step {
        if let Step::Target(Target::User { username }) = step
            && let Some(cursor) = self.state().listing_cursor(username)
        {
            tracing::info!("creator {username}: resuming the listing where the last run broke off");
            return Step::Page(Box::new(ListingPage::resumed(username, cursor)));
        }
        step.clone()
    }

    /// Remember where a creator's listing stands: the cursor of a page that failed, for the
    /// rerun to resume at; nothing once the walk is complete.
    fn keep_listing_place(&self, step: &Step, result: &Result<Planned, PlanError>) {
        let (username, cursor) = match step {
            Step::Target(Target::User { username }) => (username, None),
            Step::Page(page) => (&page.username, page.cursor.clone()),
            Step::Target(_) => return,
        };
        let resume_at = match result {
            Ok(planned) if planned.next.is_none() => None,
            Err(_) if cursor.is_some() => cursor,
            // Mid-walk, or the first page failed: the saved place (if any) still holds.
            Ok(_) | Err(_) => return,
        };
        let broke_off = resume_at.is_some();
        match self.state().set_listing_cursor(username, resume_at) {
            Ok(()) if broke_off => tracing::warn!(
                "{step}: the listing broke off here; what it listed before is kept, and running \
                 the same command again continues from this page"
            ),
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(
                    "creator {username}: where the listing stands was not saved: {error}"
                );
            }
        }
    }

    fn record_target_failure(&self, step: &Step, error: PlanError) {
        tracing::error!("{error}");
        self.report().failed_targets.push(TargetFailure {
            target: step.to_string(),
            reason: error.to_string(),
        });
    }

    /// A target the user gave is planned (or given up): the "planning N/M" count. A creator's
    /// later pages are part of its target and do not count again.
    fn target_planned(&self, step: &Step) {
        if let Step::Target(_) = step {
            self.reporter.on_target_planned();
        }
    }

    fn state(&self) -> MutexGuard<'_, StateStore> {
        lock(&self.state)
    }

    fn report(&self) -> MutexGuard<'_, RunReport> {
        lock(&self.report)
    }
}

impl Unit for Run {
    type Target = Step;
    type Job = Job;
    type Error = DownloadError;
    type PlanError = PlanError;

    async fn plan(&self, step: &Step) -> PlanOutcome<Step, Job, PlanError> {
        let step = self.resume_listing(step);
        let prefix = self.pin_prefix(&step);
        let trusted = prefix.as_deref().and_then(|p| self.settled_jobs(p));
        let result = match trusted {
            Some(jobs) => Ok(Planned::jobs(jobs)),
            None => self.planner.plan(&step).await,
        };
        self.keep_listing_place(&step, &result);
        match result {
            Ok(mut planned) => {
                if let Some(prefix) = prefix {
                    let pin = settled::pin(&prefix, planned.jobs.len());
                    for job in &mut planned.jobs {
                        job.pin = Some(pin.clone());
                    }
                }
                for error in planned.failures {
                    self.record_target_failure(&step, error);
                }
                self.target_planned(&step);
                self.report()
                    .skipped_versions
                    .extend(planned.skipped.iter().map(ToString::to_string));
                let bytes = planned
                    .jobs
                    .iter()
                    .filter_map(|job| job.file.expected_size)
                    .sum();
                self.reporter.on_planned(planned.jobs.len() as u64, bytes);
                PlanOutcome::Planned {
                    jobs: planned.jobs,
                    next: planned.next.map(|page| Step::Page(Box::new(page))),
                }
            }
            Err(_) if self.cancel.is_cancelled() => PlanOutcome::nothing(),
            Err(error) if error.is_transient() => PlanOutcome::Transient(error),
            Err(error) => {
                self.give_up_target(&step, error);
                PlanOutcome::nothing()
            }
        }
    }

    fn give_up_target(&self, step: &Step, error: PlanError) {
        self.record_target_failure(step, error);
        self.target_planned(step);
    }

    fn defer_target(&self, _step: &Step, error: &PlanError) {
        tracing::warn!("{error}; the sequential path will try it again");
    }

    async fn process(&self, job: Job, mode: Mode) -> JobOutcome<Job, DownloadError> {
        Run::process(self, job, mode).await
    }

    fn give_up(&self, job: &Job, error: DownloadError) {
        self.fail(job, &self.recorded_path(job), error);
    }

    fn defer(&self, job: &Job, error: &DownloadError) {
        tracing::warn!(
            "{}: {error}; the sequential path will try it again",
            job.file.label
        );
        self.record(job, &self.recorded_path(job), |r| {
            r.status = state::RecordStatus::Pending;
            r.last_error = Some(error.to_string());
        });
    }

    fn may_continue(&self) -> bool {
        Run::may_continue(self)
    }

    fn switched_to_sequential(&self, reason: &str, remaining: usize) {
        tracing::warn!(
            "failsafe: {reason}; finishing the remaining {remaining} item(s) one at a time"
        );
        self.reporter.on_failsafe_switch();
        self.report().failsafe = Some(reason.to_string());
    }
}

/// The model file's real path, which names its sidecars: a file kept as `<name>.unverified`
/// still has `<name>` as its real name.
fn real_name(path: &Path, accepted: bool) -> PathBuf {
    if accepted {
        path.to_path_buf()
    } else {
        path.with_file_name(path.file_stem().unwrap_or_default())
    }
}

fn outcome_path(outcome: &Outcome) -> &Path {
    match outcome {
        Outcome::Downloaded { path, .. }
        | Outcome::AlreadyPresent { path, .. }
        | Outcome::HashMismatch { path, .. } => path,
    }
}

/// Seconds since the Unix epoch, with fractions, as LoRA Manager stores its times.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
