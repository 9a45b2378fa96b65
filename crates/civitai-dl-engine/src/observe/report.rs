//! What a run did: the data of the final summary and of `--json`. Rendering it for people is
//! the command line's job.
//!
//! The counts and bytes are totalled as files settle, so the report of a 100,000-file run needs
//! its 100,000 entries only when they are printed (`--json`): otherwise it keeps the entries
//! the summary lists, failures and unverified files ([`FileDetail`]; issue 9, item 6).

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

/// Which files' entries a report keeps; the counts cover every file either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileDetail {
    /// Every file's (for `--json`, which prints them all).
    #[default]
    Every,
    /// Only those the summary lists: failed and unverified files.
    Problems,
}

/// How many files ended each way, and the bytes they moved.
#[derive(Clone, Debug, Default)]
struct FileTotals {
    /// By [`FileStatus`] (in declaration order), for model files and for previews.
    model_files: [usize; 4],
    previews: [usize; 4],
    transferred: u64,
}

/// The whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    /// Layout version of this JSON.
    pub version: u32,
    /// Every file, in the order they finished; only failed and unverified ones when the report
    /// keeps [`FileDetail::Problems`]. Add to it with [`RunReport::push`], which counts.
    pub files: Vec<FileResult>,
    #[serde(skip)]
    totals: FileTotals,
    #[serde(skip)]
    detail: FileDetail,
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
    /// An empty report that keeps every file's entry.
    pub fn new() -> RunReport {
        RunReport::keeping(FileDetail::Every)
    }

    /// An empty report that keeps the entries `detail` says.
    pub fn keeping(detail: FileDetail) -> RunReport {
        RunReport {
            version: SUMMARY_VERSION,
            detail,
            ..RunReport::default()
        }
    }

    /// A file's outcome: counted, and kept when the report's [`FileDetail`] asks for it.
    pub fn push(&mut self, file: FileResult) {
        let counts = if file.preview {
            &mut self.totals.previews
        } else {
            &mut self.totals.model_files
        };
        counts[file.status as usize] += 1;
        self.totals.transferred += file.transferred;
        let problem = matches!(file.status, FileStatus::Failed | FileStatus::Unverified);
        if self.detail == FileDetail::Every || problem {
            self.files.push(file);
        }
    }

    /// Count of model files (previews apart) with `status`.
    pub fn count(&self, status: FileStatus) -> usize {
        self.count_where(status, false)
    }

    /// Count of previews (`preview`) or model files with `status`.
    pub fn count_where(&self, status: FileStatus, preview: bool) -> usize {
        let counts = if preview {
            &self.totals.previews
        } else {
            &self.totals.model_files
        };
        counts[status as usize]
    }

    /// Whether the run settled any preview, whatever became of it.
    pub fn has_previews(&self) -> bool {
        self.totals.previews.iter().any(|&n| n > 0)
    }

    /// Whether any model file failed or stayed unverified, or a target could not be planned.
    pub fn has_failures(&self) -> bool {
        !self.failed_targets.is_empty()
            || self.count(FileStatus::Failed) + self.count(FileStatus::Unverified) > 0
    }

    /// Bytes transferred in this run.
    pub fn transferred(&self) -> u64 {
        self.totals.transferred
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
        report.push(file(FileStatus::Present, None));
        assert!(!report.has_failures());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["version"], SUMMARY_VERSION);
        assert_eq!(json["files"][0]["status"], "present");
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            [
                "failed_targets",
                "failsafe",
                "files",
                "hosts",
                "kept_in_parts",
                "metrics",
                "mode",
                "skipped_versions",
                "stopped",
                "version",
                "wall_secs"
            ],
            "the totals are not part of the JSON"
        );
    }

    // Issue 9.6: the report of a 100,000-file rerun held 100,000 entries nobody printed.
    #[test]
    fn a_report_of_problems_counts_every_file_and_keeps_only_the_problems() {
        let mut report = RunReport::keeping(FileDetail::Problems);
        for _ in 0..1000 {
            report.push(file(FileStatus::Downloaded, None));
        }
        report.push(file(FileStatus::Failed, Some("gone")));
        report.push(FileResult {
            preview: true,
            ..file(FileStatus::Present, None)
        });
        assert_eq!(report.files.len(), 1);
        assert_eq!(report.files[0].reason.as_deref(), Some("gone"));
        assert_eq!(report.count(FileStatus::Downloaded), 1000);
        assert_eq!(report.count(FileStatus::Failed), 1);
        assert_eq!(report.count_where(FileStatus::Present, true), 1);
        assert!(report.has_previews() && report.has_failures());
        assert_eq!(report.transferred(), 1002 * 10);
    }
}
