//! What `scan` and `verify` show. They subscribe to the library's events as one [`LibraryView`]:
//! a bar on a terminal (files hashed, bytes, speed, ETA), problems as log lines above it, and on
//! stdout either NDJSON events as they happen (`--json`) or, for people, a table (`scan`, at the
//! end, sorted by path) or one line per verdict (`verify`, as they come).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use crate::ui::output;
use crate::ui::progress::Progress;
use civitai_dl_library::identify::{Identified, IdentifyReporter};
use civitai_dl_library::index::{Identity, MatchedBy};
use civitai_dl_library::scan::{HashSource, ScanProblem, ScanReporter, ScanSummary, ScannedFile};
use civitai_dl_library::verify::{Checked, ExpectedFrom, Verdict, VerifyReporter, VerifySummary};

/// Bytes over what needs reading, this run's speed and the ETA; the message counts files.
const HASH_TEMPLATE: &str = "{prefix:.bold} [{wide_bar:.cyan/blue}] {bytes}/{total_bytes} \
    {bytes_per_sec} eta {eta}  {msg}";

/// Hex digits of a SHA-256 in the table: enough to tell files apart by eye (AutoV2's length).
const SHORT_SHA_DIGITS: usize = 10;

/// The subscriber of one `scan` or `verify` run.
pub struct LibraryView {
    bar: ProgressBar,
    progress: Progress,
    json: bool,
    /// Files done, kept for the table at the end (people only).
    table: Mutex<Vec<ScannedFile>>,
    to_hash: AtomicU64,
    hashed: AtomicU64,
}

impl LibraryView {
    /// A view whose bar sits with `progress`'s (hidden when they are).
    pub fn new(progress: &Progress, json: bool) -> LibraryView {
        // Hidden until there is something to hash: a warm rescan or an early error draws no bar.
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(HASH_TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix("hashing");
        LibraryView {
            bar,
            progress: progress.clone(),
            json,
            table: Mutex::new(Vec::new()),
            to_hash: AtomicU64::new(0),
            hashed: AtomicU64::new(0),
        }
    }

    /// Print on stdout without tearing the bar; a closed pipe ends the output quietly.
    fn print(&self, line: impl std::fmt::Display) {
        self.bar.suspend(|| {
            // A write error other than a closed pipe (a full disk behind a redirect) would
            // repeat for every line; the summary's exit code still says how the work went.
            let _ = output::line(line);
        });
    }

    fn event(&self, value: serde_json::Value) {
        self.print(value);
    }

    fn show_counts(&self) {
        self.bar.set_message(format!(
            "{}/{} files",
            self.hashed.load(Ordering::Relaxed),
            self.to_hash.load(Ordering::Relaxed)
        ));
    }

    /// Remove the bar (before the summary).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Every scanned file with what identification knows of it (from `identity`), sorted by
    /// path: a table for people, one `identity` event per file with `--json`.
    pub fn print_table(&self, identity: impl Fn(&Path) -> Option<Identity>) -> std::io::Result<()> {
        let mut rows = std::mem::take(&mut *lock(&self.table));
        rows.sort_by(|a, b| a.path.cmp(&b.path));
        if rows.is_empty() {
            return Ok(());
        }
        if self.json {
            for row in &rows {
                let known = identity(&row.path).unwrap_or_default();
                let mut event = tagged("identity", &known);
                event["path"] = json!(row.path);
                output::line(event)?;
            }
            return Ok(());
        }
        output::line(format_args!(
            "{:>10}  {:<10}  {:<12}  {:<6}  {:<9}  {:<22}  PATH",
            "SIZE", "SHA256", "AUTOV3", "SOURCE", "STATUS", "MODEL/VERSION"
        ))?;
        for row in &rows {
            output::line(table_row(row, &identity(&row.path).unwrap_or_default()))?;
        }
        Ok(())
    }
}

/// A panic on a hashing thread must not cost the rows already listed.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn table_row(file: &ScannedFile, identity: &Identity) -> String {
    let status = match identity.matched_by {
        Some(MatchedBy::Autov3) => "autov3",
        Some(MatchedBy::Sidecar) => "sidecar",
        _ => identity.status.as_str(),
    };
    format!(
        "{:>10}  {:<10}  {:<12}  {:<6}  {:<9}  {:<22}  {}",
        HumanBytes(file.size).to_string(),
        file.sha256.get(..SHORT_SHA_DIGITS).unwrap_or(&file.sha256),
        file.autov3.as_deref().unwrap_or("-"),
        source_word(file.source),
        status,
        what_it_is(identity),
        file.path.display()
    )
}

