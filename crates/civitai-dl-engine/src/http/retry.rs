//! One retry policy for every request civitai-dl makes.
//!
//! Ad-hoc retries make a downloader both slow and flaky (`docs/design.md#retries`), so every API call, every download resolve and every file attempt goes through this one
//! policy. The decision ([`RetryPolicy::next_delay`]) is a pure function that tests drive without
//! sleeping; [`RetryPolicy::run`] is the thin async loop around it.
//!
//! Why staged delays of 5, 15, 30 and 60 s by default: Civitai's failures come in two shapes. Short
//! blips (a reset connection, a 503 "overloaded" with `Retry-After: 2`) clear within seconds, so the
//! first retry comes quickly. Longer trouble (Cloudflare 52x, maintenance pages) lasts minutes, so the
//! later stages back off hard instead of hammering a struggling server. Jitter spreads retries of
//! concurrent tasks so they do not arrive together. A `Retry-After` from the server wins over the
//! stage when it asks for longer, capped so a bogus header cannot park a run for hours.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The default stages: waits before the 1st, 2nd, 3rd and 4th retry.
pub const DEFAULT_DELAYS_MS: [u64; 4] = [5_000, 15_000, 30_000, 60_000];
/// Default jitter: each wait is stretched or shrunk by up to this fraction.
pub const DEFAULT_JITTER: f64 = 0.2;
/// A `Retry-After` longer than this is capped: a multi-hour header is a quota, not a blip, and is
/// handled as such by the caller.
pub const MAX_RETRY_AFTER_SECS: u64 = 300;

/// How a failure should be treated by the retry loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryClass {
    /// Retrying cannot help (404, 401, disk full, …): fail this target now.
    Fatal,
    /// A passing fault (timeout, reset, 5xx, truncated body, checksum mismatch).
    Transient {
        /// What the server asked for in `Retry-After`, if anything.
        retry_after: Option<Duration>,
    },
    /// The request's credential was renewed (an expired signed URL was forgotten): try again at
    /// once. Nothing is wrong with the server, so no stage of the budget is spent; the caller
    /// bounds how often it renews.
    Renewed,
}

/// Errors that know whether they are worth retrying.
pub trait Retryable {
    /// Classify this failure.
    fn retry_class(&self) -> RetryClass;

    /// Whether the failed attempt still moved the work forward (a transfer that resumed and
    /// wrote bytes before it broke). Such a failure restarts the stages: a 50 GB file on a link
    /// that drops every few minutes must not run out of retries while it keeps making progress.
    fn made_progress(&self) -> bool {
        false
    }
}

/// However much progress is made, a request gets at most this many times its normal attempts.
pub const PROGRESS_ATTEMPTS_FACTOR: usize = 10;

/// Staged retry delays with jitter; see the module docs for the reasoning.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    delays: Vec<Duration>,
    jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new(
            DEFAULT_DELAYS_MS
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
            DEFAULT_JITTER,
        )
    }
}

impl RetryPolicy {
    /// A policy that waits `delays[i]` before retry `i + 1`, so it makes `delays.len() + 1`
    /// attempts in all. `jitter` is clamped to `0.0..=1.0`.
    pub fn new(delays: Vec<Duration>, jitter: f64) -> Self {
        RetryPolicy {
            delays,
            jitter: jitter.clamp(0.0, 1.0),
        }
    }

    /// How many attempts a request gets before its last error is reported.
    pub fn max_attempts(&self) -> usize {
        self.delays.len() + 1
    }

    /// The pure decision: after `failures` failed attempts (1 for the first failure), wait how
    /// long before the next one, or `None` to give up. `jitter` stretches the stage (see
    /// [`Self::jittered`]); the server's `Retry-After` is a floor it never goes below.
    pub fn next_delay(
        &self,
        failures: usize,
        class: RetryClass,
        jitter: impl Fn(Duration) -> Duration,
    ) -> Option<Duration> {
        let retry_after = match class {
            RetryClass::Fatal => return None,
            RetryClass::Renewed => return Some(Duration::ZERO),
            RetryClass::Transient { retry_after } => retry_after,
        };
        let stage = jitter(*self.delays.get(failures.checked_sub(1)?)?);
        let asked = retry_after
            .map(|d| d.min(Duration::from_secs(MAX_RETRY_AFTER_SECS)))
            .unwrap_or_default();
        Some(stage.max(asked))
    }

