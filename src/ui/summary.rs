//! The final summary for people, on stderr (`--json` prints the same report as data).

use std::time::Duration;

use indicatif::{HumanBytes, HumanDuration};

use civitai_dl_engine::observe::report::{FileStatus, RunReport, StopReason};

/// The human summary: counts, bytes, time, speed, then each failure with its reason.
pub fn render(report: &RunReport) -> String {
    let wall = Duration::from_secs_f64(report.wall_secs);
    let bytes = report.transferred();
    let speed = if report.wall_secs > 0.0 {
        bytes as f64 / report.wall_secs
    } else {
        0.0
    };
    let mut out = format!(
        "{} downloaded, {} already present, {} failed, {} unverified; {} in {} ({}/s)",
        report.count(FileStatus::Downloaded),
        report.count(FileStatus::Present),
        report.count(FileStatus::Failed) + report.failed_targets.len(),
        report.count(FileStatus::Unverified),
        HumanBytes(bytes),
        HumanDuration(wall),
        HumanBytes(speed as u64),
    );
    if report.kept_in_parts > 0 {
        out.push_str(&format!(
            "; {} kept in .part files for the next run",
            HumanBytes(report.kept_in_parts)
        ));
    }
    if report.has_previews() {
        out.push_str(&format!(
            "; previews: {} downloaded, {} already present, {} failed",
            report.count_where(FileStatus::Downloaded, true),
            report.count_where(FileStatus::Present, true),
            report.count_where(FileStatus::Failed, true),
        ));
    }
    for failure in &report.failed_targets {
        // The reason names the model, version or creator it is about.
        out.push_str(&format!("\n  failed: {}", failure.reason));
    }
    for skipped in &report.skipped_versions {
        out.push_str(&format!("\n  skipped: {skipped}"));
    }
    for file in &report.files {
        let tag = match (file.status, file.preview) {
            (FileStatus::Failed, true) => "preview failed",
            (FileStatus::Failed, false) => "failed",
            (FileStatus::Unverified, _) => "unverified",
            _ => continue,
        };
        let reason = file.reason.as_deref().unwrap_or("");
        out.push_str(&format!("\n  {tag}: {}: {reason}", file.label));
    }
    if report.hosts.len() > 1 {
        let hosts: Vec<String> = report
            .hosts
            .iter()
            .map(|(host, n)| format!("{host} {n}"))
            .collect();
        out.push_str(&format!("\n  requests served by: {}", hosts.join(", ")));
    }
    if let Some(reason) = &report.failsafe {
        out.push_str(&format!(
            "\n  failsafe: switched to sequential downloads ({reason})"
        ));
    }
    match report.stopped {
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use civitai_dl_engine::observe::report::FileResult;

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
    fn summary_lists_failures_with_reasons() {
        let mut report = RunReport::new();
        report.push(file(FileStatus::Downloaded, None));
        report.push(file(FileStatus::Failed, Some("not found")));
        report.wall_secs = 2.0;
        let text = render(&report);
        assert!(
            text.starts_with("1 downloaded, 0 already present, 1 failed"),
            "{text}"
        );
        assert!(text.contains("failed: model 1 file a: not found"), "{text}");
        assert!(report.has_failures());
    }

    #[test]
    fn bytes_kept_for_the_next_run_are_in_the_summary() {
        let mut report = RunReport::new();
        report.kept_in_parts = 3 * 1024 * 1024;
        assert!(
            render(&report).contains("; 3.00 MiB kept in .part files for the next run"),
            "{}",
            render(&report)
        );
        assert!(!render(&RunReport::new()).contains("kept"));
    }

    #[test]
    fn a_failed_preview_is_listed_but_does_not_fail_the_run() {
        let mut report = RunReport::new();
        report.push(FileResult {
            preview: true,
            ..file(FileStatus::Failed, Some("gone"))
        });
        assert!(!report.has_failures());
        assert!(render(&report).contains("preview failed: model 1 file a: gone"));
    }
}
