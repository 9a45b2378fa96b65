//! Settings: built-in defaults, overridden by the config file, then the environment, then the
//! command line.
//!
//! The file format is documented, key by key, in `config/civitai-dl.toml`. Unknown keys and wrong
//! types are errors that name the key and the file: a typo in a setting must not be silently ignored
//! on a run that lasts hours.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{GlobalArgs, MonitorArgs, PerformanceArgs};
use civitai_dl_engine::http::limiter::{DEFAULT_BURST, DEFAULT_RATE_PER_SEC};
use civitai_dl_engine::http::retry::{DEFAULT_DELAYS_MS, DEFAULT_JITTER, RetryPolicy};
use civitai_dl_engine::observe::monitor::{
    AlertThresholds, DEFAULT_REPORT_INTERVAL_SECS, MIB, MonitorOptions,
};
use civitai_dl_engine::observe::rates::RateLimits;
use civitai_dl_engine::plan::naming::Layout;
use civitai_dl_engine::run::{Performance, Thresholds};
use civitai_dl_engine::sidecar::SidecarKind;

/// The official API host.
pub const DEFAULT_BASE_URL: &str = "https://civitai.com";
/// Connect timeout: a healthy host answers a SYN within seconds.
pub const CONNECT_TIMEOUT_SECS: u64 = 10;
/// Read timeout: five minutes of silence mid-transfer is a stall, not a slow link. There is
/// deliberately no total timeout: a 600 s total would kill every healthy multi-GB download.
pub const READ_TIMEOUT_SECS: u64 = 300;
/// Below this speed for [`MIN_SPEED_WINDOW_SECS`] a transfer is abandoned and resumed: a
/// connection that trickles would otherwise hold its slot for hours while a fresh one runs at
/// full speed. Low enough that no working link trips it.
pub const MIN_SPEED_BYTES_PER_SEC: u64 = 1024;
/// See [`MIN_SPEED_BYTES_PER_SEC`].
pub const MIN_SPEED_WINDOW_SECS: u64 = 60;
/// Whole-request limit for API calls (small JSON bodies; never used for file transfers).
pub const API_TIMEOUT_SECS: u64 = 60;

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with --config (or CIVITAI_DL_CONFIG) cannot be read.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML for our settings (unknown key, wrong type, syntax).
    #[error("config file {path}: {message}")]
    Parse {
        path: PathBuf,
        /// toml's description, which names the key and the line.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },
}

/// The config file as written by the user; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Civitai API key.
    pub api_key: Option<String>,
    /// API base URL.
    pub base_url: Option<String>,
    /// Fallback API hosts, in order.
    pub fallback_base_urls: Option<Vec<String>>,
    /// Default output directory.
    pub output: Option<PathBuf>,
    /// Default folder layout.
    pub layout: Option<Layout>,
    /// Write metadata sidecars at all.
    pub metadata: Option<bool>,
    /// Which sidecars to write.
    pub sidecars: Option<Vec<SidecarKind>>,
    /// Preview images per version.
    pub images: Option<usize>,
    /// Ask listings for NSFW models too.
    pub include_nsfw: Option<bool>,
    /// Network settings.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Retry settings.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Download settings.
    #[serde(default)]
    pub download: DownloadConfig,
    /// Opt-in concurrency.
    #[serde(default)]
    pub experimental: ExperimentalConfig,
    /// When concurrency falls back to sequential.
    #[serde(default)]
    pub failsafe: FailsafeConfig,
    /// The performance monitor and its alerts.
    #[serde(default)]
    pub monitor: MonitorConfig,
}

/// `[monitor]` in the config file (resolved with its flags by [`civitai_dl_engine::observe::monitor::MonitorOptions`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Seconds between monitor lines and alert checks.
    pub report_interval_secs: Option<u64>,
    /// Alert when failed attempts over attempts pass this fraction.
    pub alert_error_rate: Option<f64>,
    /// Alert when timed-out attempts over attempts pass this fraction.
    pub alert_timeout_rate: Option<f64>,
    /// Alert when peak resident memory passes this many MiB.
    pub alert_memory_mib: Option<u64>,
    /// Alert when throughput falls more than this fraction below the baseline.
    pub alert_throughput_drop: Option<f64>,
    /// Attempts a window must hold before its error and timeout rates are judged.
    pub alert_min_attempts: Option<u64>,
    /// The expected throughput, MB/s (no throughput alert without one).
    pub baseline_throughput_mb_per_sec: Option<f64>,
}