    /// `delay` stretched or shrunk at random by up to the configured jitter.
    pub fn jittered(&self, delay: Duration) -> Duration {
        let factor = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        delay.mul_f64(factor.max(0.0))
    }

    /// Run `op` (given the 1-based attempt number) until it succeeds, fails fatally, runs out of
    /// attempts, or `cancel` fires during a wait. `on_retry(error, next)` is called before each
    /// wait (for logs and metrics). On cancellation the last error is returned;
    /// callers check the token to tell the cases apart.
    pub async fn run<T, E, F, Fut>(
        &self,
        cancel: &CancellationToken,
        mut op: F,
        mut on_retry: impl FnMut(&E, NextAttempt),
    ) -> Tried<T, E>
    where
        E: Retryable,
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut failures = 0;
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let error = match op(attempts).await {
                Ok(value) => break Ok(value),
                Err(error) => error,
            };
            let class = error.retry_class();
            failures = if error.made_progress() {
                1
            } else if class == RetryClass::Renewed {
                failures
            } else {
                failures + 1
            };
            if attempts >= self.max_attempts() * PROGRESS_ATTEMPTS_FACTOR {
                break Err(error);
            }
            let Some(delay) = self.next_delay(failures, class, |d| self.jittered(d)) else {
                break Err(error);
            };
            on_retry(
                &error,
                NextAttempt {
                    number: failures + 1,
                    of: self.max_attempts(),
                    delay,
                    renewed: class == RetryClass::Renewed,
                },
            );
            tokio::select! {
                () = cancel.cancelled() => break Err(error),
                () = tokio::time::sleep(delay) => {}
            }
        };
        Tried {
            result,
            attempts: attempts as u32,
        }
    }
}

/// The retry [`RetryPolicy::run`] is about to make, as a user is told about it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NextAttempt {
    /// Which attempt of the budget comes next (2 after the first failure). A failure that made
    /// progress restarts the stages, so a long transfer may count from 2 again.
    pub number: usize,
    /// Attempts in the budget.
    pub of: usize,
    /// The wait before it.
    pub delay: Duration,
    /// Whether it comes at once because a credential was renewed (it spends no stage).
    pub renewed: bool,
}

/// How [`RetryPolicy::run`] ended, and after how many attempts: an operation that needed more
/// than one either recovered automatically or did not (the recovery rate in the summary).
#[derive(Debug, PartialEq)]
pub struct Tried<T, E> {
    /// The last attempt's result.
    pub result: Result<T, E>,
    /// Attempts made, the last one included.
    pub attempts: u32,
}

