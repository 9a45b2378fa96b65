//! The performance monitor: watches a run while it is active.
//!
//! [`crate::observe::metrics`] counts what happens; this module adds what only shows over time. A sampler
//! reads the process's memory and CPU time once a second (so the summary has peak memory and CPU
//! use even without monitoring); every report interval the counters are compared with the previous
//! interval's, giving the current throughput and the error and timeout rates of that window,
//! which are judged by the same rate limits as the failsafe ([`crate::observe::rates`]). With `--monitor-performance` each
//! interval also logs one compact line (through tracing, so the progress bars stay intact) and
//! rewrites `--metrics-json`, so a long run can be watched from outside.
//!
//! Resource figures come from `/proc/self/status` (VmRSS, and VmHWM: the kernel's own high-water
//! mark, which catches spikes between readings) and `/proc/self/stat` (utime + stime). Elsewhere
//! those files do not exist and the figures stay absent (`null` in the JSON) rather than guessed;
//! nothing else depends on them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fs::{Durability, WriteError, write_atomic};
use crate::observe::metrics::{
    Alert, AlertKind, Counters, Metrics, MetricsReport, ProcessSample, ratio,
};
use crate::observe::rates::{RateKind, RateLimits};

/// Seconds between monitor lines when neither the flag nor the config file says otherwise.
pub const DEFAULT_REPORT_INTERVAL_SECS: u64 = 60;
/// How often memory and CPU time are read.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Linux reports CPU time in ticks of USER_HZ, which the kernel fixes at 100 for user space on
/// every mainstream architecture (whatever its internal HZ).
const USER_HZ: u64 = 100;
pub const MIB: u64 = 1024 * 1024;

/// When to raise an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertThresholds {
    /// Error and timeout rates above which to alert, and the attempts they need.
    pub rates: RateLimits,
    /// Peak resident memory, bytes, above which to alert.
    pub memory_bytes: u64,
    /// The expected throughput, MB/s; no throughput alert without one.
    pub baseline_throughput: Option<f64>,
    /// Alert when throughput is more than this fraction below the baseline.
    pub throughput_drop: f64,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            rates: RateLimits::default(),
            memory_bytes: 1024 * MIB,
            baseline_throughput: None,
            throughput_drop: 0.10,
        }
    }
}

/// What the monitor does (the command line resolves it from the config file and the flags).
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorOptions {
    /// Log a line per interval (`--monitor-performance`).
    pub print: bool,
    /// Time between lines and alert checks.
    pub interval: Duration,
    /// Where to write the figures (`--metrics-json`).
    pub metrics_json: Option<PathBuf>,
    /// Alert thresholds.
    pub alerts: AlertThresholds,
}

