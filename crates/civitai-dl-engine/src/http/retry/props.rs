//! Property tests of [`parse_retry_after`], which reads a header any server (or proxy) can set.
//!
//! - Delta-seconds round-trip up to [`MAX_RETRY_AFTER_SECS`] and are capped above it, up to
//!   `u64::MAX`; a number too large for `u64` is not a usable wait (`None`), never an overflow.
//! - An HTTP date `d` seconds ahead waits at most `min(d, cap)` (the clock moves on while the
//!   test runs, so never more); a past date waits zero.
//! - Anything else is `None`, and no input panics or exceeds the cap.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::props_config::cases;

const CAP: Duration = Duration::from_secs(MAX_RETRY_AFTER_SECS);

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn delta_seconds_round_trip_under_the_cap(secs in any::<u64>(), pad in "[ \t]{0,2}") {
        let parsed = parse_retry_after(&format!("{pad}{secs}{pad}"));
        prop_assert_eq!(parsed, Some(Duration::from_secs(secs.min(MAX_RETRY_AFTER_SECS))));
    }

    #[test]
    fn numbers_beyond_u64_are_ignored(digits in "[1-9][0-9]{20,40}") {
        prop_assert_eq!(parse_retry_after(&digits), None);
    }

    #[test]
    fn future_dates_wait_at_most_the_difference(ahead in 0u64..100_000) {
        let when = SystemTime::now() + Duration::from_secs(ahead);
        let wait = parse_retry_after(&httpdate::fmt_http_date(when));
        prop_assert!(wait.is_some_and(|w| w <= Duration::from_secs(ahead).min(CAP)), "{:?}", wait);
    }

    #[test]
    fn past_dates_wait_zero(ago in 1u64..1_000_000_000) {
        let when = SystemTime::now() - Duration::from_secs(ago);
        prop_assert_eq!(parse_retry_after(&httpdate::fmt_http_date(when)), Some(Duration::ZERO));
    }

    #[test]
    fn garbage_is_none_and_nothing_exceeds_the_cap(value in any::<String>()) {
        let parsed = parse_retry_after(&value);
        prop_assert!(parsed.is_none_or(|wait| wait <= CAP));
        let trimmed = value.trim();
        if trimmed.parse::<u64>().is_err() && httpdate::parse_http_date(trimmed).is_err() {
            prop_assert_eq!(parsed, None);
        }
    }
}
