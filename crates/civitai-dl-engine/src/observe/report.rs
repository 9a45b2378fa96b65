//! What a run did: the data of the final summary and of `--json`. Rendering it for people is
//! the command line's job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::observe::metrics::MetricsReport;

/// Version of the `--json` summary layout.
pub const SUMMARY_VERSION: u32 = 1;

/// How one file ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Fetched and verified (or size-checked when no hash is published).
    Downloaded,
    /// Already complete on disk.
    Present,
    /// Kept although its hash disagrees with Civitai's.
    Unverified,
    /// Not fetched.
    Failed,
}

/// One file's line in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct FileResult {
    /// Model, version and file.
    pub label: String,
    /// Where it is (or would have been).
    #[serde(flatten, serialize_with = "crate::observe::json_path::path_and_bytes")]
    pub path: PathBuf,
    /// How it ended.
    pub status: FileStatus,
    /// Size on disk.
    pub bytes: u64,
    /// Bytes transferred in this run.
    pub transferred: u64,
    /// Why it failed or is unverified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A preview image (its failure is reported but does not fail the run: previews are
    /// extras, and one that Civitai no longer serves must not fail every rerun).
    #[serde(default)]
    pub preview: bool,
    /// Download-route resolves this file cost in this run: each one counts against Civitai's
    /// download quota, so a file that needed many says its storage host kept refusing.
    #[serde(default)]
    pub resolves: u32,
}

impl FileResult {
    /// The line of a model file (previews mark themselves afterwards).
    pub fn model_file(
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
            resolves: 0,
        }
    }
}

/// Why a run stopped before its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Ctrl-C.
    Interrupted,
    /// Civitai's 24-hour download quota.
    QuotaExhausted,
    /// The emergency stop file appeared.
    EmergencyStop,
}

/// The whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    /// Layout version of this JSON.
    pub version: u32,
    /// Every file, in the order they finished.
    pub files: Vec<FileResult>,
    /// Targets that could not be planned, with the reason.
    pub failed_targets: Vec<TargetFailure>,
    /// Versions left out because no file matched the filters (other versions of their model
    /// did), with the files they offer.
    pub skipped_versions: Vec<String>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<StopReason>,
    /// Bytes of unfinished files kept in `.part` files for the next run (after an interruption
    /// or a stop).
    #[serde(default)]
    pub kept_in_parts: u64,
    /// Wall time in seconds.
    pub wall_secs: f64,
    /// Requests answered by each API host.
    pub hosts: BTreeMap<String, u64>,
    /// Which driver ran: `sequential` or `concurrent`.
    pub mode: String,
    /// Why the failsafe moved the rest of the work to the sequential driver, if it did.
    pub failsafe: Option<String>,
    /// Everything measured.
    pub metrics: MetricsReport,
}

/// A target that failed before any file was known.
#[derive(Clone, Debug, Serialize)]
pub struct TargetFailure {
    /// What the user asked for.
    pub target: String,
    /// Why it failed.
    pub reason: String,
}

impl RunReport {
    /// An empty report.
    pub fn new() -> RunReport {
        RunReport {
            version: SUMMARY_VERSION,
            ..RunReport::default()
        }
    }

    /// Count of model files (previews apart) with `status`.
    pub fn count(&self, status: FileStatus) -> usize {
        self.count_where(status, false)
    }

    pub fn count_where(&self, status: FileStatus, preview: bool) -> usize {
        self.files
            .iter()
            .filter(|f| f.status == status && f.preview == preview)
            .count()
    }

    /// Whether any model file failed or stayed unverified, or a target could not be planned.
    pub fn has_failures(&self) -> bool {
        !self.failed_targets.is_empty()
            || self.files.iter().any(|f| {
                !f.preview && matches!(f.status, FileStatus::Failed | FileStatus::Unverified)
            })
    }

    /// Bytes transferred in this run.
    pub fn transferred(&self) -> u64 {
        self.files.iter().map(|f| f.transferred).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(status: FileStatus, reason: Option<&str>) -> FileResult {
        FileResult::model_file(
            "model 1 file a".into(),
            PathBuf::from("a"),
            status,
            10,
            10,
            reason.map(str::to_string),
        )
    }

    #[test]
    fn clean_run_has_no_failures_and_versioned_json() {
        let mut report = RunReport::new();
        report.files.push(file(FileStatus::Present, None));
        assert!(!report.has_failures());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["version"], SUMMARY_VERSION);
        assert_eq!(json["files"][0]["status"], "present");
    }
}