/// Read the process's memory and CPU time (absent figures where the OS has no `/proc`).
pub fn read_process_sample() -> ProcessSample {
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    ProcessSample {
        rss_bytes: status.as_deref().and_then(|s| status_bytes(s, "VmRSS")),
        peak_rss_bytes: status.as_deref().and_then(|s| status_bytes(s, "VmHWM")),
        cpu_time: stat.as_deref().and_then(cpu_time),
    }
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`, in bytes.
pub fn status_bytes(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let kib = value
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kib * 1024)
    })
}

/// User plus system CPU time from `/proc/<pid>/stat`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from its closing parenthesis: utime and stime are the
/// 12th and 13th after it.
pub fn cpu_time(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// The figures of one report interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Bytes written over the interval's wall time, MB/s (10^6 bytes).
    pub throughput_mb_per_sec: f64,
    /// Request attempts in the interval.
    pub attempts: u64,
    /// Failed attempts over attempts in the interval.
    pub error_rate: f64,
    /// Timed-out attempts over attempts in the interval.
    pub timeout_rate: f64,
}

impl Window {
    /// The difference between two readings of the counters taken `elapsed` apart.
    pub fn between(before: &Counters, after: &Counters, elapsed: Duration) -> Window {
        let attempts = after.attempts.saturating_sub(before.attempts);
        let bytes = after.bytes.saturating_sub(before.bytes);
        Window {
            throughput_mb_per_sec: if elapsed.is_zero() {
                0.0
            } else {
                bytes as f64 / 1e6 / elapsed.as_secs_f64()
            },
            attempts,
            error_rate: ratio(after.failures.saturating_sub(before.failures), attempts),
            timeout_rate: ratio(after.timeouts.saturating_sub(before.timeouts), attempts),
        }
    }
}

/// The monitor's line for one interval.
pub fn monitor_line(window: &Window, now: &Counters, rss_bytes: Option<u64>) -> String {
    let rss = rss_bytes.map_or_else(
        || "n/a".to_string(),
        |bytes| format!("{:.1} MiB", bytes as f64 / MIB as f64),
    );
    format!(
        "monitor: {:.2} MB/s, {} active, {} queued, errors {:.1}% timeouts {:.1}% of {} attempts, \
         RSS {rss}",
        window.throughput_mb_per_sec,
        now.active_files,
        now.queued_files,
        window.error_rate * 100.0,
        window.timeout_rate * 100.0,
        window.attempts,
    )
}

/// What the alerts judge: an interval's figures, or the whole run's at its end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// Attempts the rates are computed over.
    pub attempts: u64,
    /// Failed attempts over attempts.
    pub error_rate: f64,
    /// Timed-out attempts over attempts.
    pub timeout_rate: f64,
    /// Peak resident memory, bytes, if known.
    pub peak_rss_bytes: Option<u64>,
    /// Throughput, MB/s, when it is meaningful (downloads were running).
    pub throughput_mb_per_sec: Option<f64>,
}

impl Observation {
    /// An interval's figures. Throughput is judged only when downloads ran at both ends of the
    /// interval: a window spent planning or idle at the end says nothing about the link.
    pub fn of_window(
        window: &Window,
        before: &Counters,
        after: &Counters,
        peak_rss_bytes: Option<u64>,
    ) -> Observation {
        Observation {
            attempts: window.attempts,
            error_rate: window.error_rate,
            timeout_rate: window.timeout_rate,
            peak_rss_bytes,
            throughput_mb_per_sec: (before.active_files > 0 && after.active_files > 0)
                .then_some(window.throughput_mb_per_sec),
        }
    }

    /// The whole run's figures; throughput is all bytes over wall time, judged when any bytes
    /// moved.
    pub fn of_run(report: &MetricsReport) -> Observation {
        Observation {
            attempts: report.attempts,
            error_rate: report.error_rate,
            timeout_rate: ratio(report.timeouts, report.attempts),
            peak_rss_bytes: report.resources.peak_rss_bytes,
            throughput_mb_per_sec: (report.bytes > 0).then_some(report.speed_mb_per_sec.overall),
        }
    }
}

/// The alerts whose condition holds for `seen`.
pub fn evaluate(thresholds: &AlertThresholds, seen: &Observation) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = thresholds
        .rates
        .breaches(seen.attempts, seen.error_rate, seen.timeout_rate)
        .into_iter()
        .map(|breach| Alert {
            kind: match breach.kind {
                RateKind::Error => AlertKind::ErrorRate,
                RateKind::Timeout => AlertKind::TimeoutRate,
            },
            message: breach.to_string(),
            value: breach.value,
            threshold: breach.limit,
        })
        .collect();
    if let Some(peak) = seen.peak_rss_bytes
        && peak > thresholds.memory_bytes
    {
        alerts.push(Alert {
            kind: AlertKind::Memory,
            message: format!(
                "memory: peak RSS {} MiB is above {} MiB",
                peak / MIB,
                thresholds.memory_bytes / MIB
            ),
            value: peak as f64,
            threshold: thresholds.memory_bytes as f64,
        });
    }
    if let (Some(speed), Some(baseline)) =
        (seen.throughput_mb_per_sec, thresholds.baseline_throughput)
    {
        let floor = baseline * (1.0 - thresholds.throughput_drop);
        if speed < floor {
            alerts.push(Alert {
                kind: AlertKind::Throughput,
                message: format!(
                    "throughput {speed:.2} MB/s is more than {:.0}% below the baseline of \
                     {baseline:.2} MB/s",
                    thresholds.throughput_drop * 100.0
                ),
                value: speed,
                threshold: floor,
            });
        }
    }
    alerts
}

/// Judge `seen` and warn about each alert that just started.
fn raise_alerts(metrics: &Metrics, thresholds: &AlertThresholds, seen: &Observation) {
    for alert in metrics.update_alerts(evaluate(thresholds, seen)) {
        tracing::warn!("alert: {}", alert.message);
    }
}

/// The metrics file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MetricsFileError {
    /// The figures could not be turned into JSON.
    #[error("cannot encode the metrics as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    /// The file could not be written.
    #[error("cannot write the metrics file {}: {source}", path.display())]
    Write { path: PathBuf, source: WriteError },
}

/// Write `report` to `path` as pretty JSON, atomically, so a reader polling the file during a run
/// never sees half of it. Replace, not Durable: it is rewritten every interval, and after a power
/// cut the previous figures are as good as any.
pub async fn write_metrics_json(
    path: &Path,
    report: &MetricsReport,
) -> Result<(), MetricsFileError> {
    let bytes = serde_json::to_vec_pretty(report)?;
    write_atomic(path, bytes, Durability::Replace)
        .await
        .map_err(|source| MetricsFileError::Write {
            path: path.to_path_buf(),
            source,
        })
}

async fn save_logged(path: &Path, report: &MetricsReport) {
    if let Err(error) = write_metrics_json(path, report).await {
        tracing::error!("{error}");
    }
}

/// The monitor of one run: a sampler and an interval reporter, running until [`Monitor::stop`].
pub struct Monitor {
    metrics: Arc<Metrics>,
    options: MonitorOptions,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Monitor {
    /// Start sampling and reporting (call inside the run's Tokio runtime).
    pub fn start(metrics: Arc<Metrics>, options: MonitorOptions) -> Monitor {
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(sample(metrics.clone(), stop.clone())),
            tokio::spawn(report(metrics.clone(), options.clone(), stop.clone())),
        ];
        Monitor {
            metrics,
            options,
            stop,
            tasks,
        }
    }

    /// Stop both tasks, take a last reading and judge the whole run against the thresholds.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            if let Err(error) = task.await {
                tracing::debug!("monitor task ended abnormally: {error}");
            }
        }
        self.metrics
            .record_resources(read_process_sample(), Instant::now());
        raise_alerts(
            &self.metrics,
            &self.options.alerts,
            &Observation::of_run(&self.metrics.report()),
        );
    }

    /// Write the final figures to `--metrics-json`, if given. A failure is returned: the
    /// downloads are done, but whatever reads the file would go on with stale figures, so the
    /// caller fails the run.
    pub async fn save(&self, report: &MetricsReport) -> Result<(), MetricsFileError> {
        match &self.options.metrics_json {
            Some(path) => write_metrics_json(path, report).await,
            None => Ok(()),
        }
    }
}

/// Read memory and CPU time every [`SAMPLE_INTERVAL`], starting at once.
async fn sample(metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        metrics.record_resources(read_process_sample(), Instant::now());
    }
}

/// Every interval: judge the window's figures, and when monitoring, log a line and rewrite the
/// metrics file.
async fn report(metrics: Arc<Metrics>, options: MonitorOptions, stop: CancellationToken) {
    let start = tokio::time::Instant::now() + options.interval;
    let mut ticker = tokio::time::interval_at(start, options.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before = metrics.counters();
    let mut since = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let after = metrics.counters();
        let window = Window::between(&before, &after, since.elapsed());
        let resources = metrics.resources();
        if options.print {
            tracing::info!("{}", monitor_line(&window, &after, resources.rss_bytes));
        }
        let seen = Observation::of_window(&window, &before, &after, resources.peak_rss_bytes);
        raise_alerts(&metrics, &options.alerts, &seen);
        if options.print
            && let Some(path) = &options.metrics_json
        {
            save_logged(path, &metrics.report()).await;
        }
        before = after;
        since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Reporter;

    const STATUS: &str = "Name:\tcivitai-dl\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\n\
                          VmRSS:\t   40960 kB\nThreads:\t4\n";

    #[test]
    fn status_lines_in_bytes() {
        let cases = [
            ("VmRSS", Some(40960 * 1024)),
            ("VmHWM", Some(51200 * 1024)),
            ("VmSwap", None),
            ("Threads", None),
            ("Vm", None),
        ];
        for (key, expected) in cases {
            assert_eq!(status_bytes(STATUS, key), expected, "{key}");
        }
    }

    #[test]
    fn cpu_time_counts_fields_after_the_command_name() {
        let tail = "S 1 7 7 0 -1 4194304 1000 0 0 0 250 50 0 0 20 0 4 0 123";
        let cases = [
            (format!("7 (civitai-dl) {tail}"), Some(3000)),
            (format!("7 (a) b (c)) {tail}"), Some(3000)),
            ("7 (civitai-dl) S 1 7".to_string(), None),
            ("garbage".to_string(), None),
        ];
        for (stat, expected_ms) in cases {
            assert_eq!(
                cpu_time(&stat),
                expected_ms.map(Duration::from_millis),
                "{stat}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_memory_and_cpu_figures_on_linux() {
        let sample = read_process_sample();
        let rss = sample.rss_bytes.expect("VmRSS on Linux");
        assert!(rss > 0);
        assert!(sample.peak_rss_bytes.expect("VmHWM on Linux") >= rss);
        assert!(sample.cpu_time.is_some());
    }

    fn counters(bytes: u64, attempts: u64, failures: u64, timeouts: u64) -> Counters {
        Counters {
            bytes,
            attempts,
            failures,
            timeouts,
            active_files: 2,
            queued_files: 5,
        }
    }

    #[test]
    fn a_window_is_the_difference_of_two_readings() {
        let before = counters(1_000_000, 10, 1, 0);
        let after = counters(5_000_000, 30, 3, 1);
        let window = Window::between(&before, &after, Duration::from_secs(2));
        assert_eq!(window.throughput_mb_per_sec, 2.0);
        assert_eq!(window.attempts, 20);
        assert!((window.error_rate - 0.1).abs() < 1e-12);
        assert!((window.timeout_rate - 0.05).abs() < 1e-12);
        let idle = Window::between(&after, &after, Duration::ZERO);
        assert_eq!(
            (idle.throughput_mb_per_sec, idle.attempts, idle.error_rate),
            (0.0, 0, 0.0)
        );
    }

    #[test]
    fn monitor_line_is_compact_and_complete() {
        let window = Window {
            throughput_mb_per_sec: 12.345,
            attempts: 40,
            error_rate: 0.025,
            timeout_rate: 0.0,
        };
        let line = monitor_line(&window, &counters(0, 0, 0, 0), Some(48 * MIB + MIB / 2));
        assert_eq!(
            line,
            "monitor: 12.35 MB/s, 2 active, 5 queued, errors 2.5% timeouts 0.0% of 40 \
             attempts, RSS 48.5 MiB"
        );
        let line = monitor_line(&window, &counters(0, 0, 0, 0), None);
        assert!(line.ends_with("RSS n/a"), "{line}");
    }

    fn seen(attempts: u64, errors: f64, timeouts: f64, peak_mib: u64, mbps: f64) -> Observation {
        Observation {
            attempts,
            error_rate: errors,
            timeout_rate: timeouts,
            peak_rss_bytes: Some(peak_mib * MIB),
            throughput_mb_per_sec: Some(mbps),
        }
    }

    #[test]
    fn alerts_at_the_default_thresholds() {
        let thresholds = AlertThresholds {
            baseline_throughput: Some(10.0),
            ..AlertThresholds::default()
        };
        use AlertKind::*;
        let cases: [(&str, Observation, &[AlertKind]); 9] = [
            ("healthy", seen(100, 0.05, 0.01, 1024, 9.0), &[]),
            ("errors", seen(100, 0.06, 0.0, 10, 10.0), &[ErrorRate]),
            ("timeouts", seen(100, 0.02, 0.02, 10, 10.0), &[TimeoutRate]),
            ("too few attempts", seen(19, 0.5, 0.5, 10, 10.0), &[]),
            ("no attempts", seen(0, 0.0, 0.0, 10, 10.0), &[]),
            ("memory", seen(100, 0.0, 0.0, 1025, 10.0), &[Memory]),
            ("slow", seen(100, 0.0, 0.0, 10, 8.9), &[Throughput]),
            (
                "everything",
                seen(100, 0.5, 0.5, 2048, 1.0),
                &[ErrorRate, TimeoutRate, Memory, Throughput],
            ),
            (
                "unknown memory and speed",
                Observation {
                    peak_rss_bytes: None,
                    throughput_mb_per_sec: None,
                    ..seen(100, 0.0, 0.0, 0, 0.0)
                },
                &[],
            ),
        ];
        for (name, observation, expected) in cases {
            let kinds: Vec<AlertKind> = evaluate(&thresholds, &observation)
                .iter()
                .map(|a| a.kind)
                .collect();
            assert_eq!(kinds, expected, "{name}");
        }
        let no_baseline = AlertThresholds::default();
        assert!(evaluate(&no_baseline, &seen(100, 0.0, 0.0, 10, 0.1)).is_empty());
    }

    #[test]
    fn alert_values_and_thresholds_share_a_unit() {
        let thresholds = AlertThresholds {
            baseline_throughput: Some(10.0),
            ..AlertThresholds::default()
        };
        let alerts = evaluate(&thresholds, &seen(50, 0.1, 0.0, 2048, 4.0));
        let error = &alerts[0];
        assert_eq!((error.value, error.threshold), (0.1, 0.05));
        assert_eq!(
            error.message,
            "error rate 10.0% over 50 attempts is above 5.0%"
        );
        assert_eq!(alerts[1].value, (2048 * MIB) as f64);
        assert_eq!((alerts[2].value, alerts[2].threshold), (4.0, 9.0));
    }

    #[test]
    fn throughput_is_judged_only_while_downloads_run() {
        let window = Window {
            throughput_mb_per_sec: 0.0,
            attempts: 0,
            error_rate: 0.0,
            timeout_rate: 0.0,
        };
        let busy = counters(0, 0, 0, 0);
        let idle = Counters {
            active_files: 0,
            ..busy
        };
        let judged = |before, after| {
            Observation::of_window(&window, before, after, None).throughput_mb_per_sec
        };
        assert_eq!(judged(&busy, &busy), Some(0.0));
        assert_eq!(judged(&idle, &busy), None);
        assert_eq!(judged(&busy, &idle), None);
    }

    #[tokio::test]
    async fn metrics_file_is_versioned_json_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        std::fs::write(&path, "stale").unwrap();
        let metrics = Metrics::new();
        metrics.on_planned(2, 0);
        write_metrics_json(&path, &metrics.report()).await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["version"], crate::observe::metrics::METRICS_VERSION);
        assert_eq!(json["files_planned"], 2);
        assert!(json["resources"]["peak_rss_bytes"].is_null());
        assert!(json["alerts"].as_array().is_some_and(Vec::is_empty));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["metrics.json"], "no temporary file is left behind");
        let blocked = dir.path().join("metrics.json").join("inside.json");
        assert!(
            write_metrics_json(&blocked, &metrics.report())
                .await
                .is_err()
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn stopping_samples_once_more_and_judges_the_whole_run() {
        let metrics = Arc::new(Metrics::new());
        let options = MonitorOptions {
            print: false,
            interval: Duration::from_secs(3600),
            metrics_json: None,
            alerts: AlertThresholds {
                memory_bytes: 1,
                ..AlertThresholds::default()
            },
        };
        let mut monitor = Monitor::start(metrics.clone(), options);
        monitor.stop().await;
        let report = metrics.report();
        assert!(report.resources.samples >= 1);
        assert!(report.resources.peak_rss_bytes.is_some_and(|b| b > 0));
        let kinds: Vec<AlertKind> = report.alerts.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [AlertKind::Memory]);
    }
}