/// `[experimental]` in the config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentalConfig {
    /// Same as --enable-experimental-performance.
    pub enabled: Option<bool>,
    /// Same as --force-sync-mode.
    pub force_sync_mode: Option<bool>,
    /// Fetch metadata of several targets at once.
    pub parallel_api: Option<bool>,
    /// Fetch preview images in a pool.
    pub parallel_images: Option<bool>,
    /// Download several model files at once.
    pub parallel_download: Option<bool>,
    /// Split large files over several connections.
    pub segmented: Option<bool>,
    /// Move the request rate with the server's answers.
    pub adaptive_rate: Option<bool>,
    /// API calls in flight.
    pub max_concurrent_api: Option<usize>,
    /// Downloads in flight.
    pub max_concurrent_downloads: Option<usize>,
    /// Previews in flight.
    pub max_concurrent_images: Option<usize>,
    /// Connections per large file.
    pub segments: Option<usize>,
    /// Files at least this large (MiB) are segmented.
    pub segment_threshold_mib: Option<u64>,
}

/// `[failsafe]` in the config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailsafeConfig {
    /// Failures in a row that trip it.
    pub consecutive_failures: Option<u32>,
    /// Error rate that trips it.
    pub error_rate: Option<f64>,
    /// Timeout rate that trips it.
    pub timeout_rate: Option<f64>,
    /// Attempts needed before rates count.
    pub min_sample: Option<usize>,
    /// Attempts in the sliding window.
    pub window: Option<usize>,
    /// The emergency stop file's name or path.
    pub emergency_stop_file: Option<PathBuf>,
}

/// The experimental pieces, by the names `--experimental` takes.
pub const PIECES: [&str; 5] = [
    "parallel_api",
    "parallel_images",
    "parallel_download",
    "segmented",
    "adaptive_rate",
];

/// Defaults once experimental performance is on (`docs/design.md#experimental-pieces-and-their-defaults`).
const DEFAULT_MAX_API: usize = 2;
const DEFAULT_MAX_DOWNLOADS: usize = 2;
const DEFAULT_MAX_IMAGES: usize = 2;
const DEFAULT_SEGMENTS: usize = 4;
const DEFAULT_SEGMENT_THRESHOLD_MIB: u64 = 64;
/// The emergency stop file's default name.
pub const EMERGENCY_STOP_FILE: &str = "EMERGENCY_STOP";

