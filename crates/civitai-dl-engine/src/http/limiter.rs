//! The rate limiter in front of every request to Civitai.
//!
//! One [`RateLimiter`] is shared by API calls and download resolves (each resolve counts against
//! Civitai's download quota), so however many tasks run, the request rate never exceeds the limit.
//! Storage-host transfers are not limited: they are not Civitai API calls.
//!
//! governor cannot change its rate in place, so a server's "slow down" (`Retry-After` on a 429 or
//! 503) is a shared pause in front of the bucket: every task waits it out, not just the one that was
//! told. The bucket's burst is kept small on purpose: governor starts full, and a burst equal to the
//! rate lets a whole second's worth of requests through at once.
//!
//! Adaptive rate (experimental, `docs/design.md#experimental-pieces-and-their-defaults`): buckets for 1/8, 1/4, 1/2 and all of the
//! configured rate are built up front and one is selected at a time. A 429 steps down at once; the
//! average latency of every [`EVALUATE_EVERY`] answers steps down when slow (over 2 s) and up when
//! fast (under 0.5 s). The configured rate is the ceiling: an adaptive limiter could rise to twice
//! its base, but a user's `--rate-limit` must hold whatever the concurrency, so the base here
//! is the configured rate and adaptation only ever spends less of it.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota};
use tokio_util::sync::CancellationToken;

use crate::lock;

/// Default requests per second. Civitai publishes no limit; real API calls take 150–500 ms, so an
/// ordinary sequential run makes 2–6 requests a second and this ceiling does not slow it, while a
/// concurrent run cannot flood the API.
pub const DEFAULT_RATE_PER_SEC: f64 = 5.0;
/// Default burst: none. governor's bucket starts full and refills during idle spells and
/// `Retry-After` pauses; a burst larger than 1 would let more than the rate through in a second.
pub const DEFAULT_BURST: u32 = 1;

/// Fractions of the configured rate an adaptive limiter moves between, slowest first.
const LEVELS: [f64; 4] = [0.125, 0.25, 0.5, 1.0];
/// Answers averaged for each adaptive decision.
pub const EVALUATE_EVERY: usize = 10;
/// An average answer slower than this lowers the rate (2 s).
const SLOW: Duration = Duration::from_secs(2);
/// An average answer faster than this raises it again (0.5 s).
const FAST: Duration = Duration::from_millis(500);

/// A shared requests-per-second limit plus a shared pause for `Retry-After`.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Vec<DefaultDirectRateLimiter>,
    level: AtomicUsize,
    paused_until: Mutex<Option<Instant>>,
    rate_per_sec: f64,
    recent: Mutex<Vec<Duration>>,
}

