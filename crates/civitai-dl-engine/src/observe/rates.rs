//! One judge of error and timeout rates, shared by the failsafe (which falls back to the
//! sequential path) and the monitor (which raises alerts): both must use the same limits and
//! say the same thing, so a user who sees an alert can tell whether the failsafe acted on it.
//!
//! The defaults are the stability targets this project is built against: fewer than 5 % of
//! attempts failing and fewer than 1 % timing out. Rates are judged only once enough attempts
//! were seen, so one early failure out of three attempts does not read as a 33 % error rate.

use std::fmt;

/// The rate limits and the sample they need.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimits {
    /// Failed attempts (timeouts included) over attempts above which the rate is too high.
    pub error_rate: f64,
    /// Timed-out attempts over attempts above which the rate is too high.
    pub timeout_rate: f64,
    /// Attempts that must be seen before rates count.
    pub min_sample: u64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            error_rate: 0.05,
            timeout_rate: 0.01,
            min_sample: 20,
        }
    }
}

/// Which rate a breach is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateKind {
    /// Failed attempts over attempts.
    Error,
    /// Timed-out attempts over attempts.
    Timeout,
}

/// A rate above its limit.
#[derive(Clone, Debug, PartialEq)]
pub struct RateBreach {
    /// Which rate.
    pub kind: RateKind,
    /// The rate seen, as a fraction.
    pub value: f64,
    /// The limit it passed, as a fraction.
    pub limit: f64,
    /// Over how many attempts.
    pub attempts: u64,
}

impl RateLimits {
    /// The rates above their limits, error rate first, for `attempts` attempts with these
    /// shares failed (timeouts included) and timed out.
    pub fn breaches(&self, attempts: u64, error_rate: f64, timeout_rate: f64) -> Vec<RateBreach> {
        if attempts == 0 || attempts < self.min_sample {
            return Vec::new();
        }
        [
            (RateKind::Error, error_rate, self.error_rate),
            (RateKind::Timeout, timeout_rate, self.timeout_rate),
        ]
        .into_iter()
        .filter(|(_, value, limit)| value > limit)
        .map(|(kind, value, limit)| RateBreach {
            kind,
            value,
            limit,
            attempts,
        })
        .collect()
    }
}

impl fmt::Display for RateBreach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            RateKind::Error => "error",
            RateKind::Timeout => "timeout",
        };
        write!(
            f,
            "{name} rate {:.1}% over {} attempts is above {:.1}%",
            self.value * 100.0,
            self.attempts,
            self.limit * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_wait_for_the_sample_and_only_above_the_limit_count() {
        let limits = RateLimits::default();
        assert!(limits.breaches(19, 1.0, 1.0).is_empty(), "too few attempts");
        assert!(limits.breaches(0, 1.0, 1.0).is_empty());
        assert!(
            limits.breaches(20, 0.05, 0.0).is_empty(),
            "5 % is the limit"
        );
        let both = limits.breaches(20, 0.1, 0.05);
        assert_eq!(
            both.iter().map(|b| b.kind).collect::<Vec<_>>(),
            [RateKind::Error, RateKind::Timeout]
        );
        assert_eq!(
            both[0].to_string(),
            "error rate 10.0% over 20 attempts is above 5.0%"
        );
    }
}
