//! What a run measures: API latency percentiles, transfer speeds, success, timeout and retry
//! rates, automatic recoveries, failsafe switches.
//!
//! Nothing about speed or stability is claimed unless civitai-dl measures it itself (the plan's
//! Phase 1). Every request attempt and every finished file reports here; the failsafe reads the
//! same stream of attempts, so what the summary says and what the failsafe acted on agree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::failsafe::{Attempt, Failsafe, Thresholds};

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
    failsafe_switches: AtomicU64,
    samples: Mutex<Samples>,
    failsafe: Mutex<Failsafe>,
}

#[derive(Debug, Default)]
struct Samples {
    api_latencies: Vec<Duration>,
    file_speeds: Vec<f64>,
}

impl Metrics {
    /// Fresh measurements, with a failsafe window using `thresholds`.
    pub fn new(thresholds: Thresholds) -> Metrics {
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
            failsafe_switches: AtomicU64::new(0),
            samples: Mutex::new(Samples::default()),
            failsafe: Mutex::new(Failsafe::new(thresholds)),
        }
    }

    /// An API request attempt ended. `latency` is known when an answer arrived; `attempt` is
    /// `None` for failures that say nothing about the server's health (404, 401, …).
    pub fn record_api(&self, latency: Option<Duration>, attempt: Option<Attempt>) {
        self.api_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = latency {
            lock(&self.samples).api_latencies.push(latency);
        }
        self.count_attempt(attempt, &self.api_failures, &self.api_timeouts);
    }

    /// A file transfer attempt ended (see [`Self::record_api`] for `attempt`).
    pub fn record_transfer(&self, attempt: Option<Attempt>) {
        self.transfer_attempts.fetch_add(1, Ordering::Relaxed);
        self.count_attempt(attempt, &self.transfer_failures, &self.transfer_timeouts);
    }

    /// A request is about to be retried.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The download route gave a signed URL (each counts against Civitai's quota).
    pub fn record_resolve(&self) {
        self.resolves.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes written to disk.
    pub fn record_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A file finished: `transferred` bytes in `elapsed`, after `attempts` attempts.
    pub fn record_file(&self, ok: bool, transferred: u64, elapsed: Duration, attempts: u32) {
        if !ok {
            self.files_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.files_ok.fetch_add(1, Ordering::Relaxed);
        if attempts > 1 {
            self.recovered.fetch_add(1, Ordering::Relaxed);
        }
        if transferred > 0 && !elapsed.is_zero() {
            let mb_per_sec = transferred as f64 / 1e6 / elapsed.as_secs_f64();
            lock(&self.samples).file_speeds.push(mb_per_sec);
        }
    }

    /// The concurrent driver handed its queue to the sequential one.
    pub fn record_failsafe_switch(&self) {
        self.failsafe_switches.fetch_add(1, Ordering::Relaxed);
    }

    /// Why the failsafe tripped, if it did.
    pub fn failsafe_tripped(&self) -> Option<String> {
        lock(&self.failsafe).tripped().map(str::to_string)
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
        let mut latencies: Vec<f64> = samples
            .api_latencies
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let speeds = &samples.file_speeds;
        let wall = self.started.elapsed().as_secs_f64();
        let attempts = self.load(&self.api_requests) + self.load(&self.transfer_attempts);
        let failures = self.load(&self.api_failures) + self.load(&self.transfer_failures);
        let timeouts = self.load(&self.api_timeouts) + self.load(&self.transfer_timeouts);
        let files_ok = self.load(&self.files_ok);
        let files = files_ok + self.load(&self.files_failed);
        let failed_first = self.load(&self.recovered) + self.load(&self.files_failed);
        MetricsReport {
            version: METRICS_VERSION,
            wall_secs: wall,
            api: LatencyReport {
                requests: self.load(&self.api_requests),
                avg_ms: mean(&latencies),
                p50_ms: percentile(&latencies, 50.0),
                p95_ms: percentile(&latencies, 95.0),
                p99_ms: percentile(&latencies, 99.0),
            },
            speed_mb_per_sec: SpeedReport {
                min: speeds.iter().copied().reduce(f64::min).unwrap_or(0.0),
                avg: mean(speeds),
                max: speeds.iter().copied().reduce(f64::max).unwrap_or(0.0),
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
            recovery_rate: ratio(self.load(&self.recovered), failed_first),
            files_per_hour: files as f64 * 3600.0 / wall.max(1e-9),
            failsafe_switches: self.load(&self.failsafe_switches),
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
        if let Some(attempt) = attempt
            && let Some(reason) = lock(&self.failsafe).record(attempt)
        {
            tracing::debug!("failsafe verdict: {reason}");
        }
    }

    fn load(&self, counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
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
    /// Timeouts over failed attempts (the plan's definition).
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
    /// Files that failed at first and succeeded on a retry.
    pub recovered: u64,
    /// Recovered files over files that failed at least once.
    pub recovery_rate: f64,
    /// Finished files per hour.
    pub files_per_hour: f64,
    /// Times the failsafe moved work to the sequential path.
    pub failsafe_switches: u64,
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

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 95.0), 95.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn rates_and_recoveries() {
        let m = Metrics::new(Thresholds::default());
        for _ in 0..8 {
            m.record_api(Some(Duration::from_millis(10)), Some(Attempt::Success));
        }
        m.record_api(None, Some(Attempt::Timeout));
        m.record_api(Some(Duration::from_millis(30)), Some(Attempt::Error));
        m.record_file(true, 1_000_000, Duration::from_secs(1), 2);
        m.record_file(true, 2_000_000, Duration::from_secs(1), 1);
        m.record_file(false, 0, Duration::ZERO, 5);
        let r = m.report();
        assert_eq!(r.api.requests, 10);
        assert_eq!(r.failures, 2);
        assert_eq!(r.timeouts, 1);
        assert!((r.error_rate - 0.2).abs() < 1e-9);
        assert!((r.timeout_rate - 0.5).abs() < 1e-9);
        assert_eq!(r.recovered, 1);
        assert!((r.recovery_rate - 0.5).abs() < 1e-9);
        assert!((r.success_rate - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.speed_mb_per_sec.min, 1.0);
        assert_eq!(r.speed_mb_per_sec.max, 2.0);
        assert_eq!(r.api.p99_ms, 30.0);
    }

    #[test]
    fn client_errors_do_not_feed_the_failsafe() {
        let m = Metrics::new(Thresholds::default());
        for _ in 0..5 {
            m.record_api(Some(Duration::from_millis(5)), None);
        }
        assert_eq!(m.failsafe_tripped(), None);
        for _ in 0..3 {
            m.record_transfer(Some(Attempt::Error));
        }
        assert!(m.failsafe_tripped().is_some());
    }
}