/// Resolve the concurrency from the config file and the command line. Returns warnings for
/// settings that have no effect (a concurrency flag without the experimental switch).
pub fn performance(
    file: &ExperimentalConfig,
    failsafe: &FailsafeConfig,
    args: &PerformanceArgs,
) -> Result<(Performance, Vec<String>), ConfigError> {
    for piece in &args.experimental {
        if !PIECES.contains(&piece.as_str()) {
            return Err(ConfigError::Invalid {
                key: "experimental",
                message: format!("unknown piece '{piece}'; known: {}", PIECES.join(", ")),
            });
        }
    }
    let force_sync = args.force_sync_mode || file.force_sync_mode.unwrap_or(false);
    let enabled = args.enable_experimental_performance
        || !args.experimental.is_empty()
        || file.enabled.unwrap_or(false);
    let on = |piece: &str, configured: Option<bool>| {
        enabled
            && !force_sync
            && if args.experimental.is_empty() {
                configured.unwrap_or(true)
            } else {
                args.experimental.iter().any(|p| p == piece)
            }
    };
    let limit = |flag: Option<usize>, configured: Option<usize>, default: usize| {
        flag.or(configured).unwrap_or(default).max(1)
    };
    let parallel_api = on("parallel_api", file.parallel_api);
    let parallel_download = on("parallel_download", file.parallel_download);
    let parallel_images = on("parallel_images", file.parallel_images);
    let segmented = on("segmented", file.segmented);
    let mut warnings = Vec::new();
    let given = [
        (
            "--max-concurrent-api",
            args.max_concurrent_api,
            parallel_api,
        ),
        (
            "--max-concurrent-downloads",
            args.max_concurrent_downloads,
            parallel_download,
        ),
        (
            "--max-concurrent-images",
            args.max_concurrent_images,
            parallel_images,
        ),
        ("--segments", args.segments, segmented),
    ];
    for (flag, value, active) in given {
        if value.is_some() && !active {
            warnings.push(if force_sync {
                format!("{flag} is ignored: --force-sync-mode runs one request at a time")
            } else {
                format!(
                    "{flag} is ignored without --enable-experimental-performance (or its \
                     piece in --experimental); the run stays sequential"
                )
            });
        }
    }
    let defaults = Thresholds::default();
    let thresholds = Thresholds {
        consecutive_failures: failsafe
            .consecutive_failures
            .unwrap_or(defaults.consecutive_failures)
            .max(1),
        rates: RateLimits {
            error_rate: failsafe.error_rate.unwrap_or(defaults.rates.error_rate),
            timeout_rate: failsafe.timeout_rate.unwrap_or(defaults.rates.timeout_rate),
            min_sample: failsafe
                .min_sample
                .map_or(defaults.rates.min_sample, |n| n as u64),
        },
        window: failsafe.window.unwrap_or(defaults.window).max(1),
    };
    let performance = Performance {
        concurrent: parallel_api || parallel_download || parallel_images || segmented,
        api: if parallel_api {
            limit(
                args.max_concurrent_api,
                file.max_concurrent_api,
                DEFAULT_MAX_API,
            )
        } else {
            1
        },
        downloads: if parallel_download {
            limit(
                args.max_concurrent_downloads,
                file.max_concurrent_downloads,
                DEFAULT_MAX_DOWNLOADS,
            )
        } else {
            1
        },
        images: if parallel_images {
            limit(
                args.max_concurrent_images,
                file.max_concurrent_images,
                DEFAULT_MAX_IMAGES,
            )
        } else {
            1
        },
        segments: if segmented {
            limit(args.segments, file.segments, DEFAULT_SEGMENTS)
        } else {
            1
        },
        segment_threshold: file
            .segment_threshold_mib
            .unwrap_or(DEFAULT_SEGMENT_THRESHOLD_MIB)
            .max(1)
            * 1024
            * 1024,
        adaptive_rate: on("adaptive_rate", file.adaptive_rate),
        thresholds,
        emergency_stop_file: args
            .emergency_stop_file
            .clone()
            .or_else(|| failsafe.emergency_stop_file.clone())
            .unwrap_or_else(|| PathBuf::from(EMERGENCY_STOP_FILE)),
    };
    Ok((performance, warnings))
}

/// `[network]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Requests per second.
    pub rate_limit: Option<f64>,
    /// Burst size.
    pub rate_burst: Option<u32>,
    /// Connect timeout, seconds.
    pub connect_timeout_secs: Option<u64>,
    /// Read (stall) timeout, seconds.
    pub read_timeout_secs: Option<u64>,
    /// API call timeout, seconds.
    pub api_timeout_secs: Option<u64>,
    /// Minimum speed in bytes per second (0 = off).
    pub min_speed_bytes_per_sec: Option<u64>,
    /// Window for the minimum speed, seconds.
    pub min_speed_window_secs: Option<u64>,
}

/// `[retry]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Waits before each retry, milliseconds.
    pub delays_ms: Option<Vec<u64>>,
    /// Jitter fraction.
    pub jitter: Option<f64>,
}

/// `[download]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadConfig {
    /// Keep files whose published hash is wrong.
    pub accept_hash_mismatch: Option<bool>,
}

/// Resolved network settings.
#[derive(Clone, Debug)]
pub struct Network {
    /// Requests per second to Civitai.
    pub rate_limit: f64,
    /// Burst size.
    pub rate_burst: u32,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Stall timeout for transfers.
    pub read_timeout: Duration,
    /// Whole-request timeout for API calls.
    pub api_timeout: Duration,
    /// Abort an attempt slower than this many bytes/s over `min_speed_window` (0 = off).
    pub min_speed: u64,
    /// The window for `min_speed`.
    pub min_speed_window: Duration,
}

/// Everything a command needs, resolved from defaults, file, environment and command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// API key, if any. Never logged, never written anywhere.
    pub api_key: Option<String>,
    /// Primary API base URL, without a trailing slash.
    pub base_url: String,
    /// Fallback base URLs.
    pub fallback_base_urls: Vec<String>,
    /// Default output directory.
    pub output: PathBuf,
    /// Folder layout.
    pub layout: Layout,
    /// The sidecars to write (empty with `metadata = false`).
    pub sidecars: Vec<SidecarKind>,
    /// Preview images per version.
    pub images: usize,
    /// Ask listings for NSFW models too.
    pub include_nsfw: bool,
    /// Network settings.
    pub network: Network,
    /// The one retry policy.
    pub retry: RetryPolicy,
    /// Keep files whose published hash is wrong.
    pub accept_hash_mismatch: bool,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// `[experimental]` as written (resolved per command with its flags).
    pub experimental: ExperimentalConfig,
    /// `[failsafe]` as written.
    pub failsafe: FailsafeConfig,
    /// `[monitor]` as written (resolved per command with its flags).
    pub monitor: MonitorConfig,
}

