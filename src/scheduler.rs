//! Drivers: how planned work is run. [`Run::plan`] and [`Run::process`] are the units (metadata
//! for one target; the whole job for one model file: state, download, sidecar, previews, report).
//! [`run_sequential`] is a plain loop over them in one task; [`run_concurrent`] runs the same calls
//! under semaphores, one per kind of work, as a pipeline: a file starts downloading as soon as its
//! metadata is known. [`run_with_failsafe`] picks the driver and, when the failsafe trips, hands
//! the rest of the queue from the concurrent driver to the sequential one.
//!
//! The drivers hold no logic of their own: whatever a file needs happens in [`Run`], so both
//! behave the same and no work is lost or done twice in the handover.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::civitai::target::Target;
use crate::civitai::{ApiClient, ApiError};
use crate::config::Performance;
use crate::download::{
    DownloadError, Downloader, FileKind, Outcome, PlannedFile, Source, UNVERIFIED_SUFFIX,
    with_suffix, write_atomic,
};
use crate::failsafe::Failsafe;
use crate::http::retry::{RetryClass, Retryable};
use crate::lock;
use crate::observe::report::{FileResult, FileStatus, RunReport, StopReason, TargetFailure};
use crate::observe::{ActiveFile, Reporter};
use crate::plan::{Job, Planner, info_path, preview_path};
use crate::state::{self, CatalogItem, FileRecord, StateStore};

/// Everything a run shares: planner, downloader, state, the subscribers and the report.
pub struct Run {
    planner: Planner,
    downloader: Arc<Downloader>,
    api: Arc<ApiClient>,
    reporter: Arc<dyn Reporter>,
    failsafe: Arc<Failsafe>,
    state: Mutex<StateStore>,
    output: PathBuf,
    performance: Performance,
    /// Previews in flight across the whole run (not per model file).
    previews: Semaphore,
    /// Set by the failsafe: previews one at a time from then on.
    previews_one_at_a_time: std::sync::atomic::AtomicBool,
    /// While the concurrent driver runs: files that failed transiently after the failsafe
    /// tripped go back to the queue for the sequential driver instead of being reported failed.
    concurrent_phase: std::sync::atomic::AtomicBool,
    handed_back: Mutex<Vec<Job>>,
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
    /// Judges the concurrent driver; fed through `reporter`.
    pub failsafe: Arc<Failsafe>,
    /// The state file.
    pub state: StateStore,
    /// The output directory.
    pub output: PathBuf,
    /// Concurrency limits.
    pub performance: Performance,
    /// Stops the run (Ctrl-C, emergency stop).
    pub cancel: CancellationToken,
}

/// One item of queued work.
#[derive(Clone, Debug)]
pub enum Work {
    /// Metadata still to fetch.
    Plan(Target),
    /// A planned file still to fetch.
    Fetch(Box<Job>),
}

impl Run {
    /// A run from its parts.
    pub fn new(parts: RunParts) -> Run {
        Run {
            planner: parts.planner,
            downloader: parts.downloader,
            api: parts.api,
            reporter: parts.reporter,
            failsafe: parts.failsafe,
            state: Mutex::new(parts.state),
            output: parts.output,
            previews: Semaphore::new(parts.performance.images.max(1)),
            previews_one_at_a_time: std::sync::atomic::AtomicBool::new(false),
            concurrent_phase: std::sync::atomic::AtomicBool::new(false),
            handed_back: Mutex::new(Vec::new()),
            performance: parts.performance,
            report: Mutex::new(RunReport::new()),
            cancel: parts.cancel,
            started: Instant::now(),
        }
    }

    /// Whether a failed file goes back to the queue: the failsafe tripped while the concurrent
    /// driver ran, and the failure was of the passing kind the sequential path may get past.
    fn hand_back(&self, job: &Job, error: &DownloadError) -> bool {
        let hand_back = self
            .concurrent_phase
            .load(std::sync::atomic::Ordering::Relaxed)
            && self.failsafe.tripped().is_some()
            && self.may_continue()
            && error.retry_class() != RetryClass::Fatal;
        if hand_back {
            lock(&self.handed_back).push(job.clone());
        }
        hand_back
    }

