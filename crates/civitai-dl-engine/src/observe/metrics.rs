//! What a run measures: API latency percentiles, transfer speeds, success, timeout and retry
//! rates, automatic recoveries, failsafe switches, memory and CPU use, and the alerts raised.
//!
//! Nothing about speed or stability is claimed unless civitai-dl measures it itself. Metrics is
//! one subscriber of the run's events ([`Reporter`]); the failsafe is another, fed by the same
//! fan-out, so what the summary says and what the failsafe acted on agree.
//! [`crate::observe::monitor`] feeds in the process's resource readings and reads the counters back for its
//! per-interval lines and alerts; this module only keeps the figures and does the arithmetic.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::lock;
use crate::observe::{Attempt, Operation, Reporter};

/// Version of the metrics JSON layout.
pub const METRICS_VERSION: u32 = 1;

/// The run's measurements; shared behind an `Arc` by the API client, the downloader and the
/// drivers.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    api_requests: AtomicU64,
    api_failures: AtomicU64,
    api_timeouts: AtomicU64,
    transfer_attempts: AtomicU64,
    transfer_failures: AtomicU64,
    transfer_timeouts: AtomicU64,
    retries: AtomicU64,
    resolves: AtomicU64,
    bytes: AtomicU64,
    files_ok: AtomicU64,
    files_failed: AtomicU64,
    recovered: AtomicU64,
    unrecovered: AtomicU64,
    failsafe_switches: AtomicU64,
    files_planned: AtomicU64,
    files_started: AtomicU64,
    files_ended: AtomicU64,
    samples: Mutex<Samples>,
    resources: Mutex<ResourceTracker>,
    alerts: Mutex<AlertLog>,
}

/// The distributions, in constant memory whatever the length of the run: a week-long run makes
/// millions of requests, and a sample each would grow without bound.
#[derive(Debug)]
struct Samples {
    /// API latencies in microseconds, to 2 significant digits (1 %), from 1 µs to an hour.
    api_latency_us: Histogram<u64>,
    /// The exact sum of the same latencies, for the mean.
    api_latency_sum_us: u64,
    /// Speeds of finished files, MB/s.
    file_speeds: Running,
}

/// Lowest and highest trackable latency, microseconds (the API timeout tops out at an hour).
const LATENCY_RANGE_US: (u64, u64) = (1, 3_600_000_000);
/// Significant digits the latency histogram keeps.
const LATENCY_DIGITS: u8 = 2;

impl Default for Samples {
    fn default() -> Samples {
        let (low, high) = LATENCY_RANGE_US;
        Samples {
            // The bounds are constants within what the histogram accepts.
            api_latency_us: Histogram::new_with_bounds(low, high, LATENCY_DIGITS)
                .expect("valid histogram bounds"),
            api_latency_sum_us: 0,
            file_speeds: Running::default(),
        }
    }
}

impl Samples {
    fn record_latency(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // saturating_record clamps a value outside the range to its edge.
        self.api_latency_us.saturating_record(us.max(1));
        self.api_latency_sum_us = self.api_latency_sum_us.saturating_add(us);
    }

    /// The latency at percentile `p`, in milliseconds (0 with no samples). HDR reports the top
    /// of the value's 1 % bucket, so a percentile is never below the latencies it stands for.
    fn latency_ms(&self, p: f64) -> f64 {
        if self.api_latency_us.is_empty() {
            return 0.0;
        }
        self.api_latency_us.value_at_percentile(p) as f64 / 1000.0
    }

    fn mean_latency_ms(&self) -> f64 {
        match self.api_latency_us.len() {
            0 => 0.0,
            n => self.api_latency_sum_us as f64 / n as f64 / 1000.0,
        }
    }
}