/// `12/130 Model name (v1.0)`, or `-` for a file not matched.
fn what_it_is(identity: &Identity) -> String {
    let (Some(model), Some(version)) = (identity.model_id, identity.version_id) else {
        return "-".to_owned();
    };
    let mut text = format!("{model}/{version}");
    if let Some(name) = &identity.model_name {
        text.push(' ');
        text.push_str(name);
    }
    if let Some(name) = &identity.version_name {
        text.push_str(&format!(" ({name})"));
    }
    text
}

fn source_word(source: HashSource) -> &'static str {
    match source {
        HashSource::Cached => "cached",
        HashSource::Hashed => "hashed",
    }
}

impl ScanReporter for LibraryView {
    fn on_walked(&self, files: u64, to_hash: u64, bytes_to_hash: u64) {
        if self.json {
            self.event(
                json!({"event": "walked", "files": files, "to_hash": to_hash,
                "bytes_to_hash": bytes_to_hash}),
            );
        }
        self.to_hash.store(to_hash, Ordering::Relaxed);
        if to_hash > 0 {
            self.bar.set_length(bytes_to_hash);
            self.bar.reset_eta();
            self.show_counts();
            self.progress.add(self.bar.clone());
            self.bar.enable_steady_tick(Duration::from_millis(200));
        }
    }

    fn on_bytes_hashed(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn on_file_done(&self, file: &ScannedFile) {
        if file.source == HashSource::Hashed {
            self.hashed.fetch_add(1, Ordering::Relaxed);
            self.show_counts();
        }
        if self.json {
            self.event(tagged("file", file));
        }
        lock(&self.table).push(file.clone());
    }

    fn on_problem(&self, problem: &ScanProblem) {
        if problem.is_error() {
            tracing::error!("{problem}");
        } else {
            tracing::warn!("{problem}");
        }
        if self.json {
            self.event(json!({"event": "problem", "path": problem.path(),
                "message": problem.to_string(), "error": problem.is_error()}));
        }
    }
}

impl IdentifyReporter for LibraryView {
    fn on_identified(&self, file: &Identified) {
        // One line in the summary says why lookups failed; per file it is detail.
        if let Some(reason) = &file.reason {
            tracing::debug!("{}: pending: {reason}", file.path.display());
        }
        if self.json {
            self.event(tagged("identified", file));
        }
    }
}

impl VerifyReporter for LibraryView {
    fn on_verdict(&self, checked: &Checked) {
        if let Some(note) = &checked.note {
            tracing::warn!("{note}");
        }
        if self.json {
            self.event(tagged("verdict", checked));
        } else {
            self.print(verdict_line(checked));
        }
    }
}

/// `{"event": <name>, ...fields of value}`.
fn tagged(name: &str, value: &impl Serialize) -> serde_json::Value {
    let mut object = json!({"event": name});
    if let (Some(map), Ok(serde_json::Value::Object(fields))) =
        (object.as_object_mut(), serde_json::to_value(value))
    {
        map.extend(fields);
    }
    object
}

/// `mismatch           models/x.safetensors (SHA-256 ABC…, published DEF…) -> quarantine/…`.
fn verdict_line(checked: &Checked) -> String {
    let detail = match checked.verdict {
        Verdict::OkTensor => " (header edited, weights intact: AutoV3 matches)".to_string(),
        Verdict::Mismatch => format!(
            " (SHA-256 {}, published {})",
            short(checked.sha256.as_deref()),
            short(
                checked
                    .expected_sha256
                    .as_deref()
                    .or(checked.expected_autov3.as_deref())
            )
        ),
        Verdict::Unknown => {
            " (no .civitai.info lists it, and no scan matched it on Civitai)".to_string()
        }
        Verdict::NoPublishedHash => " (its .civitai.info has no hash for it)".to_string(),
        Verdict::Ok | Verdict::Missing => String::new(),
    };
    let from = match checked.expected_from {
        Some(ExpectedFrom::Api) => " (published hash from Civitai)",
        _ => "",
    };
    let moved = checked
        .quarantined_to
        .as_ref()
        .map(|to| format!(" -> moved to {}", to.display()))
        .unwrap_or_default();
    format!(
        "{:<17}  {}{detail}{from}{moved}",
        checked.verdict.as_str(),
        checked.path.display()
    )
}

fn short(hex: Option<&str>) -> &str {
    hex.map_or("none", |h| h.get(..SHORT_SHA_DIGITS).unwrap_or(h))
}

/// `3 files: 1 hashed (1.00 GiB in 2s, 500 MiB/s), 2 from the cache, 0 errors, 1 pruned`.
pub fn scan_summary(summary: &ScanSummary, elapsed: Duration, index: &Path) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let mut text = format!(
        "{} files: {} hashed ({} in {:.1} s, {}/s), {} from the cache, {} errors, {} pruned; index {}",
        summary.files,
        summary.hashed,
        HumanBytes(summary.bytes_hashed),
        secs,
        HumanBytes((summary.bytes_hashed as f64 / secs) as u64),
        summary.reused,
        summary.errors,
        summary.pruned,
        index.display()
    );
    if summary.stopped {
        text.push_str("\n  interrupted: every finished hash is kept; rerun to continue");
    }
    text
}