    /// From now on previews are fetched one at a time (the failsafe's sequential path).
    fn one_preview_at_a_time(&self) {
        self.previews_one_at_a_time
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stop starting work for `reason`; work in flight ends as soon as it can, keeping `.part`
    /// files.
    pub fn stop(&self, reason: StopReason) {
        self.report().stopped.get_or_insert(reason);
        self.cancel.cancel();
    }

    /// Watch for the emergency stop file (`path`, or its name in the working and output
    /// directories); noticed within [`EMERGENCY_POLL`].
    pub async fn watch_emergency_stop(self: Arc<Self>, path: PathBuf) {
        let candidates: Vec<PathBuf> = if path.components().count() > 1 || path.is_absolute() {
            vec![path]
        } else {
            vec![path.clone(), self.output.join(&path)]
        };
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(EMERGENCY_POLL) => {}
            }
            if let Some(found) = candidates.iter().find(|p| p.exists()) {
                tracing::error!(
                    "emergency stop: {} exists; stopping new work and saving state",
                    found.display()
                );
                self.stop(StopReason::EmergencyStop);
                return;
            }
        }
    }

    /// Whether new work may start (not interrupted, quota not exhausted).
    pub fn may_continue(&self) -> bool {
        !self.cancel.is_cancelled() && self.report().stopped.is_none()
    }

    /// Whether the concurrent driver may start more work: the run goes on and the failsafe has
    /// not tripped.
    fn may_continue_concurrently(&self) -> bool {
        self.may_continue() && self.failsafe.tripped().is_none()
    }

    /// Plan one target; a failure is recorded and yields no jobs.
    pub async fn plan(&self, target: &Target) -> Vec<Job> {
        match self.planner.plan(target).await {
            Ok(jobs) => {
                self.reporter.on_planned(jobs.len() as u64);
                jobs
            }
            Err(error) => {
                if !self.cancel.is_cancelled() {
                    tracing::error!("{error}");
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
        let _active = ActiveFile::start(self.reporter.as_ref());
        let finished = self.finished_record(&job);
        let dest = finished
            .as_ref()
            .map(|r| self.output.join(&r.relative_path))
            .unwrap_or_else(|| job.file.dest.clone());
        let result = match finished
            .as_ref()
            .and_then(|r| self.known_outcome(&job, r, &dest))
        {
            Some(outcome) => Ok(outcome),
            None => {
                self.download_model(&job, dest.clone(), finished.is_some())
                    .await
            }
        };
        let model_path = result.as_ref().ok().map(model_path);
        self.finish(&job, &dest, result);
        if let Some(path) = model_path {
            self.write_sidecar(&job, &path).await;
            self.fetch_previews(&job, &path).await;
        }
    }

    /// Close the run: flush the state and fill in the totals.
    pub fn finish_report(&self) -> RunReport {
        if let Err(error) = self.state().flush() {
            tracing::error!("{error}");
        }
        let mut report = self.report().clone();
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
        owned: bool,
    ) -> Result<Outcome, DownloadError> {
        self.record(job, &dest, |r| {
            r.status = state::FileStatus::Downloading;
            r.attempts += 1;
        });
        let bar = self.reporter.on_transfer_start(&job.file_name);
        let file = PlannedFile {
            dest,
            replace_existing: owned,
            ..job.file.clone()
        };
        self.downloader.download_file(&file, bar.as_ref()).await
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
                bytes,
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
                let real = model_path(&Outcome::HashMismatch {
                    path: path.clone(),
                    bytes,
                    expected: String::new(),
                    actual: String::new(),
                    accepted,
                });
                self.record(job, &real, |r| {
                    r.status = if accepted {
                        state::FileStatus::Done
                    } else {
                        state::FileStatus::Quarantined
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
                file_result(label, path, status, bytes, 0, Some(reason))
            }
            Err(DownloadError::Cancelled) => {
                self.record(job, dest, |r| {
                    r.status = state::FileStatus::Pending;
                });
                return;
            }
            Err(error) if self.hand_back(job, &error) => {
                tracing::warn!("{label}: {error}; the sequential path will try it again");
                self.record(job, dest, |r| {
                    r.status = state::FileStatus::Pending;
                    r.last_error = Some(error.to_string());
                });
                return;
            }
            Err(error) => {
                if let DownloadError::Api(ApiError::QuotaExhausted { .. }) = &error {
                    self.report()
                        .stopped
                        .get_or_insert(StopReason::QuotaExhausted);
                }
                let reason = error.to_string();
                tracing::error!("{label}: {reason}");
                self.record(job, dest, |r| {
                    r.status = state::FileStatus::Failed;
                    r.last_error = Some(reason.clone());
                });
                file_result(
                    label,
                    dest.to_path_buf(),
                    FileStatus::Failed,
                    0,
                    0,
                    Some(reason),
                )
            }
        };
        self.reporter.on_model_file_settled();
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

    /// Fetch a job's previews, up to `performance.images` at once (one at a time when
    /// sequential).
    async fn fetch_previews(&self, job: &Job, model_path: &Path) {
        let previews = job.previews.iter().enumerate();
        let limit = if self
            .previews_one_at_a_time
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            1
        } else {
            self.performance.images
        };
        futures_util::stream::iter(previews)
            .for_each_concurrent(limit, |(n, (url, ext))| async move {
                let Ok(_permit) = self.previews.acquire().await else {
                    return;
                };
                if self.may_continue() {
                    self.fetch_preview(job, model_path, n, url, ext).await;
                }
            })
            .await;
    }

    async fn fetch_preview(
        &self,
        job: &Job,
        model_path: &Path,
        n: usize,
        url: &reqwest::Url,
        ext: &str,
    ) {
        let preview = PlannedFile {
            label: format!("{} preview {}", job.file.label, n + 1),
            source: Source::Direct(url.clone()),
            dest: preview_path(model_path, n, ext),
            expected_size: None,
            expected_sha256: None,
            kind: FileKind::Preview,
            replace_existing: false,
        };
        let bar = self
            .reporter
            .on_transfer_start(&format!("preview {}", n + 1));
        let entry = match self.downloader.download_file(&preview, bar.as_ref()).await {
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
                tracing::warn!("{}: {error}", preview.label);
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
        self.report().files.push(FileResult {
            preview: true,
            ..entry
        });
    }

    /// The record of an earlier run that finished this file (verified, or kept unverified).
    /// Only such a record makes a path ours: a run stopped mid-way may have recorded a planned
    /// path that turned out to hold somebody else's file.
    fn finished_record(&self, job: &Job) -> Option<FileRecord> {
        let state = self.state();
        let record = state.get(&job.key)?;
        let finished = matches!(
            record.status,
            state::FileStatus::Done | state::FileStatus::Quarantined
        );
        (finished
            && record.local_sha256.is_some()
            && record.expected_sha256 == job.file.expected_sha256)
            .then(|| record.clone())
    }

    /// What an earlier run left, when the disk still agrees on the size: no need to hash
    /// gigabytes again on every rerun. A file kept as unverified is reported again, or, with
    /// `--accept-hash-mismatch`, moved to its real name.
    fn known_outcome(&self, job: &Job, record: &FileRecord, dest: &Path) -> Option<Outcome> {
        let size_is =
            |path: &Path| std::fs::metadata(path).is_ok_and(|m| m.len() == record.bytes_on_disk);
        let actual = record.local_sha256.clone().unwrap_or_default();
        match record.status {
            state::FileStatus::Done if size_is(dest) => Some(Outcome::AlreadyPresent {
                path: dest.to_path_buf(),
                bytes: record.bytes_on_disk,
                sha256: None,
            }),
            state::FileStatus::Quarantined => {
                let kept = with_suffix(dest, UNVERIFIED_SUFFIX);
                if !size_is(&kept) {
                    return None;
                }
                let accepted = self.downloader.options.accept_hash_mismatch
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
        lock(&self.state)
    }

    fn report(&self) -> MutexGuard<'_, RunReport> {
        lock(&self.report)
    }
}

/// How often the emergency stop file is looked for.
pub const EMERGENCY_POLL: Duration = Duration::from_millis(500);

/// Run `queue` with the driver the settings ask for. The concurrent driver is watched by the
/// failsafe: when it trips, what is left of the queue runs on the sequential driver.
pub async fn run_with_failsafe(run: &Arc<Run>, queue: Vec<Work>) {
    if !run.performance.concurrent {
        run_sequential(run, queue).await;
        return;
    }
    run.concurrent_phase
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let rest = run_concurrent(run, queue).await;
    run.concurrent_phase
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let handed_back = std::mem::take(&mut *lock(&run.handed_back));
    let rest: Vec<Work> = handed_back
        .into_iter()
        .map(|job| Work::Fetch(Box::new(job)))
        .chain(rest)
        .collect();
    if let Some(reason) = run.failsafe.tripped()
        && run.may_continue()
    {
        tracing::warn!(
            "failsafe: {reason}; finishing the remaining {} item(s) one at a time",
            rest.len()
        );
        run.reporter.on_failsafe_switch();
        run.report().failsafe = Some(reason);
        run.downloader.use_one_connection();
        run.one_preview_at_a_time();
        run_sequential(run, rest).await;
    }
}

/// The sequential driver: one item after another, in one task.
pub async fn run_sequential(run: &Run, queue: Vec<Work>) {
    for work in queue {
        if !run.may_continue() {
            break;
        }
        match work {
            Work::Plan(target) => {
                for job in run.plan(&target).await {
                    if !run.may_continue() {
                        break;
                    }
                    run.process(job).await;
                }
            }
            Work::Fetch(job) => run.process(*job).await,
        }
    }
}

/// The concurrent driver: the same calls, metadata under one semaphore and downloads under
/// another. It stops starting work when the run stops or the failsafe trips, lets what is in
/// flight finish, and returns the work it did not start.
pub async fn run_concurrent(run: &Arc<Run>, queue: Vec<Work>) -> Vec<Work> {
    let api = Arc::new(Semaphore::new(run.performance.api));
    let downloads = Arc::new(Semaphore::new(run.performance.downloads));
    let rest = Arc::new(Mutex::new(Vec::new()));
    let tracker = TaskTracker::new();
    for work in queue {
        match work {
            Work::Plan(target) => {
                let Some(permit) = acquire(run, &api).await else {
                    lock(&rest).push(Work::Plan(target));
                    continue;
                };
                let (run, downloads, rest, inner) = (
                    run.clone(),
                    downloads.clone(),
                    rest.clone(),
                    tracker.clone(),
                );
                tracker.spawn(async move {
                    let jobs = run.plan(&target).await;
                    drop(permit);
                    for job in jobs {
                        spawn_fetch(&run, &downloads, &rest, &inner, job).await;
                    }
                });
            }
            Work::Fetch(job) => spawn_fetch(run, &downloads, &rest, &tracker, *job).await,
        }
    }
    tracker.close();
    tracker.wait().await;
    std::mem::take(&mut *lock(&rest))
}

/// Start one file under a download permit, or queue it for later when no more work may start.
async fn spawn_fetch(
    run: &Arc<Run>,
    downloads: &Arc<Semaphore>,
    rest: &Arc<Mutex<Vec<Work>>>,
    tracker: &TaskTracker,
    job: Job,
) {
    let Some(permit) = acquire(run, downloads).await else {
        lock(rest).push(Work::Fetch(Box::new(job)));
        return;
    };
    let run = run.clone();
    tracker.spawn(async move {
        run.process(job).await;
        drop(permit);
    });
}

/// A permit, unless the run must not start more work (checked again once the permit is held,
/// since the wait may have been long).
async fn acquire(
    run: &Run,
    semaphore: &Arc<Semaphore>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if !run.may_continue_concurrently() {
        return None;
    }
    let permit = semaphore.clone().acquire_owned().await.ok()?;
    run.may_continue_concurrently().then_some(permit)
}

/// The model file's real path, which names its sidecars: a file kept as `<name>.unverified`
/// still has `<name>` as its real name.
fn model_path(outcome: &Outcome) -> PathBuf {
    match outcome {
        Outcome::HashMismatch {
            path,
            accepted: false,
            ..
        } => path.with_file_name(path.file_stem().unwrap_or_default()),
        other => outcome_path(other).to_path_buf(),
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
        preview: false,
    }
}