/// Minimum, maximum and mean of a series, without keeping it.
#[derive(Debug, Default)]
struct Running {
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Running {
    fn push(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
    }

    fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

impl Metrics {
    /// Fresh measurements.
    pub fn new() -> Metrics {
        Metrics {
            started: Instant::now(),
            api_requests: AtomicU64::new(0),
            api_failures: AtomicU64::new(0),
            api_timeouts: AtomicU64::new(0),
            transfer_attempts: AtomicU64::new(0),
            transfer_failures: AtomicU64::new(0),
            transfer_timeouts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            resolves: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            files_ok: AtomicU64::new(0),
            files_failed: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            unrecovered: AtomicU64::new(0),
            failsafe_switches: AtomicU64::new(0),
            files_planned: AtomicU64::new(0),
            files_started: AtomicU64::new(0),
            files_ended: AtomicU64::new(0),
            samples: Mutex::new(Samples::default()),
            resources: Mutex::new(ResourceTracker::default()),
            alerts: Mutex::new(AlertLog::default()),
        }
    }

    /// A reading of the process's memory and CPU time, taken at `at`.
    pub fn record_resources(&self, sample: ProcessSample, at: Instant) {
        lock(&self.resources).record(sample, at);
    }

    /// The alerts whose condition holds now (all kinds are judged together). Returns those that
    /// just started, which are also kept for the report; a kind that stays on is not repeated.
    pub fn update_alerts(&self, current: Vec<Alert>) -> Vec<Alert> {
        lock(&self.alerts).update(current)
    }

    /// The live counters, for per-interval figures.
    pub fn counters(&self) -> Counters {
        let ended = self.load(&self.files_ended);
        Counters {
            bytes: self.load(&self.bytes),
            attempts: self.load(&self.api_requests) + self.load(&self.transfer_attempts),
            failures: self.load(&self.api_failures) + self.load(&self.transfer_failures),
            timeouts: self.load(&self.api_timeouts) + self.load(&self.transfer_timeouts),
            active_files: self.load(&self.files_started).saturating_sub(ended),
            queued_files: self.load(&self.files_planned).saturating_sub(ended),
        }
    }

    /// The latest resource figures.
    pub fn resources(&self) -> ResourceReport {
        lock(&self.resources).report.clone()
    }

    /// Requests sent so far (all attempts).
    pub fn api_requests(&self) -> u64 {
        self.api_requests.load(Ordering::Relaxed)
    }

    /// Retries so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Everything measured so far.
    pub fn report(&self) -> MetricsReport {
        let samples = lock(&self.samples);
        let speeds = &samples.file_speeds;
        let wall = self.started.elapsed().as_secs_f64();
        let attempts = self.load(&self.api_requests) + self.load(&self.transfer_attempts);
        let failures = self.load(&self.api_failures) + self.load(&self.transfer_failures);
        let timeouts = self.load(&self.api_timeouts) + self.load(&self.transfer_timeouts);
        let files_ok = self.load(&self.files_ok);
        let files = files_ok + self.load(&self.files_failed);
        let failed_first = self.load(&self.recovered) + self.load(&self.unrecovered);
        MetricsReport {
            version: METRICS_VERSION,
            wall_secs: wall,
            api: LatencyReport {
                requests: self.load(&self.api_requests),
                avg_ms: samples.mean_latency_ms(),
                p50_ms: samples.latency_ms(50.0),
                p95_ms: samples.latency_ms(95.0),
                p99_ms: samples.latency_ms(99.0),
            },
            speed_mb_per_sec: SpeedReport {
                min: speeds.min.unwrap_or(0.0),
                avg: speeds.mean(),
                max: speeds.max.unwrap_or(0.0),
                overall: self.load(&self.bytes) as f64 / 1e6 / wall.max(1e-9),
            },
            attempts,
            failures,
            timeouts,
            success_rate: ratio(files_ok, files),
            error_rate: ratio(failures, attempts),
            timeout_rate: ratio(timeouts, failures),
            retries: self.load(&self.retries),
            resolves: self.load(&self.resolves),
            bytes: self.load(&self.bytes),
            files_ok,
            files_failed: self.load(&self.files_failed),
            recovered: self.load(&self.recovered),
            unrecovered: self.load(&self.unrecovered),
            recovery_rate: ratio(self.load(&self.recovered), failed_first),
            files_per_hour: files as f64 * 3600.0 / wall.max(1e-9),
            failsafe_switches: self.load(&self.failsafe_switches),
            files_planned: self.load(&self.files_planned),
            resources: self.resources(),
            alerts: lock(&self.alerts).raised.clone(),
        }
    }

    fn count_attempt(&self, attempt: Option<Attempt>, failures: &AtomicU64, timeouts: &AtomicU64) {
        match attempt {
            Some(Attempt::Error) => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            Some(Attempt::Timeout) => {
                failures.fetch_add(1, Ordering::Relaxed);
                timeouts.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn load(&self, counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Reporter for Metrics {
    fn on_attempt(
        &self,
        operation: Operation,
        latency: Option<Duration>,
        attempt: Option<Attempt>,
    ) {
        let (requests, failures, timeouts) = match operation {
            Operation::Api => (&self.api_requests, &self.api_failures, &self.api_timeouts),
            Operation::Transfer => (
                &self.transfer_attempts,
                &self.transfer_failures,
                &self.transfer_timeouts,
            ),
        };
        requests.fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = latency {
            lock(&self.samples).record_latency(latency);
        }
        self.count_attempt(attempt, failures, timeouts);
    }

    fn on_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    fn on_resolve(&self) {
        self.resolves.fetch_add(1, Ordering::Relaxed);
    }

    fn on_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One that needed more than one attempt either recovered automatically or did not: the
    /// automatic recovery rate.
    fn on_operation_done(&self, ok: bool, attempts: u32) {
        if attempts > 1 {
            let counter = if ok {
                &self.recovered
            } else {
                &self.unrecovered
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_file_done(&self, ok: bool, transferred: u64, elapsed: Duration, attempts: u32) {
        self.on_operation_done(ok, attempts);
        if !ok {
            self.files_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.files_ok.fetch_add(1, Ordering::Relaxed);
        if transferred > 0 && !elapsed.is_zero() {
            let mb_per_sec = transferred as f64 / 1e6 / elapsed.as_secs_f64();
            lock(&self.samples).file_speeds.push(mb_per_sec);
        }
    }

    fn on_planned(&self, files: u64, _bytes: u64) {
        self.files_planned.fetch_add(files, Ordering::Relaxed);
    }

    fn on_model_file_started(&self) {
        self.files_started.fetch_add(1, Ordering::Relaxed);
    }

    fn on_model_file_ended(&self) {
        self.files_ended.fetch_add(1, Ordering::Relaxed);
    }

    fn on_failsafe_switch(&self) {
        self.failsafe_switches.fetch_add(1, Ordering::Relaxed);
    }
}

/// All figures of a run (the `metrics` part of `--json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct MetricsReport {
    /// Layout version.
    pub version: u32,
    /// Wall time so far, seconds.
    pub wall_secs: f64,
    /// API response times.
    pub api: LatencyReport,
    /// Transfer speeds, MB/s (10^6 bytes).
    pub speed_mb_per_sec: SpeedReport,
    /// Request attempts of any kind.
    pub attempts: u64,
    /// Failed attempts (timeouts included).
    pub failures: u64,
    /// Timed-out attempts.
    pub timeouts: u64,
    /// Files that ended well, over files finished.
    pub success_rate: f64,
    /// Failed attempts over attempts.
    pub error_rate: f64,
    /// Timeouts over failed attempts (`docs/design.md#the-stability-targets`).
    pub timeout_rate: f64,
    /// Retries made.
    pub retries: u64,
    /// Signed URLs obtained from the download route.
    pub resolves: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files that ended well.
    pub files_ok: u64,
    /// Files that failed.
    pub files_failed: u64,
    /// Operations (API calls, files) that failed at first and succeeded on a retry.
    pub recovered: u64,
    /// Operations that failed at first and never succeeded.
    pub unrecovered: u64,
    /// `recovered / (recovered + unrecovered)`: the automatic recovery rate (`docs/design.md#the-stability-targets`).
    pub recovery_rate: f64,
    /// Finished files per hour.
    pub files_per_hour: f64,
    /// Times the failsafe moved work to the sequential path.
    pub failsafe_switches: u64,
    /// Model files found by planning.
    pub files_planned: u64,
    /// Memory and CPU use of the process.
    pub resources: ResourceReport,
    /// Alerts raised during the run, in the order they started.
    pub alerts: Vec<Alert>,
}

/// Memory and CPU figures; `None` (JSON `null`) where the OS gives none (only Linux does today).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResourceReport {
    /// Resident set size at the latest reading, bytes.
    pub rss_bytes: Option<u64>,
    /// Highest resident set size of the process, bytes: the OS's own high-water mark, so spikes
    /// between readings count too.
    pub peak_rss_bytes: Option<u64>,
    /// CPU time over wall time since the previous reading, % of one core (above 100 when
    /// several cores work).
    pub cpu_percent: Option<f64>,
    /// CPU time over wall time since the first reading, % of one core.
    pub avg_cpu_percent: Option<f64>,
    /// Readings taken.
    pub samples: u64,
}

/// One reading of the process's resources; `None` where the OS gives no figure.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessSample {
    /// Resident set size, bytes.
    pub rss_bytes: Option<u64>,
    /// The OS's high-water mark of the resident set size, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// User plus system CPU time since the process started.
    pub cpu_time: Option<Duration>,
}

/// Shortest wall time a current CPU figure is computed over: CPU time is counted in 10 ms ticks,
/// so a reading a few milliseconds after the previous one would swing between 0 and hundreds of %.
pub const MIN_CPU_WINDOW: Duration = Duration::from_millis(500);

/// Turns successive readings into current, peak and average figures.
#[derive(Debug, Default)]
struct ResourceTracker {
    first_cpu: Option<(Instant, Duration)>,
    last_cpu: Option<(Instant, Duration)>,
    report: ResourceReport,
}

impl ResourceTracker {
    fn record(&mut self, sample: ProcessSample, at: Instant) {
        let report = &mut self.report;
        report.samples += 1;
        report.rss_bytes = sample.rss_bytes;
        report.peak_rss_bytes = report
            .peak_rss_bytes
            .max(sample.peak_rss_bytes)
            .max(sample.rss_bytes);
        let Some(cpu) = sample.cpu_time else {
            return;
        };
        let (first_at, first_cpu) = *self.first_cpu.get_or_insert((at, cpu));
        if let Some(average) = cpu_percent(
            cpu.saturating_sub(first_cpu),
            at.saturating_duration_since(first_at),
        ) {
            report.avg_cpu_percent = Some(average);
        }
        match self.last_cpu {
            Some((last_at, last_cpu)) => {
                let wall = at.saturating_duration_since(last_at);
                if wall >= MIN_CPU_WINDOW {
                    report.cpu_percent = cpu_percent(cpu.saturating_sub(last_cpu), wall);
                    self.last_cpu = Some((at, cpu));
                }
            }
            None => self.last_cpu = Some((at, cpu)),
        }
    }
}

/// CPU time over wall time, as % of one core; `None` over no wall time.
pub fn cpu_percent(cpu: Duration, wall: Duration) -> Option<f64> {
    (!wall.is_zero()).then(|| cpu.as_secs_f64() / wall.as_secs_f64() * 100.0)
}

/// The live counters of a run, read together for per-interval figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes written so far.
    pub bytes: u64,
    /// Request attempts of any kind so far.
    pub attempts: u64,
    /// Failed attempts so far (timeouts included).
    pub failures: u64,
    /// Timed-out attempts so far.
    pub timeouts: u64,
    /// Model files being processed now.
    pub active_files: u64,
    /// Planned model files not finished yet (the active ones included).
    pub queued_files: u64,
}

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Failed attempts over attempts.
    ErrorRate,
    /// Timed-out attempts over attempts.
    TimeoutRate,
    /// Peak resident memory, bytes.
    Memory,
    /// Transfer speed below the baseline, MB/s.
    Throughput,
}

/// A threshold crossed, as shown in the log and listed in the JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// One line for people.
    pub message: String,
    /// The measured value (unit per kind: fraction, bytes or MB/s).
    pub value: f64,
    /// The limit it crossed, in the same unit.
    pub threshold: f64,
}

/// Alerts raised so far, and which kinds hold right now (so each is raised once per spell).
#[derive(Debug, Default)]
struct AlertLog {
    raised: Vec<Alert>,
    active: Vec<AlertKind>,
}

impl AlertLog {
    fn update(&mut self, current: Vec<Alert>) -> Vec<Alert> {
        let started: Vec<Alert> = current
            .iter()
            .filter(|alert| !self.active.contains(&alert.kind))
            .cloned()
            .collect();
        self.active = current.iter().map(|alert| alert.kind).collect();
        self.raised.extend(started.iter().cloned());
        started
    }
}

/// API latency figures, milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyReport {
    /// Requests answered.
    pub requests: u64,
    /// Mean.
    pub avg_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// Per-file transfer speeds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpeedReport {
    /// Slowest file.
    pub min: f64,
    /// Mean over files.
    pub avg: f64,
    /// Fastest file.
    pub max: f64,
    /// All bytes over wall time.
    pub overall: f64,
}

/// `part / whole`, or 0 when there is no whole.
pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::ActiveFile;

    #[test]
    fn latency_percentiles_are_within_one_percent_and_never_below() {
        let mut samples = Samples::default();
        assert_eq!(samples.latency_ms(50.0), 0.0, "no samples, no figure");
        for ms in 1..=100 {
            samples.record_latency(Duration::from_millis(ms));
        }
        for (p, exact) in [(50.0, 50.0), (95.0, 95.0), (99.0, 99.0)] {
            let got = samples.latency_ms(p);
            assert!(
                got >= exact && got <= exact * 1.01,
                "p{p}: {got} ms for {exact} ms"
            );
        }
        assert!(
            (samples.mean_latency_ms() - 50.5).abs() < 1e-9,
            "the mean is exact"
        );
    }

    #[test]
    fn the_latency_record_does_not_grow_with_the_run() {
        let mut samples = Samples::default();
        let before = samples.api_latency_us.distinct_values();
        for i in 0..200_000u64 {
            samples.record_latency(Duration::from_micros(1 + i * 97 % 5_000_000));
        }
        assert_eq!(samples.api_latency_us.distinct_values(), before);
        assert_eq!(samples.api_latency_us.len(), 200_000);
    }

    #[test]
    fn file_speeds_keep_min_mean_and_max() {
        let mut speeds = Running::default();
        assert_eq!((speeds.min, speeds.mean()), (None, 0.0));
        for v in [3.0, 1.0, 2.0] {
            speeds.push(v);
        }
        assert_eq!(
            (speeds.min, speeds.max, speeds.mean()),
            (Some(1.0), Some(3.0), 2.0)
        );
    }

    #[test]
    fn rates_and_recoveries() {
        let m = Metrics::new();
        for _ in 0..8 {
            m.on_attempt(
                Operation::Api,
                Some(Duration::from_millis(10)),
                Some(Attempt::Success),
            );
        }
        m.on_attempt(Operation::Api, None, Some(Attempt::Timeout));
        m.on_attempt(
            Operation::Api,
            Some(Duration::from_millis(30)),
            Some(Attempt::Error),
        );
        m.on_file_done(true, 1_000_000, Duration::from_secs(1), 2);
        m.on_file_done(true, 2_000_000, Duration::from_secs(1), 1);
        m.on_file_done(false, 0, Duration::ZERO, 5);
        m.on_operation_done(true, 3);
        m.on_operation_done(true, 1);
        let r = m.report();
        assert_eq!(r.api.requests, 10);
        assert_eq!(r.failures, 2);
        assert_eq!(r.timeouts, 1);
        assert!((r.error_rate - 0.2).abs() < 1e-9);
        assert!((r.timeout_rate - 0.5).abs() < 1e-9);
        assert_eq!((r.recovered, r.unrecovered), (2, 1));
        assert!((r.recovery_rate - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.success_rate - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.speed_mb_per_sec.min, 1.0);
        assert_eq!(r.speed_mb_per_sec.max, 2.0);
        assert!(
            (30.0..=30.0 * 1.01).contains(&r.api.p99_ms),
            "within the histogram's 1 %: {}",
            r.api.p99_ms
        );
    }

    fn reading(rss_mib: u64, peak_mib: Option<u64>, cpu_ms: u64) -> ProcessSample {
        ProcessSample {
            rss_bytes: Some(rss_mib << 20),
            peak_rss_bytes: peak_mib.map(|mib| mib << 20),
            cpu_time: Some(Duration::from_millis(cpu_ms)),
        }
    }

    #[test]
    fn cpu_share_of_one_core() {
        let cases = [
            (500, 1000, Some(50.0)),
            (2000, 1000, Some(200.0)),
            (0, 1000, Some(0.0)),
            (10, 0, None),
        ];
        for (cpu_ms, wall_ms, expected) in cases {
            let got = cpu_percent(
                Duration::from_millis(cpu_ms),
                Duration::from_millis(wall_ms),
            );
            assert_eq!(got, expected, "{cpu_ms} ms CPU over {wall_ms} ms");
        }
    }

    #[test]
    fn resource_readings_give_current_peak_and_average() {
        let t0 = Instant::now();
        let mut tracker = ResourceTracker::default();
        tracker.record(reading(100, Some(120), 1000), t0);
        assert_eq!(tracker.report.rss_bytes, Some(100 << 20));
        assert_eq!(tracker.report.peak_rss_bytes, Some(120 << 20));
        assert_eq!(
            tracker.report.cpu_percent, None,
            "one reading gives no rate"
        );
        tracker.record(reading(80, Some(120), 1500), t0 + Duration::from_secs(1));
        assert_eq!(tracker.report.rss_bytes, Some(80 << 20));
        assert_eq!(tracker.report.cpu_percent, Some(50.0));
        // Too soon after the last reading for a current figure; the average still moves.
        tracker.record(
            reading(90, Some(120), 1600),
            t0 + Duration::from_millis(1100),
        );
        assert_eq!(tracker.report.cpu_percent, Some(50.0));
        tracker.record(reading(90, Some(120), 3500), t0 + Duration::from_secs(2));
        assert_eq!(tracker.report.cpu_percent, Some(200.0));
        assert_eq!(tracker.report.avg_cpu_percent, Some(125.0));
        assert_eq!(tracker.report.samples, 4);
    }

    #[test]
    fn peak_never_falls_and_covers_readings_without_a_high_water_mark() {
        let t0 = Instant::now();
        let mut tracker = ResourceTracker::default();
        tracker.record(reading(300, None, 0), t0);
        tracker.record(reading(200, Some(250), 0), t0);
        assert_eq!(tracker.report.peak_rss_bytes, Some(300 << 20));
        tracker.record(ProcessSample::default(), t0);
        assert_eq!(tracker.report.rss_bytes, None, "no figure is not 0 bytes");
        assert_eq!(tracker.report.peak_rss_bytes, Some(300 << 20));
    }

    #[test]
    fn active_and_queued_files_follow_planning_and_processing() {
        let m = Metrics::new();
        m.on_planned(3, 0);
        let first = ActiveFile::start(&m);
        let second = ActiveFile::start(&m);
        let c = m.counters();
        assert_eq!((c.active_files, c.queued_files), (2, 3));
        drop(first);
        let c = m.counters();
        assert_eq!((c.active_files, c.queued_files), (1, 2));
        drop(second);
        m.on_attempt(Operation::Api, None, Some(Attempt::Timeout));
        m.on_bytes(42);
        let c = m.counters();
        assert_eq!((c.active_files, c.queued_files), (0, 1));
        assert_eq!((c.attempts, c.failures, c.timeouts, c.bytes), (1, 1, 1, 42));
        assert_eq!(m.report().files_planned, 3);
    }

    fn alert(kind: AlertKind, value: f64) -> Alert {
        Alert {
            kind,
            message: format!("{kind:?}"),
            value,
            threshold: 0.0,
        }
    }

    #[test]
    fn an_alert_is_raised_once_per_spell() {
        let m = Metrics::new();
        let started = m.update_alerts(vec![alert(AlertKind::ErrorRate, 0.1)]);
        assert_eq!(started.len(), 1);
        let started = m.update_alerts(vec![
            alert(AlertKind::ErrorRate, 0.2),
            alert(AlertKind::Memory, 2e9),
        ]);
        assert_eq!(started, vec![alert(AlertKind::Memory, 2e9)]);
        assert!(m.update_alerts(Vec::new()).is_empty());
        let started = m.update_alerts(vec![alert(AlertKind::ErrorRate, 0.3)]);
        assert_eq!(started.len(), 1, "a new spell after the rate recovered");
        let kinds: Vec<AlertKind> = m.report().alerts.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [
                AlertKind::ErrorRate,
                AlertKind::Memory,
                AlertKind::ErrorRate
            ]
        );
    }
}
