//! What a run did, for the final summary (human, on stderr) and `--json` (on stdout).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{HumanBytes, HumanDuration};
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
    /// Why the run stopped early, if it did.
    pub stopped: Option<StopReason>,
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

    fn count_where(&self, status: FileStatus, preview: bool) -> usize {
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

    /// The human summary: counts, bytes, time, speed, then each failure with its reason.
    pub fn render(&self) -> String {
        let wall = Duration::from_secs_f64(self.wall_secs);
        let bytes = self.transferred();
        let speed = if self.wall_secs > 0.0 {
            bytes as f64 / self.wall_secs
        } else {
            0.0
        };
        let mut out = format!(
            "{} downloaded, {} already present, {} failed, {} unverified; {} in {} ({}/s)",
            self.count(FileStatus::Downloaded),
            self.count(FileStatus::Present),
            self.count(FileStatus::Failed) + self.failed_targets.len(),
            self.count(FileStatus::Unverified),
            HumanBytes(bytes),
            HumanDuration(wall),
            HumanBytes(speed as u64),
        );
        if self.files.iter().any(|f| f.preview) {
            out.push_str(&format!(
                "; previews: {} downloaded, {} already present, {} failed",
                self.count_where(FileStatus::Downloaded, true),
                self.count_where(FileStatus::Present, true),
                self.count_where(FileStatus::Failed, true),
            ));
        }
        for failure in &self.failed_targets {
            // The reason names the model, version or creator it is about.
            out.push_str(&format!("\n  failed: {}", failure.reason));
        }
        for file in &self.files {
            let tag = match (file.status, file.preview) {
                (FileStatus::Failed, true) => "preview failed",
                (FileStatus::Failed, false) => "failed",
                (FileStatus::Unverified, _) => "unverified",
                _ => continue,
            };
            let reason = file.reason.as_deref().unwrap_or("");
            out.push_str(&format!("\n  {tag}: {}: {reason}", file.label));
        }
        if self.hosts.len() > 1 {
            let hosts: Vec<String> = self
                .hosts
                .iter()
                .map(|(host, n)| format!("{host} {n}"))
                .collect();
            out.push_str(&format!("\n  requests served by: {}", hosts.join(", ")));
        }
        if let Some(reason) = &self.failsafe {
            out.push_str(&format!(
                "\n  failsafe: switched to sequential downloads ({reason})"
            ));
        }
        match self.stopped {
            Some(StopReason::EmergencyStop) => out.push_str(
                "\n  emergency stop: progress saved; remove the EMERGENCY_STOP file and rerun to \
                 continue",
            ),
            Some(StopReason::Interrupted) => {
                out.push_str("\n  interrupted: progress saved; rerun the same command to continue")
            }
            Some(StopReason::QuotaExhausted) => out.push_str(
                "\n  stopped: Civitai's 24-hour download quota is exhausted; progress saved; rerun \
                 the same command in a few hours to continue",
            ),
            None => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(status: FileStatus, reason: Option<&str>) -> FileResult {
        FileResult {
            label: "model 1 file a".into(),
            path: PathBuf::from("a"),
            status,
            bytes: 10,
            transferred: 10,
            reason: reason.map(str::to_string),
            preview: false,
        }
    }

    #[test]
    fn summary_lists_failures_with_reasons() {
        let mut report = RunReport::new();
        report.files.push(file(FileStatus::Downloaded, None));
        report
            .files
            .push(file(FileStatus::Failed, Some("not found")));
        report.wall_secs = 2.0;
        let text = report.render();
        assert!(
            text.starts_with("1 downloaded, 0 already present, 1 failed"),
            "{text}"
        );
        assert!(text.contains("failed: model 1 file a: not found"), "{text}");
        assert!(report.has_failures());
    }

    #[test]
    fn a_failed_preview_is_listed_but_does_not_fail_the_run() {
        let mut report = RunReport::new();
        report.files.push(FileResult {
            preview: true,
            ..file(FileStatus::Failed, Some("gone"))
        });
        assert!(!report.has_failures());
        assert!(
            report
                .render()
                .contains("preview failed: model 1 file a: gone")
        );
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