/// `6 files: 3 ok, 1 ok-tensor, 1 mismatch (1 quarantined), …`.
pub fn verify_summary(summary: &VerifySummary) -> String {
    let mut text = format!(
        "{} files: {} ok, {} ok-tensor, {} mismatch, {} no-published-hash, {} unknown, {} missing",
        summary.files,
        summary.ok,
        summary.ok_tensor,
        summary.mismatch,
        summary.no_published_hash,
        summary.unknown,
        summary.missing
    );
    if summary.quarantined > 0 {
        text.push_str(&format!("; {} moved to quarantine", summary.quarantined));
    }
    if summary.errors > 0 {
        text.push_str(&format!("; {} errors", summary.errors));
    }
    if summary.stopped {
        text.push_str("\n  interrupted: not every file was checked");
    }
    text
}

/// The final NDJSON line: `{"event": "summary", ...}`.
pub fn summary_event(summary: &impl Serialize, extra: serde_json::Value) -> serde_json::Value {
    let mut event = tagged("summary", summary);
    if let (Some(map), serde_json::Value::Object(fields)) = (event.as_object_mut(), extra) {
        map.extend(fields);
    }
    event
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_table_row_has_fixed_columns_then_the_path() {
        let file = ScannedFile {
            path: PathBuf::from("/m/a.safetensors"),
            size: 2048,
            sha256: "0123456789ABCDEF".into(),
            autov3: None,
            source: HashSource::Cached,
        };
        assert_eq!(
            table_row(&file, &Identity::default()),
            "  2.00 KiB  0123456789  -             cached  pending    -                       \
             /m/a.safetensors"
        );
        let found = Identity {
            status: civitai_dl_library::index::MatchStatus::Matched,
            matched_by: Some(MatchedBy::Autov3),
            model_id: Some(12),
            version_id: Some(130),
            file_id: Some(1300),
            model_name: Some("Ink".into()),
            version_name: Some("v1.0".into()),
        };
        assert_eq!(
            table_row(&file, &found),
            "  2.00 KiB  0123456789  -             cached  autov3     12/130 Ink (v1.0)       \
             /m/a.safetensors"
        );
    }

    #[test]
    fn a_mismatch_line_shows_both_hashes_and_where_it_went() {
        let line = verdict_line(&Checked {
            path: PathBuf::from("/m/x.ckpt"),
            verdict: Verdict::Mismatch,
            sha256: Some("AAAAAAAAAAAAAAAA".into()),
            autov3: None,
            expected_sha256: Some("BBBBBBBBBBBBBBBB".into()),
            expected_autov3: None,
            expected_from: None,
            source: Some(HashSource::Hashed),
            quarantined_to: Some(PathBuf::from("/m/.civitai-dl/quarantine/x.ckpt")),
            note: None,
        });
        assert_eq!(
            line,
            "mismatch           /m/x.ckpt (SHA-256 AAAAAAAAAA, published BBBBBBBBBB) -> moved to \
             /m/.civitai-dl/quarantine/x.ckpt"
        );
    }

    #[test]
    fn events_carry_their_name_and_fields() {
        let event = summary_event(&VerifySummary::default(), json!({"index": "/i"}));
        assert_eq!(event["event"], "summary");
        assert_eq!(event["ok-tensor"], 0);
        assert_eq!(event["index"], "/i");
    }
}
