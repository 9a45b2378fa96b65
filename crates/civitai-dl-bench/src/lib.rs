//! The bench behind `civitai-dl bench`: measures what the experimental performance switch buys, on
//! this machine, by running a given civitai-dl executable against the fake Civitai. A crate of its
//! own because it spawns processes, starts servers and writes charts, none of which belongs in the
//! downloader; it knows the executable only by its command line, so a base build and a branch
//! build can be measured alike.
//!
//! Nothing about speed or stability is claimed unless civitai-dl measures it itself. Each scenario
//! starts a fresh embedded fake Civitai per run (so injected faults and counters never leak from one
//! run into the next) and runs the real binary as a child process, alternating the sequential and
//! the experimental configuration (A B A B …) so that drift on a shared machine hits both alike.
//! The figure of merit is a ratio (sequential time over experimental time), never an absolute
//! time, so a saved result can gate regressions on noisy CI machines. Stability comes first: a run
//! that loses a file, or a rate limit the fake server saw exceeded, fails the bench whatever the
//! speed.
//!
//! The same child-run machinery serves the A/B mode against a real target list (`--ab`) and the
//! soak scenario (a steady stream of faulty work judged against the stability targets in
//! `docs/design.md`).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use civitai_dl_fake::{Catalog, FakeCivitai, FileFaults, Knobs};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use civitai_dl_engine::civitai::target::{Target, parse_target_list};
use civitai_dl_engine::http::limiter::DEFAULT_BURST;

mod ab;
mod baseline;
mod child;
mod measure;
mod render;
mod scenario;
mod soak;
#[cfg(test)]
mod tests;

pub use ab::{AbHalf, AbReport, split_halves};
pub use baseline::regressions;
pub use measure::{max_in_window, median, min_max, speed_up};
pub use render::{render_svg, render_table};

use ab::*;
use baseline::*;
use child::*;
use measure::*;
use render::*;
use scenario::*;
use soak::*;

/// What to measure and how; the command line's `bench` flags, resolved.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Scenarios to run (empty: every one but the soak).
    pub scenarios: Vec<String>,
    /// Alternating rounds per scenario.
    pub rounds: usize,
    /// Multiplies file sizes and counts (a small version of each scenario below 1).
    pub scale: f64,
    /// Where to save the result as JSON.
    pub json_file: Option<PathBuf>,
    /// A saved result to gate regressions against.
    pub baseline: Option<PathBuf>,
    /// How far a speed-up may fall below the baseline's, as a fraction.
    pub threshold: f64,
    /// Where to draw the chart (SVG).
    pub plot: Option<PathBuf>,
    /// A real target list for the A/B mode instead of the scenarios.
    pub ab: Option<PathBuf>,
    /// Seeds the A/B split and the soak's faults.
    pub seed: u64,
    /// How long the soak runs, in seconds.
    pub duration: u64,
    /// Seconds between the soak's progress lines.
    pub report_interval: u64,
    /// Print the result as JSON on stdout too.
    pub json: bool,
    /// The civitai-dl executable whose runs are measured.
    pub exe: PathBuf,
    /// For the A/B mode: the caller's global flags, so its children behave as the caller asked.
    pub forwarded: Vec<String>,
    /// For the A/B mode: the caller's API key, handed to children through the environment, never
    /// on their command line, where other users could read it.
    pub api_key: Option<String>,
}

/// Layout version of the `--json-file` result.
pub const BENCH_VERSION: u32 = 1;

/// What each scenario must show, kept as data in one place.
pub const GOALS: [Goal; 7] = [
    Goal::speed_up("api-latency", 1.8, 0.0),
    Goal::speed_up("api-latency-8", 5.0, 0.0),
    Goal::speed_up("big-files", 3.5, 0.0),
    Goal::speed_up("big-file-segmented", 3.5, 0.0),
    Goal::speed_up("flaky", 1.0, NOT_SLOWER_NOISE),
    Goal::speed_up("clean-fast", 1.0, NOT_SLOWER_NOISE),
    Goal::rate_cap("rate-limit"),
];

