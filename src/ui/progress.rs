//! Progress bars, progress lines, and the log writer that keeps bars from tearing. The bars
//! subscribe to the run as a [`Reporter`]: the engine reports planned targets and files and
//! transfers, this module draws them.
//!
//! Bars are drawn on stderr only when it is a terminal and neither `--no-progress` nor `-q` was
//! given. Otherwise every bar is hidden (indicatif then costs nothing) and progress comes as
//! plain lines a log can keep: while a long file transfers, one line per `--progress-interval`
//! (`x.safetensors: 512.00 MiB of 2.00 GiB (25 %), 41.00 MiB/s, ETA 37 s`), and for a long list,
//! where planning stands. A line every interval rather than at each quarter: on a 50 GiB file a
//! quarter can take an hour, and an unattended log should show the run is alive.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use civitai_dl_engine::observe::{Reporter, SavedFile, TransferProgress};

const FILE_TEMPLATE: &str =
    "{spinner:.green} {msg:40!} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} eta {eta:>4}";
/// Bytes over the known plan, this run's speed and the ETA; the message counts files.
const OVERALL_TEMPLATE: &str = "{prefix:.bold} [{wide_bar:.cyan/blue}] {bytes}/{total_bytes} \
    {bytes_per_sec} eta {eta}  {msg}";
const PLANNING_TEMPLATE: &str = "{prefix:.bold} [{wide_bar:.yellow/blue}] {pos}/{len} targets";
/// Planning is shown for lists at least this long; a few targets plan in a blink.
pub const PLANNING_SHOWN_FROM_TARGETS: u64 = 20;

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
    /// Without bars: how often a progress line is written (`None`: never).
    lines: Option<Duration>,
    planning: Arc<Planning>,
}

/// Model files planned and settled so far.
#[derive(Default)]
struct FileCounts {
    planned: AtomicU64,
    settled: AtomicU64,
}

/// How far planning a long list has come.
struct Planning {
    bar: ProgressBar,
    /// Targets to plan; 0 when planning is not shown.
    total: AtomicU64,
    done: AtomicU64,
    clock: Mutex<LineClock>,
}

/// When the last progress line was written, and what the speed counts from.
struct LineClock {
    since: Instant,
    from: u64,
    last_line: Instant,
}

impl LineClock {
    fn new(from: u64) -> LineClock {
        let now = Instant::now();
        LineClock {
            since: now,
            from,
            last_line: now,
        }
    }

    /// Whether a line is due (and if so, the clock counts from now).
    fn due(&mut self, every: Duration) -> bool {
        let now = Instant::now();
        if now.duration_since(self.last_line) < every {
            return false;
        }
        self.last_line = now;
        true
    }
}

impl Progress {
    /// Bars drawn on stderr (a terminal).
    pub fn bars() -> Progress {
        Progress::with_target(ProgressDrawTarget::stderr_with_hz(10), None)
    }

    /// No bars; a progress line per file each `every` while it transfers, if given.
    pub fn lines(every: Option<Duration>) -> Progress {
        Progress::with_target(ProgressDrawTarget::hidden(), every)
    }

    fn with_target(target: ProgressDrawTarget, lines: Option<Duration>) -> Progress {
        let multi = MultiProgress::with_draw_target(target);
        // Hidden until added to the bars: alone it would draw on stderr itself.
        let overall = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(OVERALL_TEMPLATE) {
            overall.set_style(style.progress_chars("=> "));
        }
        overall.set_prefix("total");
        let planning = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(PLANNING_TEMPLATE) {
            planning.set_style(style.progress_chars("=> "));
        }
        planning.set_prefix("planning");
        Progress {
            multi,
            overall,
            files: Arc::default(),
            shown: Arc::new(std::sync::Once::new()),
            lines,
            planning: Arc::new(Planning {
                bar: planning,
                total: AtomicU64::new(0),
                done: AtomicU64::new(0),
                clock: Mutex::new(LineClock::new(0)),
            }),
        }
    }

