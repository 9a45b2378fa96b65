//! The allowed range of each numeric setting, one table for the command line and the config file,
//! so `--segments 100000` and `segments = 100000` are refused alike, with the range in the message.
//!
//! The ranges are generous bounds on what makes sense, not tuning: `--segments 100000` once sent
//! about 100,000 range requests and 148,000 warnings in a minute; a zero timeout or concurrency
//! only ever fails.

use std::str::FromStr;

/// One setting's allowed values.
pub struct Limit {
    /// Its key in the config file, section included.
    pub key: &'static str,
    pub min: f64,
    pub max: f64,
    /// What the number counts, for the message.
    pub unit: &'static str,
}

pub const RATE_LIMIT: Limit = limit("network.rate_limit", 0.1, 10_000.0, "requests per second");
pub const RATE_BURST: Limit = limit("network.rate_burst", 1.0, 1000.0, "requests");
pub const CONNECT_TIMEOUT: Limit = limit("network.connect_timeout_secs", 1.0, 600.0, "seconds");
pub const READ_TIMEOUT: Limit = limit("network.read_timeout_secs", 1.0, 3600.0, "seconds");
pub const API_TIMEOUT: Limit = limit("network.api_timeout_secs", 1.0, 3600.0, "seconds");
pub const MIN_SPEED_WINDOW: Limit = limit("network.min_speed_window_secs", 1.0, 3600.0, "seconds");
pub const IMAGES: Limit = limit("images", 0.0, 100.0, "images per version");
pub const MAX_API: Limit = limit("experimental.max_concurrent_api", 1.0, 64.0, "requests");
pub const MAX_DOWNLOADS: Limit = limit("experimental.max_concurrent_downloads", 1.0, 64.0, "files");
pub const MAX_IMAGES: Limit = limit("experimental.max_concurrent_images", 1.0, 64.0, "images");
/// aria2's own ceiling for connections to one server.
pub const SEGMENTS: Limit = limit("experimental.segments", 1.0, 16.0, "connections");
pub const SEGMENT_THRESHOLD: Limit = limit(
    "experimental.segment_threshold_mib",
    1.0,
    1_048_576.0,
    "MiB",
);
/// A command-line value only (no config key): files `scan` hashes at once.
pub const HASH_JOBS: Limit = limit("hash_jobs", 1.0, 64.0, "files");
/// A command-line setting only (no config key); 0 turns the lines off.
pub const PROGRESS_INTERVAL: Limit = limit("progress_interval", 0.0, 86_400.0, "seconds");
pub const REPORT_INTERVAL: Limit = limit("monitor.report_interval_secs", 1.0, 86_400.0, "seconds");

const fn limit(key: &'static str, min: f64, max: f64, unit: &'static str) -> Limit {
    Limit {
        key,
        min,
        max,
        unit,
    }
}

/// The numbers settings are made of.
pub trait Number: FromStr + Copy + Send + Sync + 'static {
    fn as_f64(self) -> f64;
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            fn as_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
number!(u32, u64, usize, f64);

impl Limit {
    /// Whether `value` is allowed; the message says what is.
    pub fn check<T: Number>(&self, value: T) -> Result<T, String> {
        let v = value.as_f64();
        if v >= self.min && v <= self.max {
            Ok(value)
        } else {
            Err(format!(
                "must be between {} and {} {}",
                self.min, self.max, self.unit
            ))
        }
    }

    /// A clap value parser for this setting's flag.
    pub fn parser<T: Number>(&'static self) -> impl Fn(&str) -> Result<T, String> + Clone {
        move |text| {
            let value = text
                .trim()
                .parse::<T>()
                .map_err(|_| format!("'{text}' is not a number"))?;
            self.check(value)
        }
    }

    /// Check a config file's value, if it is set; the message names the key.
    pub fn check_key<T: Number + std::fmt::Display>(&self, value: Option<T>) -> Result<(), String> {
        match value {
            Some(value) => self
                .check(value)
                .map(drop)
                .map_err(|why| format!("{} = {value}: {why}", self.key)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_inside_pass_and_outside_name_the_range() {
        assert_eq!(SEGMENTS.check(4usize), Ok(4));
        assert_eq!(
            SEGMENTS.check(100_000usize),
            Err("must be between 1 and 16 connections".into())
        );
        assert!(
            RATE_LIMIT.check(f64::NAN).is_err(),
            "NaN is outside every range"
        );
        assert_eq!(
            RATE_LIMIT.check_key(Some(-1.0)),
            Err(
                "network.rate_limit = -1: must be between 0.1 and 10000 requests per second".into()
            )
        );
        assert_eq!(
            SEGMENTS.parser::<usize>()("0"),
            Err("must be between 1 and 16 connections".into())
        );
        assert!(
            SEGMENTS.parser::<usize>()("many")
                .unwrap_err()
                .contains("not a number")
        );
    }
}
