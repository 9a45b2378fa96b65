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

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota};
use tokio_util::sync::CancellationToken;

/// Default requests per second. Civitai publishes no limit; real API calls take 150–500 ms, so an
/// ordinary sequential run makes 2–6 requests a second and this ceiling does not slow it, while a
/// concurrent run cannot flood the API.
pub const DEFAULT_RATE_PER_SEC: f64 = 5.0;
/// Default burst: a few requests may go back to back after an idle spell.
pub const DEFAULT_BURST: u32 = 5;

/// A shared requests-per-second limit plus a shared pause for `Retry-After`.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<Instant>>,
    rate_per_sec: f64,
}

impl RateLimiter {
    /// A limiter allowing `rate_per_sec` requests per second on average with bursts of `burst`.
    /// Rates are clamped to at least one request per hour and a burst of at least 1.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        let rate = rate_per_sec.max(1.0 / 3600.0);
        let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        RateLimiter {
            bucket: DefaultDirectRateLimiter::direct(quota),
            paused_until: Mutex::new(None),
            rate_per_sec: rate,
        }
    }

    /// The configured average rate.
    pub fn rate_per_sec(&self) -> f64 {
        self.rate_per_sec
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
        self.bucket.until_ready().await;
    }

    /// Make every task wait `duration` before its next request (a server's `Retry-After`).
    /// A shorter pause never shortens one already in force.
    pub fn pause_for(&self, duration: Duration) {
        let Some(until) = Instant::now().checked_add(duration) else {
            return;
        };
        let mut paused = self
            .paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    fn remaining_pause(&self) -> Option<Duration> {
        let paused = self
            .paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        paused
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
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

    #[tokio::test]
    async fn cancellation_ends_the_wait() {
        let limiter = RateLimiter::new(1000.0, 10);
        limiter.pause_for(Duration::from_secs(3600));
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(!limiter.acquire(&cancel).await);
    }
}
