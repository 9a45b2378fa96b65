//! Settings: built-in defaults, overridden by the config file, then the environment, then the
//! command line.
//!
//! The file format is documented, key by key, in `config/civitai-dl.toml`. Unknown keys and wrong
//! types are errors that name the key and the file: a typo in a setting must not be silently ignored
//! on a run that lasts hours.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::GlobalArgs;
use crate::limiter::{DEFAULT_BURST, DEFAULT_RATE_PER_SEC};
use crate::naming::Layout;
use crate::retry::{DEFAULT_DELAYS_MS, DEFAULT_JITTER, RetryPolicy};

/// The official API host.
pub const DEFAULT_BASE_URL: &str = "https://civitai.com";
/// Environment variables other Civitai tools use for the key, read after `CIVITAI_API_KEY`.
const EXTRA_KEY_VARS: [&str; 2] = ["CIVITAI_TOKEN", "CIVITAI_API_TOKEN"];
/// Connect timeout: a healthy host answers a SYN within seconds.
pub const CONNECT_TIMEOUT_SECS: u64 = 10;
/// Read timeout: five minutes of silence mid-transfer is a stall, not a slow link. There is
/// deliberately no total timeout: the seed's 600 s total would kill every healthy multi-GB download.
pub const READ_TIMEOUT_SECS: u64 = 300;
/// Whole-request limit for API calls (small JSON bodies; never used for file transfers).
pub const API_TIMEOUT_SECS: u64 = 60;

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with --config (or CIVITAI_DL_CONFIG) cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for our settings (unknown key, wrong type, syntax).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
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
    /// Write `.civitai.info` sidecars.
    pub metadata: Option<bool>,
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
    /// Write metadata sidecars.
    pub metadata: bool,
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
        if !(rate_limit.is_finite() && rate_limit > 0.0) {
            return Err(invalid(
                "rate_limit",
                "must be a positive number of requests per second",
            ));
        }
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
        Ok(Settings {
            api_key,
            base_url: check_base_url("base_url", &base_url)?,
            fallback_base_urls: fallback_base_urls
                .iter()
                .map(|url| check_base_url("fallback_base_url", url))
                .collect::<Result<_, _>>()?,
            output: file.output.unwrap_or_else(|| PathBuf::from(".")),
            layout: file.layout.unwrap_or(Layout::Flat),
            metadata: file.metadata.unwrap_or(true),
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
                min_speed: net.min_speed_bytes_per_sec.unwrap_or(0),
                min_speed_window: secs(net.min_speed_window_secs.unwrap_or(60)),
            },
            retry: RetryPolicy::new(
                delays.into_iter().map(Duration::from_millis).collect(),
                jitter,
            ),
            accept_hash_mismatch: file.download.accept_hash_mismatch.unwrap_or(false),
            config_file,
        })
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
    EXTRA_KEY_VARS
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
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })
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
        assert!(s.metadata && s.include_nsfw && s.api_key.is_none());
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
    fn bad_values_are_refused() {
        assert!(resolve(&["--base-url", "civitai.com"], "").is_err());
        assert!(resolve(&["--rate-limit", "0"], "").is_err());
        assert!(resolve(&[], "[retry]\njitter = 3.0\n").is_err());
    }

    #[test]
    fn retry_delays_from_the_command_line_in_ms() {
        let s = resolve(&["--retry-delays-ms", "1,2,3"], "").unwrap();
        assert_eq!(s.retry.max_attempts(), 4);
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
    }
}