impl RateLimiter {
    /// A limiter allowing `rate_per_sec` requests per second on average with bursts of `burst`.
    /// Rates are clamped to at least one request per hour and a burst of at least 1.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        Self::build(rate_per_sec, burst, &[1.0])
    }

    /// Like [`Self::new`], but the rate moves with the server's answers (see the module docs).
    pub fn adaptive(rate_per_sec: f64, burst: u32) -> Self {
        Self::build(rate_per_sec, burst, &LEVELS)
    }

    fn build(rate_per_sec: f64, burst: u32, levels: &[f64]) -> Self {
        let rate = rate_per_sec.max(1.0 / 3600.0);
        let buckets = levels
            .iter()
            .map(|fraction| {
                // Only the full rate gets the configured burst: a bucket selected later starts
                // full, and must not let a burst through at the moment the server asked for less.
                let burst = if *fraction >= 1.0 { burst } else { 1 };
                bucket(rate * fraction, burst)
            })
            .collect::<Vec<_>>();
        RateLimiter {
            level: AtomicUsize::new(buckets.len() - 1),
            buckets,
            paused_until: Mutex::new(None),
            rate_per_sec: rate,
            recent: Mutex::new(Vec::with_capacity(EVALUATE_EVERY)),
        }
    }

    /// The rate in force now, requests per second.
    pub fn current_rate(&self) -> f64 {
        let fraction = if self.buckets.len() == 1 {
            1.0
        } else {
            LEVELS[self.level.load(Ordering::Relaxed)]
        };
        self.rate_per_sec * fraction
    }

    /// Tell an adaptive limiter how an answer went: its latency, and whether it was a 429.
    pub fn observe(&self, latency: Duration, throttled: bool) {
        if self.buckets.len() == 1 {
            return;
        }
        let mut recent = lock(&self.recent);
        if throttled {
            recent.clear();
            self.step_down("Civitai answered 429");
            return;
        }
        recent.push(latency);
        if recent.len() < EVALUATE_EVERY {
            return;
        }
        let average = recent.iter().sum::<Duration>() / recent.len() as u32;
        recent.clear();
        if average > SLOW {
            self.step_down("answers are slow");
        } else if average < FAST {
            self.step_up();
        }
    }

    fn step_down(&self, why: &str) {
        let level = self.level.load(Ordering::Relaxed);
        if level > 0 {
            self.level.store(level - 1, Ordering::Relaxed);
            tracing::info!(
                "adaptive rate: {why}; lowering to {:.2} requests/s",
                self.current_rate()
            );
        }
    }

    fn step_up(&self) {
        let level = self.level.load(Ordering::Relaxed);
        if level + 1 < self.buckets.len() {
            self.level.store(level + 1, Ordering::Relaxed);
            tracing::debug!(
                "adaptive rate: answers are fast; raising to {:.2} requests/s",
                self.current_rate()
            );
        }
    }

    /// Wait until a request may be sent: first out any shared pause, then for a token.
    /// Returns `false` when `cancel` fired first.
    pub async fn acquire(&self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = cancel.cancelled() => false,
            () = self.wait_turn() => true,
        }
    }

    async fn wait_turn(&self) {
        while let Some(wait) = self.remaining_pause() {
            tokio::time::sleep(wait).await;
        }
        let level = self
            .level
            .load(Ordering::Relaxed)
            .min(self.buckets.len() - 1);
        self.buckets[level].until_ready().await;
    }

    /// Make every task wait `duration` before its next request (a server's `Retry-After`).
    /// A shorter pause never shortens one already in force.
    pub fn pause_for(&self, duration: Duration) {
        let Some(until) = Instant::now().checked_add(duration) else {
            return;
        };
        let mut paused = lock(&self.paused_until);
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    fn remaining_pause(&self) -> Option<Duration> {
        let paused = lock(&self.paused_until);
        paused
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

/// A token bucket for `rate` requests per second with bursts of `burst`.
fn bucket(rate: f64, burst: u32) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    DefaultDirectRateLimiter::direct(quota)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn steady_rate_after_the_burst() {
        let limiter = RateLimiter::new(50.0, 1);
        let started = Instant::now();
        for _ in 0..6 {
            limiter.acquire(&CancellationToken::new()).await;
        }
        // One immediate, then five spaced 20 ms apart.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(90), "{elapsed:?}");
    }

    #[tokio::test]
    async fn concurrency_does_not_raise_the_rate() {
        let limiter = Arc::new(RateLimiter::new(40.0, 1));
        let started = Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.acquire(&CancellationToken::new()).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(started.elapsed() >= Duration::from_millis(170));
    }

    #[tokio::test]
    async fn pause_holds_every_caller_and_never_shrinks() {
        let limiter = RateLimiter::new(1000.0, 10);
        limiter.pause_for(Duration::from_millis(80));
        limiter.pause_for(Duration::from_millis(10));
        let started = Instant::now();
        limiter.acquire(&CancellationToken::new()).await;
        assert!(started.elapsed() >= Duration::from_millis(75));
    }

    #[test]
    fn adaptive_rate_steps_down_on_429_and_slow_answers_and_back_up() {
        let limiter = RateLimiter::adaptive(8.0, 4);
        assert_eq!(limiter.current_rate(), 8.0);
        limiter.observe(Duration::from_millis(100), true);
        assert_eq!(limiter.current_rate(), 4.0);
        for _ in 0..EVALUATE_EVERY {
            limiter.observe(Duration::from_secs(3), false);
        }
        assert_eq!(limiter.current_rate(), 2.0);
        for _ in 0..3 {
            limiter.observe(Duration::ZERO, true);
        }
        assert_eq!(limiter.current_rate(), 1.0, "never below the slowest level");
        for _ in 0..10 * EVALUATE_EVERY {
            limiter.observe(Duration::from_millis(50), false);
        }
        assert_eq!(
            limiter.current_rate(),
            8.0,
            "never above the configured rate"
        );
    }

    #[test]
    fn a_fixed_limiter_ignores_feedback() {
        let limiter = RateLimiter::new(8.0, 4);
        limiter.observe(Duration::ZERO, true);
        assert_eq!(limiter.current_rate(), 8.0);
    }

    #[tokio::test]
    async fn cancellation_ends_the_wait() {
        let limiter = RateLimiter::new(1000.0, 10);
        limiter.pause_for(Duration::from_secs(3600));
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(!limiter.acquire(&cancel).await);
    }
}