impl Settings {
    /// Resolve settings: defaults < config file < environment < command line.
    pub fn load(global: &GlobalArgs) -> Result<Settings, ConfigError> {
        let config_file = global.config.clone().or_else(default_config_path);
        let file = match &config_file {
            Some(path) => read_config_file(path, global.config.is_some())?,
            None => None,
        };
        let loaded_from = file.as_ref().and(config_file);
        Settings::resolve(global, file.unwrap_or_default(), loaded_from, env_api_key)
    }

    /// Merge an already parsed file with the command line (which clap has merged with the
    /// environment). `extra_env_key` looks up the key under the other tools' variable names.
    pub fn resolve(
        global: &GlobalArgs,
        file: FileConfig,
        config_file: Option<PathBuf>,
        extra_env_key: impl Fn() -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let net = file.network;
        let delays = global
            .retry_delays_ms
            .clone()
            .or(file.retry.delays_ms)
            .unwrap_or_else(|| DEFAULT_DELAYS_MS.to_vec());
        let jitter = file.retry.jitter.unwrap_or(DEFAULT_JITTER);
        if !(0.0..=1.0).contains(&jitter) {
            return Err(invalid("retry.jitter", "must be between 0.0 and 1.0"));
        }
        let rate_limit = global
            .rate_limit
            .or(net.rate_limit)
            .unwrap_or(DEFAULT_RATE_PER_SEC);
        let base_url = global
            .base_url
            .clone()
            .or(file.base_url)
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let fallback_base_urls = if global.fallback_base_urls.is_empty() {
            file.fallback_base_urls.unwrap_or_default()
        } else {
            global.fallback_base_urls.clone()
        };
        let api_key = global
            .api_key
            .clone()
            .or_else(extra_env_key)
            .or(file.api_key)
            .map(|key| key.trim().to_string())
            .filter(|key| !key.is_empty());
        if let Some(key) = &api_key
            && reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).is_err()
        {
            return Err(invalid(
                "api_key",
                "contains characters that cannot be sent in an HTTP header; copy the key from \
                 https://civitai.com/user/account again",
            ));
        }
        Ok(Settings {
            api_key,
            base_url: check_base_url("base_url", &base_url)?,
            fallback_base_urls: fallback_base_urls
                .iter()
                .map(|url| check_base_url("fallback_base_url", url))
                .collect::<Result<_, _>>()?,
            output: file.output.unwrap_or_else(|| PathBuf::from(".")),
            layout: file.layout.unwrap_or(Layout::Flat),
            sidecars: if file.metadata.unwrap_or(true) {
                file.sidecars
                    .unwrap_or_else(|| vec![SidecarKind::CivitaiInfo])
            } else {
                Vec::new()
            },
            images: file.images.unwrap_or(0),
            include_nsfw: file.include_nsfw.unwrap_or(true),
            network: Network {
                rate_limit,
                rate_burst: global
                    .rate_burst
                    .or(net.rate_burst)
                    .unwrap_or(DEFAULT_BURST)
                    .max(1),
                connect_timeout: secs(
                    global
                        .connect_timeout
                        .or(net.connect_timeout_secs)
                        .unwrap_or(CONNECT_TIMEOUT_SECS),
                ),
                read_timeout: secs(
                    global
                        .read_timeout
                        .or(net.read_timeout_secs)
                        .unwrap_or(READ_TIMEOUT_SECS),
                ),
                api_timeout: secs(net.api_timeout_secs.unwrap_or(API_TIMEOUT_SECS)),
                min_speed: net
                    .min_speed_bytes_per_sec
                    .unwrap_or(MIN_SPEED_BYTES_PER_SEC),
                min_speed_window: secs(net.min_speed_window_secs.unwrap_or(MIN_SPEED_WINDOW_SECS)),
            },
            retry: RetryPolicy::new(
                delays.into_iter().map(Duration::from_millis).collect(),
                jitter,
            ),
            accept_hash_mismatch: file.download.accept_hash_mismatch.unwrap_or(false),
            config_file,
            experimental: file.experimental,
            failsafe: file.failsafe,
            monitor: file.monitor,
        })
    }
}

