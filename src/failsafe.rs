//! The failsafe: watch how requests go while work runs concurrently, and fall back to the
//! sequential path when they go badly.
//!
//! The plan (`shared/seed`, FailsafeManager / should_trigger_fallback) exists because an earlier
//! concurrent rewrite was slower and less reliable than the sequential one. So concurrency is
//! watched: every request attempt reports success, error or timeout into a sliding window, and
//! when failures run together (3 in a row), or the window's error rate passes 5 %, or its timeout
//! rate passes 1 %, the concurrent driver stops starting work, lets what is in flight finish, and
//! hands the rest of the queue to the sequential driver. Rates are judged only once the window
//! holds a minimum sample, so one early blip cannot trip it.

use std::collections::VecDeque;

use crate::http::retry::{RetryClass, Retryable};

/// How one request attempt went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// It succeeded.
    Success,
    /// It failed (any failure other than a timeout).
    Error,
    /// It timed out.
    Timeout,
}

impl Attempt {
    /// How a request attempt went, for the window: `None` for failures that say nothing about
    /// the server's health or the concurrency (404, 401, a full disk: retrying cannot help).
    pub fn judge<T, E: Retryable>(
        result: &Result<T, E>,
        is_timeout: impl Fn(&E) -> bool,
    ) -> Option<Attempt> {
        match result {
            Ok(_) => Some(Attempt::Success),
            Err(error) if is_timeout(error) => Some(Attempt::Timeout),
            Err(error) => match error.retry_class() {
                RetryClass::Fatal => None,
                RetryClass::Transient { .. } => Some(Attempt::Error),
            },
        }
    }
}

/// When to fall back. Defaults are the plan's.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Failures in a row that trip the failsafe.
    pub consecutive_failures: u32,
    /// Error rate (errors and timeouts over attempts in the window) that trips it.
    pub error_rate: f64,
    /// Timeout rate (timeouts over attempts in the window) that trips it.
    pub timeout_rate: f64,
    /// Attempts the window must hold before rates count.
    pub min_sample: usize,
    /// Attempts the sliding window keeps.
    pub window: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            consecutive_failures: 3,
            error_rate: 0.05,
            timeout_rate: 0.01,
            min_sample: 20,
            window: 200,
        }
    }
}

/// The sliding window and its verdict.
#[derive(Debug)]
pub struct Failsafe {
    thresholds: Thresholds,
    window: VecDeque<Attempt>,
    consecutive_failures: u32,
    tripped: Option<String>,
}

impl Failsafe {
    /// A failsafe with these thresholds, not tripped.
    pub fn new(thresholds: Thresholds) -> Failsafe {
        Failsafe {
            window: VecDeque::with_capacity(thresholds.window),
            thresholds,
            consecutive_failures: 0,
            tripped: None,
        }
    }

    /// Count an attempt; returns the reason when this attempt trips the failsafe (once).
    pub fn record(&mut self, attempt: Attempt) -> Option<String> {
        if self.window.len() == self.thresholds.window.max(1) {
            self.window.pop_front();
        }
        self.window.push_back(attempt);
        self.consecutive_failures = match attempt {
            Attempt::Success => 0,
            Attempt::Error | Attempt::Timeout => self.consecutive_failures + 1,
        };
        if self.tripped.is_some() {
            return None;
        }
        self.tripped = self.verdict();
        self.tripped.clone()
    }

    /// The reason the failsafe tripped, if it has.
    pub fn tripped(&self) -> Option<&str> {
        self.tripped.as_deref()
    }

    /// Share of failed attempts in the window.
    pub fn error_rate(&self) -> f64 {
        self.rate(|a| a != Attempt::Success)
    }

    /// Share of timed-out attempts in the window.
    pub fn timeout_rate(&self) -> f64 {
        self.rate(|a| a == Attempt::Timeout)
    }

    fn verdict(&self) -> Option<String> {
        let t = &self.thresholds;
        if self.consecutive_failures >= t.consecutive_failures {
            return Some(format!("{} failures in a row", self.consecutive_failures));
        }
        if self.window.len() < t.min_sample {
            return None;
        }
        let (errors, timeouts) = (self.error_rate(), self.timeout_rate());
        if errors > t.error_rate {
            return Some(format!(
                "error rate {:.1}% over the last {} requests (limit {:.1}%)",
                errors * 100.0,
                self.window.len(),
                t.error_rate * 100.0
            ));
        }
        if timeouts > t.timeout_rate {
            return Some(format!(
                "timeout rate {:.1}% over the last {} requests (limit {:.1}%)",
                timeouts * 100.0,
                self.window.len(),
                t.timeout_rate * 100.0
            ));
        }
        None
    }

    fn rate(&self, counts: impl Fn(Attempt) -> bool) -> f64 {
        if self.window.is_empty() {
            return 0.0;
        }
        self.window.iter().filter(|a| counts(**a)).count() as f64 / self.window.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Attempt::*;

    fn feed(failsafe: &mut Failsafe, attempts: &[Attempt]) -> Option<String> {
        attempts.iter().find_map(|a| failsafe.record(*a))
    }

    #[test]
    fn three_failures_in_a_row_trip_it() {
        let mut f = Failsafe::new(Thresholds::default());
        assert_eq!(feed(&mut f, &[Error, Error, Success, Error, Timeout]), None);
        let reason = f.record(Error).unwrap();
        assert!(reason.contains("3 failures in a row"), "{reason}");
        assert_eq!(f.record(Error), None, "reported once");
        assert!(f.tripped().is_some());
    }

    #[test]
    fn rates_wait_for_the_minimum_sample() {
        let mut f = Failsafe::new(Thresholds::default());
        let mut attempts = vec![Success; 10];
        attempts.extend([Error, Success, Error]);
        assert_eq!(feed(&mut f, &attempts), None, "13 attempts are too few");
        assert_eq!(feed(&mut f, &[Success; 6]), None, "19 attempts are too few");
        let reason = f.record(Success).unwrap();
        assert!(
            reason.contains("error rate 10.0% over the last 20"),
            "{reason}"
        );
    }

    #[test]
    fn error_rate_at_the_limit_does_not_trip() {
        let mut f = Failsafe::new(Thresholds::default());
        let mut attempts = vec![Success; 19];
        attempts.push(Error);
        // 1 error in 20 is exactly 5 %: not above the limit.
        assert_eq!(feed(&mut f, &attempts), None);
        assert!((f.error_rate() - 0.05).abs() < 1e-9);
    }

    #[test]
    fn a_single_timeout_in_a_hundred_passes_two_trip() {
        let mut f = Failsafe::new(Thresholds::default());
        let mut attempts = vec![Success; 99];
        attempts.push(Timeout);
        assert_eq!(
            feed(&mut f, &attempts),
            None,
            "1 % is the limit, not above it"
        );
        let reason = f.record(Timeout).unwrap();
        assert!(reason.contains("timeout rate"), "{reason}");
    }

    #[test]
    fn the_window_forgets_old_failures() {
        let thresholds = Thresholds {
            window: 10,
            min_sample: 10,
            error_rate: 0.5,
            ..Thresholds::default()
        };
        let mut f = Failsafe::new(thresholds);
        assert_eq!(feed(&mut f, &[Error, Error]), None);
        assert!((f.error_rate() - 1.0).abs() < 1e-9);
        assert_eq!(feed(&mut f, &[Success; 10]), None);
        assert_eq!(f.error_rate(), 0.0);
    }
}