/// "Never slower" goals accept this much measurement noise (ratios of 0.95 and above pass): two
/// equally fast configurations measure a ratio around 1.0 that falls on either side of it.
pub(crate) const NOT_SLOWER_NOISE: f64 = 0.05;
/// Retry waits of the child runs: short, so injected faults cost little time.
pub(crate) const BENCH_RETRY_DELAYS_MS: &str = "100,200,400,800";
/// A rate limit no scenario reaches unless the scenario is about the rate limit.
pub(crate) const UNBINDING_RATE: f64 = 10_000.0;
/// The limit of the `rate-limit` scenario, in requests per second.
pub(crate) const SCENARIO_RATE_LIMIT: f64 = 5.0;
/// A child run taking longer than this is killed and counted as failed instead of hanging.
pub(crate) const CHILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often a running child's memory is sampled.
pub(crate) const RSS_POLL: Duration = Duration::from_millis(50);
/// The smallest generated file, so a tiny `--scale` still moves bytes.
pub(crate) const MIN_FILE_BYTES: u64 = 16 * 1024;
/// Per-connection bandwidth of the big-file scenarios, bytes per second.
pub(crate) const BIG_FILE_BANDWIDTH: u64 = 25_000_000;
/// A stall lasts longer than this read timeout (the child gives up and resumes).
pub(crate) const STALL_READ_TIMEOUT_SECS: &str = "2";
/// The soak's KPIs: the stability targets (`docs/design.md#the-stability-targets`).
pub(crate) const SOAK_MAX_TIMEOUT_RATE: f64 = 0.01;
pub(crate) const SOAK_MIN_COMPLETION: f64 = 0.99;
pub(crate) const SOAK_MIN_RECOVERY: f64 = 0.95;
/// Memory counts as flat when late runs peak at most this much above early ones.
pub(crate) const SOAK_RSS_GROWTH: f64 = 1.2;
pub(crate) const SOAK_RSS_SLACK_BYTES: u64 = 8 * 1024 * 1024;
pub(crate) const MIB: u64 = 1024 * 1024;

/// Why the bench could not run (a slow or failing download is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A `--scenario` name not in the list.
    #[error("unknown scenario '{name}'; known: {known}")]
    UnknownScenario {
        /// The name given.
        name: String,
        /// The names accepted.
        known: String,
    },
    /// An option value out of range.
    #[error("{0}")]
    Invalid(String),
    /// A file or process could not be used.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A baseline or target list that cannot be read as such.
    #[error("{} is not a usable {what}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        /// What it should have been.
        what: &'static str,
        /// Why it is not.
        reason: String,
    },
}

pub(crate) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> BenchError {
    let path = path.to_path_buf();
    move |source| BenchError::Io {
        action,
        path,
        source,
    }
}

/// What a scenario must show to PASS.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Goal {
    /// The scenario.
    pub scenario: &'static str,
    /// The speed-up (sequential time / experimental time) to reach, if the goal is about speed.
    pub min_speed_up: Option<f64>,
    /// How far below `min_speed_up` still counts as reached (measurement noise).
    pub tolerance: f64,
    /// The goal is that the fake server never sees more requests in a second than rate + burst.
    pub rate_cap: bool,
}

impl Goal {
    const fn speed_up(scenario: &'static str, min: f64, tolerance: f64) -> Goal {
        Goal {
            scenario,
            min_speed_up: Some(min),
            tolerance,
            rate_cap: false,
        }
    }

    const fn rate_cap(scenario: &'static str) -> Goal {
        Goal {
            scenario,
            min_speed_up: None,
            tolerance: 0.0,
            rate_cap: true,
        }
    }

    /// Whether a measured speed-up reaches the goal (always, for a goal not about speed).
    pub fn reached(&self, speed_up: f64) -> bool {
        self.min_speed_up
            .is_none_or(|min| speed_up >= min - self.tolerance)
    }
}

/// PASS or FAIL, as printed and saved (a result that never got a verdict did not pass).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Every run verified and the goal reached.
    #[serde(rename = "PASS")]
    Pass,
    /// A run failed, the rate cap was exceeded, or the speed-up fell short.
    #[default]
    #[serde(rename = "FAIL")]
    Fail,
}

impl Verdict {
    fn of(ok: bool) -> Verdict {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        }
    }
}

/// The saved result of a bench (`--json-file`, `--baseline`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BenchReport {
    /// Layout version.
    #[serde(default)]
    pub version: u32,
    /// `--scale` of the run.
    #[serde(default)]
    pub scale: f64,
    /// `--rounds` of the run.
    #[serde(default)]
    pub rounds: usize,
    /// One entry per scenario, in the order run.
    #[serde(default)]
    pub scenarios: Vec<ScenarioResult>,
    /// The soak's outcome, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakReport>,
}

/// One scenario's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub name: String,
    /// Median over rounds of sequential time / experimental time.
    pub speedup_ratio: f64,
    /// Smallest per-round ratio.
    #[serde(default)]
    pub speedup_ratio_min: f64,
    /// Largest per-round ratio.
    #[serde(default)]
    pub speedup_ratio_max: f64,
    /// The sequential configuration.
    #[serde(default)]
    pub sequential: SideResult,
    /// The experimental configuration.
    #[serde(default)]
    pub experimental: SideResult,
    /// The speed-up to reach, if any.
    #[serde(default)]
    pub target_ratio: Option<f64>,
    /// Most API requests the fake server saw in any one-second window (rate-limit scenario).
    #[serde(default)]
    pub max_requests_per_sec: Option<u64>,
    /// What that may not exceed: the limit plus the burst.
    #[serde(default)]
    pub request_cap: Option<f64>,
    /// Why runs failed (file, reason), empty when all verified.
    #[serde(default)]
    pub failures: Vec<String>,
    /// PASS or FAIL.
    pub verdict: Verdict,
}