/// The monitor's options: flags over the config file over the defaults; out-of-range values are
/// refused.
pub fn monitor_options(
    file: &MonitorConfig,
    args: &MonitorArgs,
) -> Result<MonitorOptions, ConfigError> {
    let defaults = AlertThresholds::default();
    let interval = args
        .report_interval
        .or(file.report_interval_secs)
        .unwrap_or(DEFAULT_REPORT_INTERVAL_SECS);
    let baseline = args
        .baseline_throughput
        .or(file.baseline_throughput_mb_per_sec);
    if baseline.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
        return Err(invalid(
            "baseline_throughput",
            "must be a positive number of MB/s",
        ));
    }
    let alerts = AlertThresholds {
        rates: RateLimits {
            error_rate: fraction(
                "alert_error_rate",
                file.alert_error_rate,
                defaults.rates.error_rate,
            )?,
            timeout_rate: fraction(
                "alert_timeout_rate",
                file.alert_timeout_rate,
                defaults.rates.timeout_rate,
            )?,
            min_sample: file.alert_min_attempts.unwrap_or(defaults.rates.min_sample),
        },
        memory_bytes: file
            .alert_memory_mib
            .map_or(defaults.memory_bytes, |mib| mib.saturating_mul(MIB)),
        baseline_throughput: baseline,
        throughput_drop: fraction(
            "alert_throughput_drop",
            file.alert_throughput_drop,
            defaults.throughput_drop,
        )?,
    };
    Ok(MonitorOptions {
        print: args.monitor_performance,
        interval: Duration::from_secs(interval),
        metrics_json: args.metrics_json.clone(),
        alerts,
    })
}

fn fraction(key: &'static str, value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    let value = value.unwrap_or(default);
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(key, "must be a fraction between 0.0 and 1.0"))
    }
}

fn secs(value: u64) -> Duration {
    Duration::from_secs(value.max(1))
}

fn invalid(key: &'static str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.to_string(),
    }
}

fn check_base_url(key: &'static str, url: &str) -> Result<String, ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ConfigError::Invalid {
        key,
        message: format!("'{url}' is not a URL ({e}); expected e.g. https://civitai.com"),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ConfigError::Invalid {
            key,
            message: format!("'{url}' must be an http(s) URL such as https://civitai.com"),
        });
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn env_api_key() -> Option<String> {
    civitai_dl_engine::env::EXTRA_KEY_VARS
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// `civitai-dl/config.toml` in the user's config directory: `%APPDATA%` on Windows,
/// `$XDG_CONFIG_HOME` or `~/.config` elsewhere. Only returned when the file exists.
fn default_config_path() -> Option<PathBuf> {
    let base = if cfg!(windows) {
        std::env::var_os("APPDATA").map(PathBuf::from)
    } else {
        std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))
    }?;
    let path = base.join("civitai-dl").join("config.toml");
    path.is_file().then_some(path)
}

/// Read and parse a config file. A missing default file is fine; a missing explicit one is not.
fn read_config_file(path: &Path, explicit: bool) -> Result<Option<FileConfig>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    parse_config(&text, path).map(Some)
}

/// Parse config text; errors name the file and toml's description of the key and line.
pub fn parse_config(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    let parse_error = |message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let config: FileConfig =
        toml::from_str(text).map_err(|e| parse_error(e.to_string().trim().replace('\n', " ")))?;
    check_ranges(&config).map_err(parse_error)?;
    Ok(config)
}