    /// The run will plan `targets` targets: a long list shows how planning goes (a bar, or a
    /// line now and one per interval).
    pub fn planning(&self, targets: u64) {
        if targets < PLANNING_SHOWN_FROM_TARGETS {
            return;
        }
        self.planning.total.store(targets, Ordering::Relaxed);
        *lock(&self.planning.clock) = LineClock::new(0);
        if self.multi.is_hidden() {
            if self.lines.is_some() {
                tracing::info!("planning {targets} targets");
            }
        } else {
            self.planning.bar.set_length(targets);
            self.multi.insert(0, self.planning.bar.clone());
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
        if !self.multi.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        FileBar {
            bar,
            overall: self.overall.clone(),
            lines: self.lines.map(|every| FileLines {
                name: name.to_string(),
                every,
                clock: Mutex::new(LineClock::new(0)),
            }),
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

    /// Remove every bar (before the final summary, also after Ctrl-C), so the summary is not
    /// printed under a bar frozen mid-way.
    pub fn finish(&self) {
        self.planning.bar.finish_and_clear();
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The progress of one file.
struct FileBar {
    bar: ProgressBar,
    overall: ProgressBar,
    lines: Option<FileLines>,
}

/// A file's progress lines, without bars.
struct FileLines {
    name: String,
    every: Duration,
    clock: Mutex<LineClock>,
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
        if let Some(lines) = &self.lines {
            *lock(&lines.clock) = LineClock::new(position);
        }
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        self.overall.inc(bytes);
        if let Some(lines) = &self.lines {
            let mut clock = lock(&lines.clock);
            if clock.due(lines.every) {
                let position = self.bar.position();
                let speed = (position.saturating_sub(clock.from)) as f64
                    / clock.since.elapsed().as_secs_f64().max(0.001);
                tracing::info!(
                    "{}",
                    transfer_line(&lines.name, position, self.bar.length(), speed)
                );
            }
        }
    }
}

/// `x.safetensors: 512.00 MiB of 2.00 GiB (25 %), 41.00 MiB/s, ETA 37 s`; the speed is this
/// run's bytes over this run's time, so the ETA does not count a resumed prefix as speed.
fn transfer_line(name: &str, position: u64, length: Option<u64>, speed: f64) -> String {
    let rate = HumanBytes(speed as u64);
    match length.filter(|&l| l > 0) {
        Some(length) => {
            let percent = position.saturating_mul(100) / length;
            let eta = if speed > 0.0 {
                format!(
                    ", ETA {}",
                    short_duration(length.saturating_sub(position) as f64 / speed)
                )
            } else {
                String::new()
            };
            format!(
                "{name}: {} of {} ({percent} %), {rate}/s{eta}",
                HumanBytes(position),
                HumanBytes(length)
            )
        }
        None => format!("{name}: {}, {rate}/s", HumanBytes(position)),
    }
}

/// `37 s`, `12 min 5 s`, `3 h 20 min`: a log line's ETA, short and rounded up.
fn short_duration(secs: f64) -> String {
    let secs = secs.ceil() as u64;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
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

    fn on_target_planned(&self) {
        let planning = &self.planning;
        let total = planning.total.load(Ordering::Relaxed);
        if total == 0 {
            return;
        }
        let done = planning.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.multi.is_hidden() {
            planning.bar.inc(1);
            if done >= total {
                planning.bar.finish_and_clear();
            }
            return;
        }
        let Some(every) = self.lines else {
            return;
        };
        let mut clock = lock(&planning.clock);
        if done >= total {
            tracing::info!(
                "planned {total} targets in {}",
                short_duration(clock.since.elapsed().as_secs_f64())
            );
        } else if clock.due(every) {
            tracing::info!("planning {done}/{total} targets");
        }
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
    fn a_transfer_line_says_how_far_how_fast_and_how_long_yet() {
        let mib = 1024 * 1024;
        assert_eq!(
            transfer_line(
                "x.safetensors",
                512 * mib,
                Some(2048 * mib),
                41.0 * mib as f64
            ),
            "x.safetensors: 512.00 MiB of 2.00 GiB (25 %), 41.00 MiB/s, ETA 38 s"
        );
        assert_eq!(
            transfer_line("x", 3 * mib, None, mib as f64),
            "x: 3.00 MiB, 1.00 MiB/s"
        );
        assert_eq!(
            transfer_line("x", 0, Some(mib), 0.0),
            "x: 0 B of 1.00 MiB (0 %), 0 B/s"
        );
        assert_eq!(short_duration(3725.0), "1 h 2 min");
        assert_eq!(short_duration(65.2), "1 min 6 s");
    }

    #[test]
    fn a_line_is_due_once_per_interval() {
        let mut clock = LineClock::new(0);
        assert!(!clock.due(Duration::from_secs(60)));
        assert!(clock.due(Duration::ZERO));
    }

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
