//! Property tests of [`parse_content_range`], which reads a header the storage host sets.
//!
//! Exactly what holds (read off the code):
//! - `bytes a-b/t` with `a <= b < t` and `bytes a-b/*` with `a <= b` round-trip, whatever the
//!   spaces around the numbers;
//! - `a > b` or `b >= t` is refused, and so is the unsatisfied form `bytes */t`;
//! - every accepted range has a length `b - a + 1` and an end `b + 1` that fit in `u64`: the
//!   callers compute both, so `bytes 0-18446744073709551615/*` must be refused too;
//! - anything else is `None`, never a panic.

use proptest::prelude::*;

use super::*;
use crate::props_config::cases;

/// Optional blanks, where the parser allows them.
fn blank() -> impl Strategy<Value = String> {
    "[ ]{0,2}".prop_map(String::from)
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn formatted_ranges_round_trip(
        (start, end, total) in (0..u64::MAX - 1)
            .prop_flat_map(|start| (Just(start), start..u64::MAX - 1))
            .prop_flat_map(|(start, end)| (Just(start), Just(end), proptest::option::of(end + 1..u64::MAX))),
        (a, b, c) in (blank(), blank(), blank()),
    ) {
        let total_text = total.map_or_else(|| "*".to_owned(), |t| t.to_string());
        let header = format!("{a}bytes {b}{start}-{end}{c}/{total_text}{a}");
        prop_assert_eq!(parse_content_range(&header), Some((start, end, total)));
    }

    #[test]
    fn backwards_ranges_and_ends_past_the_total_are_refused(
        start in any::<u64>(),
        end in any::<u64>(),
        total in any::<u64>(),
    ) {
        let parsed = parse_content_range(&format!("bytes {start}-{end}/{total}"));
        prop_assert_eq!(parsed.is_some(), start <= end && end < total);
        let parsed = parse_content_range(&format!("bytes {start}-{end}/*"));
        prop_assert_eq!(parsed.is_some(), start <= end && end < u64::MAX);
    }

    #[test]
    fn unsatisfied_ranges_are_refused(total in any::<u64>()) {
        prop_assert_eq!(parse_content_range(&format!("bytes */{total}")), None);
    }

    #[test]
    fn accepted_ranges_have_a_representable_length(value in content_range_like()) {
        if let Some((start, end, total)) = parse_content_range(&value) {
            prop_assert!(start <= end);
            prop_assert!(end.checked_add(1).is_some(), "{}", value);
            prop_assert!(total.is_none_or(|t| end < t));
        }
    }
}

/// Header-shaped noise: numbers near the edges of `u64`, odd separators, and plain garbage.
fn content_range_like() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0..3u64).prop_map(|d| (u64::MAX - d).to_string()),
        Just("18446744073709551616".to_owned()),
        Just("*".to_owned()),
        "[0-9 +-]{0,4}".prop_map(String::from),
    ];
    prop_oneof![
        (number.clone(), number.clone(), number, "[-/ ]{0,2}")
            .prop_map(|(a, b, t, junk)| format!("bytes {a}-{b}/{t}{junk}")),
        any::<String>(),
    ]
}