/// Every numeric key of the file within its range ([`limits`]), the first that is not named.
fn check_ranges(config: &FileConfig) -> Result<(), String> {
    let (network, experimental) = (&config.network, &config.experimental);
    limits::RATE_LIMIT.check_key(network.rate_limit)?;
    limits::RATE_BURST.check_key(network.rate_burst)?;
    limits::CONNECT_TIMEOUT.check_key(network.connect_timeout_secs)?;
    limits::READ_TIMEOUT.check_key(network.read_timeout_secs)?;
    limits::API_TIMEOUT.check_key(network.api_timeout_secs)?;
    limits::MIN_SPEED_WINDOW.check_key(network.min_speed_window_secs)?;
    limits::IMAGES.check_key(config.images)?;
    limits::MAX_API.check_key(experimental.max_concurrent_api)?;
    limits::MAX_DOWNLOADS.check_key(experimental.max_concurrent_downloads)?;
    limits::MAX_IMAGES.check_key(experimental.max_concurrent_images)?;
    limits::SEGMENTS.check_key(experimental.segments)?;
    limits::SEGMENT_THRESHOLD.check_key(experimental.segment_threshold_mib)?;
    limits::REPORT_INTERVAL.check_key(config.monitor.report_interval_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["civitai-dl"];
        argv.extend_from_slice(args);
        argv.push("info");
        crate::cli::Cli::parse_from(argv).global
    }

    fn resolve(args: &[&str], toml_text: &str) -> Result<Settings, ConfigError> {
        let file = parse_config(toml_text, Path::new("test.toml"))?;
        Settings::resolve(&global(args), file, None, || None)
    }

    /// The `[default: …]` of each `--help` line is written by hand (the value comes from the
    /// config file when one sets it, so clap cannot know it): it must say what an empty config
    /// resolves to.
    #[test]
    fn the_defaults_help_shows_are_the_resolved_ones() {
        use clap::CommandFactory;
        let mut cli = crate::cli::Cli::command();
        cli.build();
        let help = cli
            .find_subcommand_mut("download")
            .expect("download")
            .render_long_help()
            .to_string();
        // Each option is its header line (indented by up to 6 spaces) and the lines under it.
        let option = |flag: &str| -> String {
            let mut lines = help.lines().skip_while(|l| {
                !l.trim_start().starts_with(flag) && !l.contains(&format!(", {flag}"))
            });
            let header = lines
                .next()
                .unwrap_or_else(|| panic!("{flag} is not in the help"));
            let body = lines.take_while(|l| !l.starts_with("  ") || l.starts_with("       "));
            std::iter::once(header)
                .chain(body)
                .collect::<Vec<_>>()
                .join(" ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let s = resolve(&[], "").unwrap();
        let delays: Vec<String> = DEFAULT_DELAYS_MS.iter().map(u64::to_string).collect();
        for (flag, default) in [
            ("--base-url", s.base_url.clone()),
            ("--rate-limit", s.network.rate_limit.to_string()),
            ("--rate-burst", s.network.rate_burst.to_string()),
            ("--retry-delays-ms", delays.join(",")),
            (
                "--connect-timeout",
                s.network.connect_timeout.as_secs().to_string(),
            ),
            (
                "--read-timeout",
                s.network.read_timeout.as_secs().to_string(),
            ),
            ("--images", s.images.to_string()),
            ("--min-speed <", format!("{}; 0 = off", s.network.min_speed)),
            (
                "--min-speed-window",
                s.network.min_speed_window.as_secs().to_string(),
            ),
            (
                "--report-interval",
                DEFAULT_REPORT_INTERVAL_SECS.to_string(),
            ),
            ("--max-concurrent-api", DEFAULT_MAX_API.to_string()),
            (
                "--max-concurrent-downloads",
                DEFAULT_MAX_DOWNLOADS.to_string(),
            ),
            ("--max-concurrent-images", DEFAULT_MAX_IMAGES.to_string()),
            ("--segments", DEFAULT_SEGMENTS.to_string()),
        ] {
            let text = option(flag);
            assert!(
                text.contains(&format!("[default: {default}]")),
                "{flag} should show [default: {default}]: {text}"
            );
        }
    }

    #[test]
    fn sidecars_come_from_the_file_and_metadata_false_turns_them_off() {
        let s = resolve(&[], "sidecars = [\"a1111-json\", \"lm-metadata\"]\n").unwrap();
        assert_eq!(
            s.sidecars,
            [SidecarKind::A1111Json, SidecarKind::LmMetadata]
        );
        let s = resolve(&[], "metadata = false\nsidecars = [\"a1111-json\"]\n").unwrap();
        assert!(s.sidecars.is_empty());
        let error = resolve(&[], "sidecars = [\"a1111\"]\n").unwrap_err();
        assert!(error.to_string().contains("sidecars"), "{error}");
    }

    #[test]
    fn defaults_without_file_or_flags() {
        let s = resolve(&[], "").unwrap();
        assert_eq!(s.base_url, DEFAULT_BASE_URL);
        assert_eq!(s.network.rate_limit, DEFAULT_RATE_PER_SEC);
        assert_eq!(
            s.network.read_timeout,
            Duration::from_secs(READ_TIMEOUT_SECS)
        );
        assert_eq!(s.retry, RetryPolicy::default());
        assert!(s.include_nsfw && s.api_key.is_none());
        assert_eq!(s.sidecars, [SidecarKind::CivitaiInfo]);
        assert_eq!(
            (s.network.min_speed, s.network.min_speed_window),
            (1024, Duration::from_secs(60)),
            "a connection trickling below 1 KiB/s for a minute is abandoned and resumed"
        );
    }

    #[test]
    fn command_line_beats_file_beats_default() {
        let text =
            "base_url = \"https://civitai.red/\"\n[network]\nrate_limit = 2.0\nrate_burst = 3\n";
        let s = resolve(&["--rate-limit", "9"], text).unwrap();
        assert_eq!(s.network.rate_limit, 9.0);
        assert_eq!(s.network.rate_burst, 3);
        assert_eq!(s.base_url, "https://civitai.red");
    }

    #[test]
    fn key_precedence_cli_then_other_env_names_then_file() {
        let file = || parse_config("api_key = \"from-file\"", Path::new("t")).unwrap();
        let from_env = || Some("from-env".to_string());
        let s = Settings::resolve(&global(&["--api-key", "cli"]), file(), None, from_env).unwrap();
        assert_eq!(s.api_key.as_deref(), Some("cli"));
        let s = Settings::resolve(&global(&[]), file(), None, from_env).unwrap();
        assert_eq!(s.api_key.as_deref(), Some("from-env"));
        let s = Settings::resolve(&global(&[]), file(), None, || None).unwrap();
        assert_eq!(s.api_key.as_deref(), Some("from-file"));
    }

    #[test]
    fn unknown_key_and_wrong_type_name_the_key_and_file() {
        let err = resolve(&[], "[network]\nrate_limt = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rate_limt") && err.contains("test.toml"),
            "{err}"
        );
        let err = resolve(&[], "images = \"four\"\n").unwrap_err().to_string();
        assert!(err.contains("images") && err.contains("test.toml"), "{err}");
    }

    #[test]
    fn a_key_with_control_characters_is_refused_without_echoing_it() {
        let err = resolve(&["--api-key", "abc\u{1}secret"], "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("api_key") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(resolve(&["--base-url", "civitai.com"], "").is_err());
        let zero_rate = ["civitai-dl", "--rate-limit", "0", "info"];
        assert!(crate::cli::Cli::try_parse_from(zero_rate).is_err());
        assert!(resolve(&[], "[network]\nrate_limit = 0.0\n").is_err());
        assert!(resolve(&[], "[retry]\njitter = 3.0\n").is_err());
    }

    #[test]
    fn retry_delays_from_the_command_line_in_ms() {
        let s = resolve(&["--retry-delays-ms", "1,2,3"], "").unwrap();
        assert_eq!(s.retry.max_attempts(), 4);
    }

    fn performance(args: &[&str], toml_text: &str) -> (Performance, Vec<String>) {
        let mut argv = vec!["civitai-dl", "download", "1"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::parse_from(argv);
        let crate::cli::Command::Download(download) = cli.command else {
            unreachable!()
        };
        let file = parse_config(toml_text, Path::new("t")).unwrap();
        super::performance(&file.experimental, &file.failsafe, &download.performance).unwrap()
    }

    #[test]
    fn plain_runs_stay_sequential_and_say_so() {
        let (p, warnings) = performance(&["--max-concurrent-downloads", "8"], "");
        assert!(!p.concurrent);
        assert_eq!((p.api, p.downloads, p.images, p.segments), (1, 1, 1, 1));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("--max-concurrent-downloads is ignored"));
    }

    #[test]
    fn the_switch_turns_on_the_plans_defaults() {
        let (p, warnings) = performance(&["--enable-experimental-performance"], "");
        assert!(p.concurrent && p.adaptive_rate && warnings.is_empty());
        assert_eq!((p.api, p.downloads, p.images, p.segments), (2, 2, 2, 4));
        let (p, _) = performance(
            &[
                "--enable-experimental-performance",
                "--max-concurrent-api",
                "8",
            ],
            "[experimental]\nparallel_download = false\n",
        );
        assert_eq!((p.api, p.downloads), (8, 1));
    }

    #[test]
    fn pieces_one_by_one_and_force_sync_wins() {
        let (p, _) = performance(&["--experimental", "parallel_download,segmented"], "");
        assert_eq!((p.api, p.downloads, p.images, p.segments), (1, 2, 1, 4));
        assert!(!p.adaptive_rate);
        let (p, warnings) = performance(
            &[
                "--enable-experimental-performance",
                "--force-sync-mode",
                "--segments",
                "8",
            ],
            "",
        );
        assert!(!p.concurrent);
        assert_eq!((p.api, p.downloads, p.images, p.segments), (1, 1, 1, 1));
        assert!(warnings[0].contains("--force-sync-mode"));
    }

    #[test]
    fn unknown_pieces_are_refused() {
        let cli = crate::cli::Cli::parse_from([
            "civitai-dl",
            "download",
            "1",
            "--experimental",
            "warp_drive",
        ]);
        let crate::cli::Command::Download(download) = cli.command else {
            unreachable!()
        };
        let err = super::performance(
            &Default::default(),
            &Default::default(),
            &download.performance,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("warp_drive") && err.contains("parallel_api"),
            "{err}"
        );
    }

    #[test]
    fn shipped_config_file_parses_and_matches_the_defaults() {
        let text = include_str!("../config/civitai-dl.toml");
        let s = resolve(&[], text).unwrap();
        let d = resolve(&[], "").unwrap();
        assert_eq!(s.base_url, d.base_url);
        assert_eq!(s.network.rate_limit, d.network.rate_limit);
        assert_eq!(s.network.rate_burst, d.network.rate_burst);
        assert_eq!(s.network.read_timeout, d.network.read_timeout);
        assert_eq!(s.retry, d.retry);
        assert_eq!(s.layout, d.layout);
        assert_eq!(s.include_nsfw, d.include_nsfw);
        let none = PerformanceArgs::default();
        let on = PerformanceArgs {
            enable_experimental_performance: true,
            ..PerformanceArgs::default()
        };
        for args in [none, on] {
            let shipped = super::performance(&s.experimental, &s.failsafe, &args).unwrap();
            let default = super::performance(&d.experimental, &d.failsafe, &args).unwrap();
            assert_eq!(shipped, default);
        }
        let flags = crate::cli::MonitorArgs::default();
        let shipped = monitor_options(&s.monitor, &flags).unwrap();
        let default = monitor_options(&d.monitor, &flags).unwrap();
        assert_eq!(shipped, default);
    }

    fn monitor(args: &[&str], toml_text: &str) -> Result<MonitorOptions, ConfigError> {
        use clap::Parser;
        let mut argv = vec!["civitai-dl", "download", "1"];
        argv.extend_from_slice(args);
        let crate::cli::Command::Download(download) = crate::cli::Cli::parse_from(argv).command
        else {
            unreachable!("a download command line")
        };
        let file = parse_config(toml_text, Path::new("t.toml"))?;
        monitor_options(&file.monitor, &download.monitor)
    }

    #[test]
    fn flags_beat_the_config_file_beats_the_defaults() {
        let o = monitor(&[], "").unwrap();
        assert_eq!(
            o.interval,
            Duration::from_secs(DEFAULT_REPORT_INTERVAL_SECS)
        );
        assert_eq!(o.alerts, AlertThresholds::default());
        assert!(!o.print && o.metrics_json.is_none());
        let file = "[monitor]\nreport_interval_secs = 5\nbaseline_throughput_mb_per_sec = 3.0\n\
                    alert_memory_mib = 512\nalert_error_rate = 0.2\n";
        let o = monitor(&[], file).unwrap();
        assert_eq!(o.interval, Duration::from_secs(5));
        assert_eq!(o.alerts.baseline_throughput, Some(3.0));
        assert_eq!(o.alerts.memory_bytes, 512 * MIB);
        assert_eq!(o.alerts.rates.error_rate, 0.2);
        let flags = [
            "--monitor-performance",
            "--report-interval",
            "2",
            "--baseline-throughput",
            "7.5",
            "--metrics-json",
            "m.json",
        ];
        let o = monitor(&flags, file).unwrap();
        assert!(o.print);
        assert_eq!(o.interval, Duration::from_secs(2));
        assert_eq!(o.alerts.baseline_throughput, Some(7.5));
        assert_eq!(o.metrics_json, Some(PathBuf::from("m.json")));
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let cases = [
            (&[][..], "[monitor]\nreport_interval_secs = 0\n"),
            (&["--baseline-throughput", "0"][..], ""),
            (&["--baseline-throughput", "NaN"][..], ""),
            (&[][..], "[monitor]\nalert_timeout_rate = 1.5\n"),
            (&[][..], "[monitor]\nalert_throughput_drop = -0.1\n"),
        ];
        for (args, file) in cases {
            assert!(monitor(args, file).is_err(), "{args:?} {file}");
        }
    }
}

pub mod limits;
#[cfg(test)]
mod props;