/// One configuration's figures in a scenario.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SideResult {
    /// Wall time of each round, seconds (process start to exit).
    pub wall_secs: Vec<f64>,
    /// Median of `wall_secs`.
    pub median_wall_secs: f64,
    /// Bytes written per run over the median wall time, MB/s (10^6 bytes).
    pub mb_per_sec: f64,
    /// API requests per run (median).
    pub requests: u64,
    /// Retries per run (median).
    pub retries: u64,
    /// Highest peak RSS of any run, bytes, when known.
    pub peak_rss_bytes: Option<u64>,
}

/// The soak's totals and KPI verdicts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SoakReport {
    /// Seconds the soak ran.
    pub secs: f64,
    /// Child runs (batches) made.
    pub batches: u64,
    /// Files asked for.
    pub files: u64,
    /// Files that ended verified.
    pub verified: u64,
    /// Files verified over files asked for.
    pub completion: f64,
    /// Timed-out attempts over failed attempts.
    pub timeout_rate: f64,
    /// Operations (API calls, files) that failed at first and recovered, over those that failed
    /// at first.
    pub recovery_rate: f64,
    /// Retries made.
    pub retries: u64,
    /// Peak RSS of the earliest third of the batches, bytes.
    pub early_peak_rss_bytes: Option<u64>,
    /// Peak RSS of the latest third of the batches, bytes.
    pub late_peak_rss_bytes: Option<u64>,
    /// KPI name and whether it held.
    pub kpis: Vec<(String, bool)>,
    /// PASS when every KPI held.
    pub verdict: Verdict,
}

/// A scenario that fell more than the threshold below its baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Regression {
    /// Scenario name.
    pub scenario: String,
    /// The baseline's speed-up.
    pub baseline: f64,
    /// This run's speed-up.
    pub current: f64,
}

/// Runs `civitai-dl bench`; `Ok(false)` when a gate failed (a lost file, the rate cap, a
/// regression against the baseline).
pub fn run(options: &BenchOptions) -> Result<bool, BenchError> {
    if options.rounds == 0 {
        return Err(BenchError::Invalid("--rounds must be at least 1".into()));
    }
    if !(options.scale.is_finite() && options.scale > 0.0) {
        return Err(BenchError::Invalid(
            "--scale must be a positive number".into(),
        ));
    }
    if let Some(list) = &options.ab {
        return ab_test(options, list);
    }
    let names = selected_scenarios(&options.scenarios)?;
    let workspace = Workspace::new(&options.exe)?;
    let mut report = BenchReport {
        version: BENCH_VERSION,
        scale: options.scale,
        rounds: options.rounds,
        ..BenchReport::default()
    };
    for name in names {
        if name == SOAK {
            report.soak = Some(soak(&workspace, options)?);
            continue;
        }
        let scenario =
            scenario(name, options.scale).ok_or_else(|| unknown_scenario(name.to_string()))?;
        report
            .scenarios
            .push(measure(&workspace, &scenario, options.rounds)?);
    }
    if !report.scenarios.is_empty() {
        eprintln!("{}", render_table(&report.scenarios));
    }
    finish(&report, options)
}

fn finish(report: &BenchReport, options: &BenchOptions) -> Result<bool, BenchError> {
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| BenchError::Invalid(format!("cannot encode the result: {e}")))?;
    if let Some(path) = &options.json_file {
        fs::write(path, &text).map_err(io_error("write", path))?;
    }
    if options.json {
        println!("{text}");
    }
    if let Some(path) = &options.plot {
        fs::write(path, render_svg(&report.scenarios)).map_err(io_error("write", path))?;
    }
    let mut ok = report.scenarios.iter().all(stable)
        && report
            .soak
            .as_ref()
            .is_none_or(|s| s.verdict == Verdict::Pass);
    if let Some(path) = &options.baseline {
        if !(0.0..1.0).contains(&options.threshold) {
            return Err(BenchError::Malformed {
                path: path.to_path_buf(),
                what: "--threshold",
                reason: format!("{} is not a fraction from 0 to below 1", options.threshold),
            });
        }
        let baseline = load_baseline(path)?;
        let fallen = regressions(&report.scenarios, &baseline.scenarios, options.threshold);
        for r in &fallen {
            eprintln!(
                "regression: {}: speed-up {:.2}x, baseline {:.2}x (more than {:.0}% lower)",
                r.scenario,
                r.current,
                r.baseline,
                options.threshold * 100.0
            );
        }
        if fallen.is_empty() {
            eprintln!(
                "no regression against {} (threshold {:.0}%)",
                path.display(),
                options.threshold * 100.0
            );
        }
        ok &= fallen.is_empty();
    }
    Ok(ok)
}

/// Stability gates: every file verified, the rate cap held. A missed speed-up is a FAIL in the
/// table but not a broken run.
pub(crate) fn stable(result: &ScenarioResult) -> bool {
    result.failures.is_empty()
        && match (result.max_requests_per_sec, result.request_cap) {
            (Some(seen), Some(cap)) => seen as f64 <= cap,
            _ => true,
        }
}
