//! The failsafe: watch how requests go while work runs concurrently, and fall back to the
//! sequential path when they go badly.
//!
//! It exists because an earlier concurrent rewrite of a Civitai downloader was slower and less
//! reliable than the sequential one it replaced (`docs/design.md#stability-first`). So concurrency is
//! watched: every request attempt reports success, error or timeout into a sliding window, and
//! when failures run together (3 in a row), or the window's error rate passes 5 %, or its timeout
//! rate passes 1 %, the concurrent driver stops starting work, lets what is in flight finish, and
//! hands the rest of the queue to the sequential driver. Rates are judged only once the window
//! holds a minimum sample, so one early blip cannot trip it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use crate::lock;
use crate::observe::rates::RateLimits;
use crate::observe::{Attempt, Operation, Reporter};

/// When to fall back.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Failures in a row that trip the failsafe.
    pub consecutive_failures: u32,
    /// Error and timeout rates over the window that trip it, and the sample they need.
    pub rates: RateLimits,
    /// Attempts the sliding window keeps.
    pub window: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            consecutive_failures: 3,
            rates: RateLimits::default(),
            window: 200,
        }
    }
}

/// The sliding window and its verdict. It subscribes to the run's attempts as a [`Reporter`];
/// the drivers ask it whether they may go on concurrently.
#[derive(Debug)]
pub struct Failsafe {
    thresholds: Thresholds,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    attempts: VecDeque<Attempt>,
    consecutive_failures: u32,
    tripped: Option<String>,
}

impl Failsafe {
    /// A failsafe with these thresholds, not tripped.
    pub fn new(thresholds: Thresholds) -> Failsafe {
        Failsafe {
            state: Mutex::new(Window {
                attempts: VecDeque::with_capacity(thresholds.window),
                ..Window::default()
            }),
            thresholds,
        }
    }

    /// Count an attempt; returns the reason when this attempt trips the failsafe (once).
    pub fn record(&self, attempt: Attempt) -> Option<String> {
        let mut window = lock(&self.state);
        if window.attempts.len() == self.thresholds.window.max(1) {
            window.attempts.pop_front();
        }
        window.attempts.push_back(attempt);
        window.consecutive_failures = match attempt {
            Attempt::Success => 0,
            Attempt::Error | Attempt::Timeout => window.consecutive_failures + 1,
        };
        if window.tripped.is_some() {
            return None;
        }
        window.tripped = self.verdict(&window);
        window.tripped.clone()
    }

    /// The reason the failsafe tripped, if it has.
    pub fn tripped(&self) -> Option<String> {
        lock(&self.state).tripped.clone()
    }

    /// Share of failed attempts in the window.
    pub fn error_rate(&self) -> f64 {
        lock(&self.state).rate(|a| a != Attempt::Success)
    }

    fn verdict(&self, window: &Window) -> Option<String> {
        if window.consecutive_failures >= self.thresholds.consecutive_failures {
            return Some(format!("{} failures in a row", window.consecutive_failures));
        }
        let breach = self
            .thresholds
            .rates
            .breaches(
                window.attempts.len() as u64,
                window.rate(|a| a != Attempt::Success),
                window.rate(|a| a == Attempt::Timeout),
            )
            .into_iter()
            .next()?;
        Some(format!(
            "{breach} (the last {} requests)",
            window.attempts.len()
        ))
    }
}

impl Window {
    fn rate(&self, counts: impl Fn(Attempt) -> bool) -> f64 {
        if self.attempts.is_empty() {
            return 0.0;
        }
        self.attempts.iter().filter(|a| counts(**a)).count() as f64 / self.attempts.len() as f64
    }
}

impl Reporter for Failsafe {
    fn on_attempt(
        &self,
        _operation: Operation,
        _latency: Option<Duration>,
        attempt: Option<Attempt>,
    ) {
        if let Some(reason) = attempt.and_then(|a| self.record(a)) {
            tracing::debug!("failsafe verdict: {reason}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Attempt::*;

    fn feed(failsafe: &Failsafe, attempts: &[Attempt]) -> Option<String> {
        attempts.iter().find_map(|a| failsafe.record(*a))
    }

    #[test]
    fn three_failures_in_a_row_trip_it() {
        let f = Failsafe::new(Thresholds::default());
        assert_eq!(feed(&f, &[Error, Error, Success, Error, Timeout]), None);
        let reason = f.record(Error).unwrap();
        assert!(reason.contains("3 failures in a row"), "{reason}");
        assert_eq!(f.record(Error), None, "reported once");
        assert!(f.tripped().is_some());
    }

    #[test]
    fn rates_wait_for_the_minimum_sample() {
        let f = Failsafe::new(Thresholds::default());
        let mut attempts = vec![Success; 10];
        attempts.extend([Error, Success, Error]);
        assert_eq!(feed(&f, &attempts), None, "13 attempts are too few");
        assert_eq!(feed(&f, &[Success; 6]), None, "19 attempts are too few");
        let reason = f.record(Success).unwrap();
        assert!(
            reason.contains("error rate 10.0% over 20 attempts"),
            "{reason}"
        );
    }

    #[test]
    fn error_rate_at_the_limit_does_not_trip() {
        let f = Failsafe::new(Thresholds::default());
        let mut attempts = vec![Success; 19];
        attempts.push(Error);
        // 1 error in 20 is exactly 5 %: not above the limit.
        assert_eq!(feed(&f, &attempts), None);
        assert!((f.error_rate() - 0.05).abs() < 1e-9);
    }

    #[test]
    fn a_single_timeout_in_a_hundred_passes_two_trip() {
        let f = Failsafe::new(Thresholds::default());
        let mut attempts = vec![Success; 99];
        attempts.push(Timeout);
        assert_eq!(feed(&f, &attempts), None, "1 % is the limit, not above it");
        let reason = f.record(Timeout).unwrap();
        assert!(reason.contains("timeout rate"), "{reason}");
    }

    #[test]
    fn the_window_forgets_old_failures() {
        let thresholds = Thresholds {
            window: 10,
            rates: RateLimits {
                min_sample: 10,
                error_rate: 0.5,
                ..RateLimits::default()
            },
            ..Thresholds::default()
        };
        let f = Failsafe::new(thresholds);
        assert_eq!(feed(&f, &[Error, Error]), None);
        assert!((f.error_rate() - 1.0).abs() < 1e-9);
        assert_eq!(feed(&f, &[Success; 10]), None);
        assert_eq!(f.error_rate(), 0.0);
    }

    #[test]
    fn client_errors_do_not_feed_the_failsafe() {
        let f = Failsafe::new(Thresholds::default());
        for _ in 0..5 {
            f.on_attempt(Operation::Api, Some(Duration::from_millis(5)), None);
        }
        assert_eq!(f.tripped(), None);
        for _ in 0..3 {
            f.on_attempt(Operation::Transfer, None, Some(Error));
        }
        assert!(f.tripped().is_some());
    }
}