/// The `Retry-After` of an answer, if it has a usable one.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// Parse a `Retry-After` header: delta-seconds or an HTTP date, capped at
/// [`MAX_RETRY_AFTER_SECS`] so a hostile or broken value cannot park the run.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(value).ok()?;
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
    };
    Some(wait.min(Duration::from_secs(MAX_RETRY_AFTER_SECS)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    #[derive(Debug, PartialEq)]
    struct Fault(RetryClass);
    impl Retryable for Fault {
        fn retry_class(&self) -> RetryClass {
            self.0
        }
    }
    const TIMEOUT: RetryClass = RetryClass::Transient { retry_after: None };

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn same(d: Duration) -> Duration {
        d
    }

    #[test]
    fn stages_then_give_up() {
        let policy = RetryPolicy::default();
        let waits: Vec<_> = (1..=5)
            .map(|n| policy.next_delay(n, TIMEOUT, same))
            .collect();
        assert_eq!(
            waits,
            vec![
                Some(Duration::from_secs(5)),
                Some(Duration::from_secs(15)),
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(60)),
                None
            ]
        );
        assert_eq!(policy.max_attempts(), 5);
    }

    #[test]
    fn fatal_is_never_retried() {
        assert_eq!(
            RetryPolicy::default().next_delay(1, RetryClass::Fatal, same),
            None
        );
    }

    #[test]
    fn retry_after_wins_only_when_longer_and_is_capped() {
        let policy = RetryPolicy::new(vec![ms(5_000)], 0.0);
        let longer = RetryClass::Transient {
            retry_after: Some(Duration::from_secs(20)),
        };
        let shorter = RetryClass::Transient {
            retry_after: Some(Duration::from_secs(1)),
        };
        let absurd = RetryClass::Transient {
            retry_after: Some(Duration::from_secs(86_400)),
        };
        assert_eq!(
            policy.next_delay(1, longer, same),
            Some(Duration::from_secs(20))
        );
        assert_eq!(policy.next_delay(1, shorter, same), Some(ms(5_000)));
        assert_eq!(
            policy.next_delay(1, absurd, same),
            Some(Duration::from_secs(MAX_RETRY_AFTER_SECS))
        );
    }

    #[test]
    fn jitter_never_undercuts_retry_after() {
        let policy = RetryPolicy::new(vec![ms(1_000)], 0.5);
        let asked = RetryClass::Transient {
            retry_after: Some(Duration::from_secs(MAX_RETRY_AFTER_SECS * 10)),
        };
        for _ in 0..100 {
            let wait = policy.next_delay(1, asked, |d| policy.jittered(d)).unwrap();
            assert_eq!(wait, Duration::from_secs(MAX_RETRY_AFTER_SECS));
        }
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let policy = RetryPolicy::new(vec![], 0.2);
        for _ in 0..1000 {
            let d = policy.jittered(ms(1000));
            assert!(d >= ms(800) && d <= ms(1200), "{d:?}");
        }
        assert_eq!(RetryPolicy::new(vec![], 0.0).jittered(ms(1000)), ms(1000));
    }

    /// A request that always times out is tried exactly 4 times, with the configured waits
    /// between attempts, and the timeout is what the caller sees.
    #[tokio::test]
    async fn four_attempts_with_configured_delays_then_the_timeout() {
        let policy = RetryPolicy::new(vec![ms(5), ms(15), ms(30)], 0.0);
        let calls = AtomicUsize::new(0);
        let mut waits = Vec::new();
        let started = Instant::now();
        let tried: Tried<(), Fault> = policy
            .run(
                &CancellationToken::new(),
                |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err(Fault(TIMEOUT)) }
                },
                |_, next| waits.push(next.delay),
            )
            .await;
        assert_eq!(tried.result, Err(Fault(TIMEOUT)));
        assert_eq!(tried.attempts, 4);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(waits, vec![ms(5), ms(15), ms(30)]);
        assert!(started.elapsed() >= ms(50));
    }

    /// A renewed credential is tried again at once and leaves the whole budget to real faults.
    #[tokio::test]
    async fn a_renewal_retries_at_once_without_spending_a_stage() {
        let policy = RetryPolicy::new(vec![ms(5), ms(15), ms(30)], 0.0);
        let mut waits = Vec::new();
        let tried: Tried<(), Fault> = policy
            .run(
                &CancellationToken::new(),
                |attempt| async move {
                    Err(Fault(if attempt == 1 {
                        RetryClass::Renewed
                    } else {
                        TIMEOUT
                    }))
                },
                |_, next| waits.push(next.delay),
            )
            .await;
        assert_eq!(
            tried.attempts, 5,
            "the renewal and four attempts of the budget"
        );
        assert_eq!(waits, vec![Duration::ZERO, ms(5), ms(15), ms(30)]);
    }

    #[tokio::test]
    async fn success_after_a_transient_failure() {
        let policy = RetryPolicy::new(vec![ms(1)], 0.0);
        let result: Tried<usize, Fault> = policy
            .run(
                &CancellationToken::new(),
                |attempt| async move {
                    if attempt == 1 {
                        Err(Fault(TIMEOUT))
                    } else {
                        Ok(attempt)
                    }
                },
                |_, _| {},
            )
            .await;
        assert_eq!(
            result,
            Tried {
                result: Ok(2),
                attempts: 2
            }
        );
    }

    #[derive(Debug)]
    struct Progressing;
    impl Retryable for Progressing {
        fn retry_class(&self) -> RetryClass {
            TIMEOUT
        }
        fn made_progress(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn progress_restarts_the_stages_up_to_a_cap() {
        let policy = RetryPolicy::new(vec![ms(1)], 0.0);
        let calls = AtomicUsize::new(0);
        let result = policy
            .run(
                &CancellationToken::new(),
                |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>(Progressing) }
                },
                |_, _| {},
            )
            .await
            .result;
        assert!(result.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            policy.max_attempts() * PROGRESS_ATTEMPTS_FACTOR
        );
    }

    #[tokio::test]
    async fn cancellation_interrupts_the_wait() {
        let policy = RetryPolicy::new(vec![Duration::from_secs(3600)], 0.0);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let started = Instant::now();
        let result: Result<(), Fault> = policy
            .run(&cancel, |_| async { Err(Fault(TIMEOUT)) }, |_, _| {})
            .await
            .result;
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn retry_after_header_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(Duration::from_secs(MAX_RETRY_AFTER_SECS))
        );
    }
}

#[cfg(test)]
mod props;
