//! Progress bars, and the log writer that keeps them from tearing. The bars subscribe to the run
//! as a [`Reporter`]: the engine reports planned files and transfers, this module draws them.
//!
//! Bars are drawn on stderr only when it is a terminal and neither `--no-progress` nor `-q` was
//! given; otherwise every bar is hidden (indicatif then costs nothing) and logs are plain lines.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use civitai_dl_engine::observe::{Reporter, SavedFile, TransferProgress};

const FILE_TEMPLATE: &str =
    "{spinner:.green} {msg:40!} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} eta {eta:>4}";
/// Bytes over the known plan, this run's speed and the ETA; the message counts files.
const OVERALL_TEMPLATE: &str = "{prefix:.bold} [{wide_bar:.cyan/blue}] {bytes}/{total_bytes} \
    {bytes_per_sec} eta {eta}  {msg}";

/// The set of bars of a run: one per active file, and a total that appears once there is work.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    /// For the total's message.
    files: Arc<FileCounts>,
    /// Whether the total is on screen: not before planning found work, so an early error
    /// (a typo'd target, a wrong key) prints alone.
    shown: Arc<std::sync::Once>,
}

/// Model files planned and settled so far.
#[derive(Default)]
struct FileCounts {
    planned: AtomicU64,
    settled: AtomicU64,
}

impl Progress {
    /// Bars that draw on stderr when `visible`, or hidden ones.
    pub fn new(visible: bool) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        // Hidden until added to the bars: alone it would draw on stderr itself.
        let overall = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(OVERALL_TEMPLATE) {
            overall.set_style(style.progress_chars("=> "));
        }
        overall.set_prefix("total");
        Progress {
            multi,
            overall,
            files: Arc::default(),
            shown: Arc::new(std::sync::Once::new()),
        }
    }

    fn show_files(&self) {
        self.overall.set_message(format!(
            "{}/{} files",
            self.files.settled.load(Ordering::Relaxed),
            self.files.planned.load(Ordering::Relaxed)
        ));
    }

    /// A bar for one file transfer; it disappears when dropped.
    fn file(&self, name: &str) -> FileBar {
        let bar = if self.shown.is_completed() {
            self.multi
                .insert_before(&self.overall, ProgressBar::no_length())
        } else {
            self.multi.add(ProgressBar::no_length())
        };
        if let Ok(style) = ProgressStyle::with_template(FILE_TEMPLATE) {
            bar.set_style(style);
        }
        bar.set_message(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        FileBar {
            bar,
            overall: self.overall.clone(),
        }
    }

    /// Draw `bar` with the others, so log lines print above it; hidden when the bars are.
    pub fn add(&self, bar: ProgressBar) -> ProgressBar {
        self.multi.add(bar)
    }

    /// Print a line above the bars (the demo's introduction).
    #[cfg(feature = "dev-tools")]
    pub fn println(&self, line: &str) {
        if !self.multi.is_hidden() {
            let _ = self.multi.println(line);
        } else {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }

    /// Remove every bar (before the final summary).
    pub fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }

    /// A writer for log lines that suspends the bars while it writes.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter {
            multi: self.multi.clone(),
            buffer: Vec::new(),
        }
    }
}

/// The progress of one file.
struct FileBar {
    bar: ProgressBar,
    overall: ProgressBar,
}

impl TransferProgress for FileBar {
    fn set(&self, position: u64, total: Option<u64>) {
        match total {
            Some(total) => self.bar.set_length(total),
            None => self.bar.unset_length(),
        }
        self.bar.set_position(position);
        // What a resume starts from was not received now: the speed counts from here.
        self.bar.reset_eta();
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        self.overall.inc(bytes);
    }
}

impl Reporter for Progress {
    fn on_planned(&self, files: u64, bytes: u64) {
        if files == 0 {
            return;
        }
        self.shown.call_once(|| {
            self.multi.add(self.overall.clone());
        });
        self.files.planned.fetch_add(files, Ordering::Relaxed);
        self.overall.inc_length(bytes);
        self.show_files();
    }

    fn on_model_file_settled(&self, planned: u64, transferred: u64) {
        self.files.settled.fetch_add(1, Ordering::Relaxed);
        // The bytes this file will not bring after all (present, resumed, failed) leave the
        // plan, so the total and its ETA are about what is still to come.
        let unneeded = planned.saturating_sub(transferred);
        let length = self.overall.length().unwrap_or(0).saturating_sub(unneeded);
        self.overall.set_length(length.max(self.overall.position()));
        self.show_files();
    }

    fn on_transfer_start(&self, name: &str) -> Box<dyn TransferProgress> {
        Box::new(self.file(name))
    }

    /// One plain line per downloaded file, above the bars on a terminal, alone in a log.
    fn on_model_file_saved(&self, saved: &SavedFile) {
        tracing::info!("{}", saved_line(saved));
    }
}

/// `downloaded loras/x.safetensors, 144.00 MiB in 6.1 s (23.61 MiB/s), SHA-256 verified`: the
/// speed counts only the bytes received in this run.
fn saved_line(saved: &SavedFile) -> String {
    let secs = saved.elapsed.as_secs_f64().max(0.001);
    let resumed = if saved.transferred < saved.bytes {
        format!(
            ", {} kept from an earlier run",
            HumanBytes(saved.bytes - saved.transferred)
        )
    } else {
        String::new()
    };
    format!(
        "downloaded {}, {} in {:.1} s ({}/s{resumed}), {}",
        saved.path.display(),
        HumanBytes(saved.bytes),
        secs,
        HumanBytes((saved.transferred as f64 / secs) as u64),
        if saved.verified {
            "SHA-256 verified"
        } else {
            "no published SHA-256 to check"
        }
    )
}

impl Drop for FileBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Buffers one log event and writes it inside `MultiProgress::suspend`, so log lines appear
/// above the bars instead of through them.
pub struct LogWriter {
    multi: MultiProgress,
    buffer: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let buffer = std::mem::take(&mut self.buffer);
        self.multi.suspend(|| {
            let _ = std::io::stderr().write_all(&buffer);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_line_counts_only_this_runs_bytes_in_the_speed() {
        let saved = SavedFile {
            path: "models/loras/x.safetensors".into(),
            bytes: 4 * 1024 * 1024,
            transferred: 1024 * 1024,
            elapsed: Duration::from_secs(2),
            verified: true,
        };
        assert_eq!(
            saved_line(&saved),
            "downloaded models/loras/x.safetensors, 4.00 MiB in 2.0 s (512.00 KiB/s, 3.00 MiB \
             kept from an earlier run), SHA-256 verified"
        );
    }
}
