//! `civitai-dl bench`: measures what the experimental performance switch buys, on this machine.
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
//! soak scenario (a steady stream of faulty work judged against the plan's KPIs).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use civitai_dl_fake::{Catalog, FakeCivitai, FileFaults, Knobs};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::{BenchArgs, GlobalArgs};
use civitai_dl_engine::civitai::target::{Target, parse_target_list};
use civitai_dl_engine::http::limiter::DEFAULT_BURST;

/// Layout version of the `--json-file` result.
pub const BENCH_VERSION: u32 = 1;

/// What each scenario must show. The targets, kept as data in one place.
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
const NOT_SLOWER_NOISE: f64 = 0.05;
/// Retry waits of the child runs: short, so injected faults cost little time.
const BENCH_RETRY_DELAYS_MS: &str = "100,200,400,800";
/// A rate limit no scenario reaches unless the scenario is about the rate limit.
const UNBINDING_RATE: f64 = 10_000.0;
/// The limit of the `rate-limit` scenario, in requests per second.
const SCENARIO_RATE_LIMIT: f64 = 5.0;
/// A child run taking longer than this is killed and counted as failed instead of hanging.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often a running child's memory is sampled.
const RSS_POLL: Duration = Duration::from_millis(50);
/// The smallest generated file, so a tiny `--scale` still moves bytes.
const MIN_FILE_BYTES: u64 = 16 * 1024;
/// Per-connection bandwidth of the big-file scenarios, bytes per second.
const BIG_FILE_BANDWIDTH: u64 = 25_000_000;
/// A stall lasts longer than this read timeout (the child gives up and resumes).
const STALL_READ_TIMEOUT_SECS: &str = "2";
/// The soak's KPIs, from the plan.
const SOAK_MAX_TIMEOUT_RATE: f64 = 0.01;
const SOAK_MIN_COMPLETION: f64 = 0.99;
const SOAK_MIN_RECOVERY: f64 = 0.95;
/// Memory counts as flat when late runs peak at most this much above early ones.
const SOAK_RSS_GROWTH: f64 = 1.2;
const SOAK_RSS_SLACK_BYTES: u64 = 8 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

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
        /// What was attempted.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A baseline or target list that cannot be read as such.
    #[error("{} is not a usable {what}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it should have been.
        what: &'static str,
        /// Why it is not.
        reason: String,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BenchError {
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
pub fn run(global: &GlobalArgs, args: &BenchArgs) -> Result<bool, BenchError> {
    if args.rounds == 0 {
        return Err(BenchError::Invalid("--rounds must be at least 1".into()));
    }
    if !(args.scale.is_finite() && args.scale > 0.0) {
        return Err(BenchError::Invalid(
            "--scale must be a positive number".into(),
        ));
    }
    if let Some(list) = &args.ab {
        return ab_test(global, args, list);
    }
    let names = selected_scenarios(&args.scenarios)?;
    let workspace = Workspace::new()?;
    let mut report = BenchReport {
        version: BENCH_VERSION,
        scale: args.scale,
        rounds: args.rounds,
        ..BenchReport::default()
    };
    for name in names {
        if name == SOAK {
            report.soak = Some(soak(&workspace, args)?);
            continue;
        }
        let scenario =
            scenario(name, args.scale).ok_or_else(|| unknown_scenario(name.to_string()))?;
        report
            .scenarios
            .push(measure(&workspace, &scenario, args.rounds)?);
    }
    if !report.scenarios.is_empty() {
        eprintln!("{}", render_table(&report.scenarios));
    }
    finish(&report, global.json, args)
}

fn finish(report: &BenchReport, json: bool, args: &BenchArgs) -> Result<bool, BenchError> {
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| BenchError::Invalid(format!("cannot encode the result: {e}")))?;
    if let Some(path) = &args.json_file {
        fs::write(path, &text).map_err(io_error("write", path))?;
    }
    if json {
        println!("{text}");
    }
    if let Some(path) = &args.plot {
        fs::write(path, render_svg(&report.scenarios)).map_err(io_error("write", path))?;
    }
    let mut ok = report.scenarios.iter().all(stable)
        && report
            .soak
            .as_ref()
            .is_none_or(|s| s.verdict == Verdict::Pass);
    if let Some(path) = &args.baseline {
        if !(0.0..1.0).contains(&args.threshold) {
            return Err(BenchError::Malformed {
                path: path.to_path_buf(),
                what: "--threshold",
                reason: format!("{} is not a fraction from 0 to below 1", args.threshold),
            });
        }
        let baseline = load_baseline(path)?;
        let fallen = regressions(&report.scenarios, &baseline.scenarios, args.threshold);
        for r in &fallen {
            eprintln!(
                "regression: {}: speed-up {:.2}x, baseline {:.2}x (more than {:.0}% lower)",
                r.scenario,
                r.current,
                r.baseline,
                args.threshold * 100.0
            );
        }
        if fallen.is_empty() {
            eprintln!(
                "no regression against {} (threshold {:.0}%)",
                path.display(),
                args.threshold * 100.0
            );
        }
        ok &= fallen.is_empty();
    }
    Ok(ok)
}

/// Stability gates: every file verified, the rate cap held. A missed speed-up is a FAIL in the
/// table but not a broken run.
fn stable(result: &ScenarioResult) -> bool {
    result.failures.is_empty()
        && match (result.max_requests_per_sec, result.request_cap) {
            (Some(seen), Some(cap)) => seen as f64 <= cap,
            _ => true,
        }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// The opt-in endurance scenario (not in the default set).
const SOAK: &str = "soak";

/// Scenario names in the default order (cheap ones first, so a failure shows early).
const DEFAULT_SCENARIOS: [&str; 7] = [
    "clean-fast",
    "api-latency",
    "api-latency-8",
    "flaky",
    "rate-limit",
    "big-files",
    "big-file-segmented",
];

/// How the files of a scenario misbehave.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Faults {
    /// Clean storage.
    None,
    /// Resets, a stall, corrupted and HTML first attempts.
    Flaky,
}

/// One workload and the flags of its two configurations.
#[derive(Clone, Debug)]
struct Scenario {
    name: &'static str,
    models: usize,
    file_size: u64,
    knobs: Knobs,
    faults: Faults,
    rate_limit: f64,
    /// Flags of both runs, after the global options.
    common: Vec<&'static str>,
    /// Flags of the experimental run only (after `download`).
    experimental: Vec<&'static str>,
}

fn selected_scenarios(requested: &[String]) -> Result<Vec<&'static str>, BenchError> {
    if requested.is_empty() {
        return Ok(DEFAULT_SCENARIOS.to_vec());
    }
    requested
        .iter()
        .map(|name| {
            DEFAULT_SCENARIOS
                .iter()
                .chain(std::iter::once(&SOAK))
                .find(|known| **known == name.as_str())
                .copied()
                .ok_or_else(|| unknown_scenario(name.clone()))
        })
        .collect()
}

fn unknown_scenario(name: String) -> BenchError {
    BenchError::UnknownScenario {
        name,
        known: format!("{}, {SOAK}", DEFAULT_SCENARIOS.join(", ")),
    }
}

fn scaled_count(count: usize, scale: f64) -> usize {
    ((count as f64 * scale).round() as usize).max(1)
}

fn scaled_size(bytes: u64, scale: f64) -> u64 {
    ((bytes as f64 * scale) as u64).max(MIN_FILE_BYTES)
}

const EXPERIMENTAL: &str = "--enable-experimental-performance";

/// The named scenario at `scale`.
fn scenario(name: &str, scale: f64) -> Option<Scenario> {
    let base = |name, models, file_size| Scenario {
        name,
        models: scaled_count(models, scale),
        file_size: scaled_size(file_size, scale),
        knobs: Knobs::default(),
        faults: Faults::None,
        rate_limit: UNBINDING_RATE,
        common: Vec::new(),
        experimental: vec![EXPERIMENTAL],
    };
    let api_latency = Knobs {
        api_latency: Duration::from_millis(100),
        ..Knobs::default()
    };
    let capped = Knobs {
        bandwidth: Some(BIG_FILE_BANDWIDTH),
        ..Knobs::default()
    };
    let wide = vec![
        EXPERIMENTAL,
        "--max-concurrent-api",
        "8",
        "--max-concurrent-downloads",
        "8",
    ];
    Some(match name {
        "api-latency" => Scenario {
            knobs: api_latency,
            ..base("api-latency", 100, 256 * 1024)
        },
        "api-latency-8" => Scenario {
            knobs: api_latency,
            experimental: wide,
            ..base("api-latency-8", 100, 256 * 1024)
        },
        "big-files" => Scenario {
            knobs: capped,
            experimental: vec![
                EXPERIMENTAL,
                "--max-concurrent-downloads",
                "4",
                "--segments",
                "1",
            ],
            ..base("big-files", 4, 200 * MIB)
        },
        "big-file-segmented" => Scenario {
            knobs: capped,
            experimental: vec![EXPERIMENTAL, "--segments", "4"],
            ..base("big-file-segmented", 1, 200 * MIB)
        },
        "flaky" => Scenario {
            knobs: Knobs {
                api_503_first: 2,
                api_429_first: 2,
                retry_after_secs: 1,
                ..Knobs::default()
            },
            faults: Faults::Flaky,
            common: vec!["--read-timeout", STALL_READ_TIMEOUT_SECS],
            ..base("flaky", 12, 4 * MIB)
        },
        "clean-fast" => base("clean-fast", 4, 100 * MIB),
        "rate-limit" => Scenario {
            rate_limit: SCENARIO_RATE_LIMIT,
            experimental: wide,
            ..base("rate-limit", 100, 64 * 1024)
        },
        _ => return None,
    })
}

impl Scenario {
    /// The catalogue served to each run: uniform models, with the scenario's faults.
    fn catalog(&self) -> Catalog {
        let mut catalog = Catalog::uniform(self.models, self.file_size);
        if self.faults == Faults::Flaky {
            for (index, model) in catalog.models.iter_mut().enumerate() {
                for file in model.versions.iter_mut().flat_map(|v| v.files.iter_mut()) {
                    file.faults = flaky_faults(index, file.size);
                }
            }
        }
        catalog
    }
}

/// The model ids of a catalogue, as command-line targets.
fn model_ids(catalog: &Catalog) -> Vec<String> {
    catalog.models.iter().map(|m| m.id.to_string()).collect()
}

/// The flaky scenario's faults by model position: one stall, then resets, corrupted and HTML
/// first attempts in turn, and some clean files.
fn flaky_faults(index: usize, size: u64) -> FileFaults {
    match index % 5 {
        _ if index == 1 => FileFaults {
            stall_after: Some((size / 2, 1)),
            ..FileFaults::default()
        },
        0 => FileFaults {
            reset_after: Some((size / 3, 1)),
            ..FileFaults::default()
        },
        2 => FileFaults {
            corrupt_attempts: 1,
            ..FileFaults::default()
        },
        3 => FileFaults {
            html_attempts: 1,
            ..FileFaults::default()
        },
        _ => FileFaults::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Child runs
// ---------------------------------------------------------------------------------------------

/// Where the child runs put their downloads, and the empty config file that keeps the developer's
/// own config (which might turn the experimental switch on) out of the "sequential" runs.
struct Workspace {
    root: PathBuf,
    empty_config: PathBuf,
    runs: std::cell::Cell<u64>,
}

impl Workspace {
    fn new() -> Result<Workspace, BenchError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let root =
            std::env::temp_dir().join(format!("civitai-dl-bench-{}-{stamp}", std::process::id()));
        fs::create_dir_all(&root).map_err(io_error("create", &root))?;
        let empty_config = root.join("empty-config.toml");
        fs::write(&empty_config, "").map_err(io_error("write", &empty_config))?;
        Ok(Workspace {
            root,
            empty_config,
            runs: std::cell::Cell::new(0),
        })
    }

    /// A fresh folder for one run.
    fn run_dir(&self) -> Result<PathBuf, BenchError> {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let dir = self.root.join(format!("run-{n}"));
        fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
        Ok(dir)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // Best effort: a leftover temp folder is harmless, and the bench result matters more.
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// One child run: the arguments before and after `download`, and where to run it.
struct ChildRun<'a> {
    global: Vec<String>,
    download: Vec<String>,
    dir: &'a Path,
    /// Environment for the child: `None` scrubs every variable that could leak a real key or
    /// config in (scenario runs); `Some` passes the caller's through, plus the API key.
    api_key_env: Option<Option<String>>,
    empty_config: Option<&'a Path>,
}

/// What one child run produced.
#[derive(Clone, Debug, Default)]
struct RunOutcome {
    wall_secs: f64,
    figures: RunFigures,
}

/// Figures read from a child's `--json` summary.
#[derive(Clone, Debug, Default, PartialEq)]
struct RunFigures {
    files: u64,
    verified: u64,
    failures: Vec<String>,
    bytes: u64,
    requests: u64,
    retries: u64,
    failed_attempts: u64,
    timeouts: u64,
    recovered: u64,
    unrecovered: u64,
    peak_rss: Option<u64>,
}

impl ChildRun<'_> {
    fn execute(&self) -> Result<RunOutcome, BenchError> {
        let exe = std::env::current_exe().map_err(io_error("locate", Path::new("civitai-dl")))?;
        let stdout_path = self.dir.join("stdout.json");
        let stderr_path = self.dir.join("stderr.txt");
        let stdout = fs::File::create(&stdout_path).map_err(io_error("create", &stdout_path))?;
        let stderr = fs::File::create(&stderr_path).map_err(io_error("create", &stderr_path))?;
        let mut command = Command::new(&exe);
        command
            .args(&self.global)
            .arg("download")
            .args(&self.download)
            .current_dir(self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        match &self.api_key_env {
            None => {
                for var in civitai_dl_engine::env::ENV_VARS {
                    command.env_remove(var);
                }
            }
            Some(Some(key)) => {
                command.env("CIVITAI_API_KEY", key);
            }
            Some(None) => {}
        }
        if let Some(config) = self.empty_config {
            command.env("CIVITAI_DL_CONFIG", config);
        }
        let started = Instant::now();
        let child = command.spawn().map_err(io_error("run", &exe))?;
        let (exited, sampled_rss) = wait_sampling_rss(child, CHILD_TIMEOUT)?;
        let wall_secs = started.elapsed().as_secs_f64();
        let text = fs::read_to_string(&stdout_path).unwrap_or_default();
        let mut figures = match serde_json::from_str::<Value>(&text) {
            Ok(report) => figures(&report),
            Err(_) => RunFigures {
                failures: vec![format!(
                    "no JSON summary ({}): {}",
                    exited.unwrap_or("timed out, killed"),
                    stderr_tail(&stderr_path)
                )],
                ..RunFigures::default()
            },
        };
        if figures.peak_rss.is_none() {
            figures.peak_rss = sampled_rss;
        }
        Ok(RunOutcome { wall_secs, figures })
    }
}

/// Waits for `child`, sampling its peak RSS from `/proc` (Linux) while it runs; kills it after
/// `limit`. Returns how it exited (`None` if killed) and the last peak seen.
fn wait_sampling_rss(
    mut child: Child,
    limit: Duration,
) -> Result<(Option<&'static str>, Option<u64>), BenchError> {
    let started = Instant::now();
    let mut peak = None;
    loop {
        if let Some(hwm) = vm_hwm_bytes(child.id()) {
            peak = Some(hwm);
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                return Ok((
                    Some(if status.success() { "exit 0" } else { "failed" }),
                    peak,
                ));
            }
            Ok(None) if started.elapsed() > limit => {
                // The child is hung; its result is already a failure whatever kill says.
                let _ = child.kill();
                let _ = child.wait();
                return Ok((None, peak));
            }
            Ok(None) => std::thread::sleep(RSS_POLL),
            Err(source) => {
                return Err(BenchError::Io {
                    action: "wait for",
                    path: PathBuf::from("civitai-dl"),
                    source,
                });
            }
        }
    }
}

/// The `VmHWM` (peak resident set) of a running process, bytes.
fn vm_hwm_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn stderr_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Reads the figures the bench needs from a child's `--json` summary.
fn figures(report: &Value) -> RunFigures {
    let metrics = &report["metrics"];
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let files = report["files"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let verified = files
        .iter()
        .filter(|f| matches!(f["status"].as_str(), Some("downloaded" | "present")))
        .count() as u64;
    let mut failures: Vec<String> = files
        .iter()
        .filter(|f| !matches!(f["status"].as_str(), Some("downloaded" | "present")))
        .map(|f| {
            format!(
                "{}: {} {}",
                f["label"].as_str().unwrap_or("?"),
                f["status"].as_str().unwrap_or("?"),
                f["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    for target in report["failed_targets"].as_array().into_iter().flatten() {
        failures.push(format!(
            "{}: {}",
            target["target"].as_str().unwrap_or("?"),
            target["reason"].as_str().unwrap_or("?")
        ));
    }
    if let Some(reason) = report["stopped"].as_str() {
        failures.push(format!("run stopped: {reason}"));
    }
    RunFigures {
        files: files.len() as u64,
        verified,
        failures,
        bytes: count(&metrics["bytes"]),
        requests: count(&metrics["api"]["requests"]),
        retries: count(&metrics["retries"]),
        failed_attempts: count(&metrics["failures"]),
        timeouts: count(&metrics["timeouts"]),
        recovered: count(&metrics["recovered"]),
        unrecovered: count(&metrics["unrecovered"]),
        peak_rss: peak_rss_in(metrics),
    }
}

/// The peak RSS a summary reports, in bytes, under whatever key holds "peak_rss" (its unit read
/// from the key's suffix); `None` for summaries from builds that do not measure it.
fn peak_rss_in(value: &Value) -> Option<u64> {
    let object = value.as_object()?;
    object.iter().find_map(|(key, v)| {
        if key.contains("peak_rss") {
            let number = v.as_f64()?;
            let unit = if key.ends_with("_mib") || key.ends_with("_mb") {
                MIB as f64
            } else if key.ends_with("_kib") || key.ends_with("_kb") {
                1024.0
            } else {
                1.0
            };
            Some((number * unit) as u64)
        } else {
            peak_rss_in(v)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Measuring a scenario
// ---------------------------------------------------------------------------------------------

/// Which configuration a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Sequential,
    Experimental,
}

/// One run of `side` against a fresh fake server serving the scenario's catalogue.
fn scenario_run(
    workspace: &Workspace,
    scenario: &Scenario,
    side: Side,
) -> Result<(RunOutcome, u64), BenchError> {
    run_against(workspace, scenario, scenario.catalog(), side)
}

/// One run of `side` against a fresh fake server serving `catalog`; also the most API requests
/// the server saw in any one second.
fn run_against(
    workspace: &Workspace,
    scenario: &Scenario,
    catalog: Catalog,
    side: Side,
) -> Result<(RunOutcome, u64), BenchError> {
    let targets = model_ids(&catalog);
    let key = catalog.valid_keys.first().cloned().unwrap_or_default();
    let server = FakeCivitai::start_in_background(catalog, scenario.knobs.clone())
        .map_err(io_error("start the fake server on", Path::new("127.0.0.1")))?;
    let dir = workspace.run_dir()?;
    let mut global = vec![
        "--base-url".to_string(),
        server.api_url(),
        "--api-key".to_string(),
        key,
    ];
    global.extend(child_globals(scenario.rate_limit));
    global.extend(scenario.common.iter().map(|s| s.to_string()));
    let mut download = targets;
    download.extend(["-o".to_string(), dir.join("out").display().to_string()]);
    if side == Side::Experimental {
        download.extend(scenario.experimental.iter().map(|s| s.to_string()));
    }
    let outcome = ChildRun {
        global,
        download,
        dir: &dir,
        api_key_env: None,
        empty_config: Some(&workspace.empty_config),
    }
    .execute()?;
    let busiest = max_in_window(&server.stats().api_request_times(), Duration::from_secs(1));
    drop(server);
    // Downloads can be gigabytes; keep the disk free for the next run.
    let _ = fs::remove_dir_all(&dir);
    Ok((outcome, busiest))
}

/// Options of every child run: quiet, JSON, short retry waits, the given rate limit.
fn child_globals(rate_limit: f64) -> Vec<String> {
    [
        "--no-progress",
        "-q",
        "--json",
        "--retry-delays-ms",
        BENCH_RETRY_DELAYS_MS,
        "--rate-limit",
        &rate_limit.to_string(),
        "--rate-burst",
        &DEFAULT_BURST.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs the scenario A B A B … for `rounds` and gathers its result.
fn measure(
    workspace: &Workspace,
    scenario: &Scenario,
    rounds: usize,
) -> Result<ScenarioResult, BenchError> {
    let mut sequential = Vec::new();
    let mut experimental = Vec::new();
    let mut busiest = 0;
    for round in 1..=rounds {
        for side in [Side::Sequential, Side::Experimental] {
            let (outcome, seen) = scenario_run(workspace, scenario, side)?;
            busiest = busiest.max(seen);
            eprintln!(
                "{} round {round}/{rounds} {}: {:.2} s, {} of {} files verified",
                scenario.name,
                match side {
                    Side::Sequential => "sequential",
                    Side::Experimental => "experimental",
                },
                outcome.wall_secs,
                outcome.figures.verified,
                scenario.models
            );
            match side {
                Side::Sequential => sequential.push(outcome),
                Side::Experimental => experimental.push(outcome),
            }
        }
    }
    let goal = GOALS.iter().find(|g| g.scenario == scenario.name);
    Ok(summarize(
        scenario.name,
        scenario.models as u64,
        goal,
        &sequential,
        &experimental,
        (scenario.rate_limit < UNBINDING_RATE)
            .then(|| (busiest, scenario.rate_limit + f64::from(DEFAULT_BURST))),
    ))
}

/// A scenario's result from its runs; `rate` is (busiest second, cap) when the rate is judged.
fn summarize(
    name: &str,
    expected_files: u64,
    goal: Option<&Goal>,
    sequential: &[RunOutcome],
    experimental: &[RunOutcome],
    rate: Option<(u64, f64)>,
) -> ScenarioResult {
    let ratios: Vec<f64> = sequential
        .iter()
        .zip(experimental)
        .map(|(s, e)| speed_up(s.wall_secs, e.wall_secs))
        .collect();
    let (min, max) = min_max(&ratios);
    let failures: Vec<String> = sequential
        .iter()
        .map(|r| ("sequential", r))
        .chain(experimental.iter().map(|r| ("experimental", r)))
        .flat_map(|(side, run)| run_failures(side, run, expected_files))
        .collect();
    let mut result = ScenarioResult {
        name: name.to_string(),
        speedup_ratio: median(&ratios),
        speedup_ratio_min: min,
        speedup_ratio_max: max,
        sequential: side_result(sequential),
        experimental: side_result(experimental),
        target_ratio: goal.and_then(|g| g.min_speed_up),
        max_requests_per_sec: rate.map(|(seen, _)| seen),
        request_cap: rate.map(|(_, cap)| cap),
        failures,
        verdict: Verdict::Fail,
    };
    let reached = goal.is_none_or(|g| g.reached(result.speedup_ratio));
    result.verdict = Verdict::of(stable(&result) && reached);
    result
}

fn run_failures(side: &str, run: &RunOutcome, expected_files: u64) -> Vec<String> {
    let mut failures: Vec<String> = run
        .figures
        .failures
        .iter()
        .map(|f| format!("{side}: {f}"))
        .collect();
    if failures.is_empty() && run.figures.verified < expected_files {
        failures.push(format!(
            "{side}: only {} of {expected_files} files verified",
            run.figures.verified
        ));
    }
    failures
}

fn side_result(runs: &[RunOutcome]) -> SideResult {
    let walls: Vec<f64> = runs.iter().map(|r| r.wall_secs).collect();
    let median_wall = median(&walls);
    let median_of = |pick: fn(&RunFigures) -> u64| {
        let values: Vec<f64> = runs.iter().map(|r| pick(&r.figures) as f64).collect();
        median(&values).round() as u64
    };
    let bytes = median_of(|f| f.bytes);
    SideResult {
        mb_per_sec: if median_wall > 0.0 {
            bytes as f64 / 1e6 / median_wall
        } else {
            0.0
        },
        median_wall_secs: median_wall,
        wall_secs: walls,
        requests: median_of(|f| f.requests),
        retries: median_of(|f| f.retries),
        peak_rss_bytes: runs.iter().filter_map(|r| r.figures.peak_rss).max(),
    }
}

/// Sequential time over experimental time (0 when the experimental time is not positive).
pub fn speed_up(sequential_secs: f64, experimental_secs: f64) -> f64 {
    if experimental_secs > 0.0 {
        sequential_secs / experimental_secs
    } else {
        0.0
    }
}

/// Median (mean of the middle two for an even count; 0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Smallest and largest value (0, 0 when empty).
pub fn min_max(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().reduce(f64::min).unwrap_or(0.0);
    let max = values.iter().copied().reduce(f64::max).unwrap_or(0.0);
    (min, max)
}

/// Most timestamps falling in any window of length `window` (timestamps in any order).
pub fn max_in_window(times: &[Duration], window: Duration) -> u64 {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut start = 0;
    let mut best = 0;
    for (end, t) in sorted.iter().enumerate() {
        while *t - sorted[start] >= window {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best as u64
}

// ---------------------------------------------------------------------------------------------
// Baseline gate
// ---------------------------------------------------------------------------------------------

/// A saved result to compare with. An empty or foreign file is refused rather than read as "no
/// scenarios", which would let every comparison pass.
fn load_baseline(path: &Path) -> Result<BenchReport, BenchError> {
    let text = fs::read_to_string(path).map_err(io_error("read", path))?;
    let malformed = |reason: String| BenchError::Malformed {
        path: path.to_path_buf(),
        what: "bench result (from bench --json-file)",
        reason,
    };
    let report: BenchReport = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    if report.version != BENCH_VERSION {
        return Err(malformed(format!(
            "layout version {} (this build writes {BENCH_VERSION})",
            report.version
        )));
    }
    if report.scenarios.is_empty() {
        return Err(malformed("it holds no scenario".into()));
    }
    Ok(report)
}

/// Scenarios whose speed-up fell by more than `threshold` (relative) below the baseline's.
/// Scenarios missing from either side are not compared.
pub fn regressions(
    current: &[ScenarioResult],
    baseline: &[ScenarioResult],
    threshold: f64,
) -> Vec<Regression> {
    current
        .iter()
        .filter_map(|now| {
            let then = baseline.iter().find(|b| b.name == now.name)?;
            (now.speedup_ratio < then.speedup_ratio * (1.0 - threshold)).then(|| Regression {
                scenario: now.name.clone(),
                baseline: then.speedup_ratio,
                current: now.speedup_ratio,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Output: table and chart
// ---------------------------------------------------------------------------------------------

fn rss_label(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!("{:.0}M", b as f64 / MIB as f64))
        .unwrap_or_else(|| "n/a".into())
}

/// The results as a text table.
pub fn render_table(results: &[ScenarioResult]) -> String {
    let mut out = format!(
        "{:<19} {:>15} {:>15} {:>11} {:>9} {:>11} {:>22} {:>6}  {}\n",
        "scenario",
        "time seq/exp s",
        "MB/s seq/exp",
        "requests",
        "retries",
        "peak RSS",
        "speed-up (min-max)",
        "target",
        "verdict"
    );
    for r in results {
        let target = match (r.target_ratio, r.request_cap) {
            (Some(t), _) => format!(">={t}x"),
            (None, Some(cap)) => format!("<={cap}/s"),
            (None, None) => "-".into(),
        };
        let mut verdict = r.verdict.label().to_string();
        if let (Some(seen), Some(_)) = (r.max_requests_per_sec, r.request_cap) {
            let _ = write!(verdict, " (max {seen} req/s)");
        }
        let _ = writeln!(
            out,
            "{:<19} {:>15} {:>15} {:>11} {:>9} {:>11} {:>22} {:>6}  {}",
            r.name,
            format!(
                "{:.2}/{:.2}",
                r.sequential.median_wall_secs, r.experimental.median_wall_secs
            ),
            format!(
                "{:.1}/{:.1}",
                r.sequential.mb_per_sec, r.experimental.mb_per_sec
            ),
            format!("{}/{}", r.sequential.requests, r.experimental.requests),
            format!("{}/{}", r.sequential.retries, r.experimental.retries),
            format!(
                "{}/{}",
                rss_label(r.sequential.peak_rss_bytes),
                rss_label(r.experimental.peak_rss_bytes)
            ),
            format!(
                "{:.2}x ({:.2}-{:.2})",
                r.speedup_ratio, r.speedup_ratio_min, r.speedup_ratio_max
            ),
            target,
            verdict
        );
        for failure in &r.failures {
            let _ = writeln!(out, "    {failure}");
        }
    }
    out
}

/// Layout of the chart, in SVG user units.
const SVG_SLOT: f64 = 120.0;
const SVG_LEFT: f64 = 60.0;
const SVG_TOP: f64 = 40.0;
const SVG_PLOT_HEIGHT: f64 = 260.0;
const SVG_BOTTOM: f64 = 110.0;

/// A bar chart of the speed-up per scenario, with min–max whiskers, the target as a tick and a
/// dashed line at 1.0 (no speed-up).
pub fn render_svg(results: &[ScenarioResult]) -> String {
    let width = SVG_LEFT + SVG_SLOT * results.len().max(1) as f64 + 20.0;
    let height = SVG_TOP + SVG_PLOT_HEIGHT + SVG_BOTTOM;
    let top_value = results
        .iter()
        .flat_map(|r| [r.speedup_ratio_max, r.target_ratio.unwrap_or(0.0)])
        .fold(1.5_f64, f64::max)
        * 1.1;
    let y = |value: f64| SVG_TOP + SVG_PLOT_HEIGHT * (1.0 - value / top_value);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{:.0}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">civitai-dl bench: \
         speed-up, experimental vs sequential (median, min-max)</text>\n",
        width / 2.0
    );
    let axis_bottom = y(0.0);
    let _ = writeln!(
        svg,
        "<line x1=\"{SVG_LEFT}\" y1=\"{SVG_TOP}\" x2=\"{SVG_LEFT}\" y2=\"{axis_bottom:.1}\" \
         stroke=\"black\"/>"
    );
    for tick in axis_ticks(top_value) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{tick}x</text>",
            SVG_LEFT - 6.0,
            y(tick) + 4.0
        );
    }
    for (index, r) in results.iter().enumerate() {
        svg.push_str(&bar(index, r, &y, axis_bottom));
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{SVG_LEFT}\" y1=\"{one:.1}\" x2=\"{:.0}\" y2=\"{one:.1}\" stroke=\"#c0392b\" \
         stroke-dasharray=\"6 4\"/>\n<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\" \
         fill=\"#c0392b\">1.0 = no speed-up</text>",
        width - 10.0,
        width - 12.0,
        y(1.0) - 4.0,
        one = y(1.0)
    );
    svg.push_str("</svg>\n");
    svg
}

fn axis_ticks(top: f64) -> Vec<f64> {
    let step = if top > 8.0 { 2.0 } else { 1.0 };
    (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|t| *t <= top)
        .collect()
}

fn bar(index: usize, r: &ScenarioResult, y: &dyn Fn(f64) -> f64, axis_bottom: f64) -> String {
    let center = SVG_LEFT + SVG_SLOT * (index as f64 + 0.5);
    let half = SVG_SLOT * 0.3;
    let fill = match r.verdict {
        Verdict::Pass => "#2e86c1",
        Verdict::Fail => "#e67e22",
    };
    let top = y(r.speedup_ratio);
    let mut out = format!(
        "<g class=\"scenario\"><rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
         fill=\"{fill}\"><title>{}: {:.2}x</title></rect>\n",
        center - half,
        half * 2.0,
        (axis_bottom - top).max(0.0),
        r.name,
        r.speedup_ratio
    );
    let (low, high) = (y(r.speedup_ratio_min), y(r.speedup_ratio_max));
    let _ = writeln!(
        out,
        "<line x1=\"{center:.1}\" y1=\"{low:.1}\" x2=\"{center:.1}\" y2=\"{high:.1}\" \
         stroke=\"black\"/><line x1=\"{:.1}\" y1=\"{low:.1}\" x2=\"{:.1}\" y2=\"{low:.1}\" \
         stroke=\"black\"/><line x1=\"{:.1}\" y1=\"{high:.1}\" x2=\"{:.1}\" y2=\"{high:.1}\" \
         stroke=\"black\"/>",
        center - 8.0,
        center + 8.0,
        center - 8.0,
        center + 8.0
    );
    if let Some(target) = r.target_ratio {
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{t:.1}\" x2=\"{:.1}\" y2=\"{t:.1}\" stroke=\"#27ae60\" \
             stroke-width=\"3\"><title>target {target}x</title></line>",
            center - half - 4.0,
            center + half + 4.0,
            t = y(target)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{center:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.2}x</text>\n\
         <text x=\"{center:.1}\" y=\"{:.1}\" text-anchor=\"end\" \
         transform=\"rotate(-30 {center:.1} {:.1})\">{} ({})</text></g>",
        high.min(top) - 6.0,
        r.speedup_ratio,
        axis_bottom + 16.0,
        axis_bottom + 16.0,
        r.name,
        r.verdict.label()
    );
    out
}

// ---------------------------------------------------------------------------------------------
// A/B on a real target list
// ---------------------------------------------------------------------------------------------

/// Splits `items` at random (seeded, so a run can be repeated) into two halves; the first may be
/// one shorter.
pub fn split_halves<T>(mut items: Vec<T>, seed: u64) -> (Vec<T>, Vec<T>) {
    fastrand::Rng::with_seed(seed).shuffle(&mut items);
    let second = items.split_off(items.len() / 2);
    (items, second)
}

/// One half of an A/B test.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AbHalf {
    /// `sequential` or `experimental`.
    pub configuration: String,
    /// Targets in this half.
    pub targets: usize,
    /// Files asked for.
    pub files: u64,
    /// Files that ended verified.
    pub verified: u64,
    /// Files or targets that failed.
    pub errors: usize,
    /// Retries made.
    pub retries: u64,
    /// Wall time, seconds.
    pub wall_secs: f64,
    /// Bytes written over wall time, MB/s.
    pub mb_per_sec: f64,
    /// Verified files per second.
    pub files_per_sec: f64,
    /// Why files failed.
    pub failures: Vec<String>,
}

/// The A/B result (`--ab`, saved with `--json-file`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AbReport {
    /// The split's seed.
    pub seed: u64,
    /// The sequential half.
    pub sequential: AbHalf,
    /// The experimental half.
    pub experimental: AbHalf,
    /// Experimental throughput over sequential throughput (MB/s).
    pub throughput_ratio: f64,
    /// Experimental files/s over sequential files/s.
    pub files_per_sec_ratio: f64,
}

fn ab_test(global: &GlobalArgs, args: &BenchArgs, list: &Path) -> Result<bool, BenchError> {
    let text = fs::read_to_string(list).map_err(io_error("read", list))?;
    let targets = parse_target_list(&text).map_err(|e| BenchError::Malformed {
        path: list.to_path_buf(),
        what: "target list",
        reason: e.to_string(),
    })?;
    if targets.len() < 2 {
        return Err(BenchError::Invalid(format!(
            "{} needs at least two targets to split",
            list.display()
        )));
    }
    let (first, second) = split_halves(targets, args.seed);
    let workspace = Workspace::new()?;
    let sequential = ab_half(&workspace, global, "sequential", &first)?;
    let experimental = ab_half(&workspace, global, "experimental", &second)?;
    let report = AbReport {
        seed: args.seed,
        throughput_ratio: speed_up(experimental.mb_per_sec, sequential.mb_per_sec),
        files_per_sec_ratio: speed_up(experimental.files_per_sec, sequential.files_per_sec),
        sequential,
        experimental,
    };
    eprintln!("{}", render_ab(&report));
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| BenchError::Invalid(format!("cannot encode the result: {e}")))?;
    if let Some(path) = &args.json_file {
        fs::write(path, &text).map_err(io_error("write", path))?;
    }
    if global.json {
        println!("{text}");
    }
    Ok(report.sequential.errors == 0 && report.experimental.errors == 0)
}

/// Downloads one half with the caller's global options (real host, key, config).
fn ab_half(
    workspace: &Workspace,
    global: &GlobalArgs,
    configuration: &str,
    targets: &[Target],
) -> Result<AbHalf, BenchError> {
    let dir = workspace.run_dir()?;
    let list = dir.join("targets.txt");
    let lines: String = targets.iter().map(|t| format!("{t}\n")).collect();
    fs::write(&list, lines).map_err(io_error("write", &list))?;
    let mut globals = forwarded_globals(global);
    globals.extend(["--no-progress", "-q", "--json"].map(String::from));
    let mut download = vec![
        "--from-file".to_string(),
        list.display().to_string(),
        "-o".to_string(),
        dir.join("out").display().to_string(),
    ];
    download.push(
        if configuration == "sequential" {
            "--force-sync-mode"
        } else {
            EXPERIMENTAL
        }
        .to_string(),
    );
    let outcome = ChildRun {
        global: globals,
        download,
        dir: &dir,
        api_key_env: Some(global.api_key.clone()),
        empty_config: None,
    }
    .execute()?;
    let _ = fs::remove_dir_all(&dir);
    let f = &outcome.figures;
    let wall = outcome.wall_secs.max(1e-9);
    Ok(AbHalf {
        configuration: configuration.to_string(),
        targets: targets.len(),
        files: f.files,
        verified: f.verified,
        errors: f.failures.len(),
        retries: f.retries,
        wall_secs: outcome.wall_secs,
        mb_per_sec: f.bytes as f64 / 1e6 / wall,
        files_per_sec: f.verified as f64 / wall,
        failures: f.failures.clone(),
    })
}

/// The caller's global options, for a child that should behave as the caller asked (the API key
/// goes through the environment, never the command line, where other users could read it).
fn forwarded_globals(global: &GlobalArgs) -> Vec<String> {
    let mut out = Vec::new();
    let mut pass = |flag: &str, value: Option<String>| {
        if let Some(value) = value {
            out.extend([flag.to_string(), value]);
        }
    };
    pass("--base-url", global.base_url.clone());
    pass(
        "--config",
        global.config.as_ref().map(|p| p.display().to_string()),
    );
    pass("--rate-limit", global.rate_limit.map(|r| r.to_string()));
    pass("--rate-burst", global.rate_burst.map(|b| b.to_string()));
    pass(
        "--retry-delays-ms",
        global
            .retry_delays_ms
            .as_ref()
            .map(|d| d.iter().map(u64::to_string).collect::<Vec<_>>().join(",")),
    );
    pass(
        "--connect-timeout",
        global.connect_timeout.map(|s| s.to_string()),
    );
    pass("--read-timeout", global.read_timeout.map(|s| s.to_string()));
    for url in &global.fallback_base_urls {
        pass("--fallback-base-url", Some(url.clone()));
    }
    out
}

fn render_ab(report: &AbReport) -> String {
    let mut out = format!(
        "{:<13} {:>8} {:>6} {:>9} {:>7} {:>8} {:>9} {:>8}\n",
        "half", "targets", "files", "verified", "errors", "retries", "MB/s", "files/s"
    );
    for half in [&report.sequential, &report.experimental] {
        let _ = writeln!(
            out,
            "{:<13} {:>8} {:>6} {:>9} {:>7} {:>8} {:>9.2} {:>8.2}",
            half.configuration,
            half.targets,
            half.files,
            half.verified,
            half.errors,
            half.retries,
            half.mb_per_sec,
            half.files_per_sec
        );
        for failure in &half.failures {
            let _ = writeln!(out, "    {failure}");
        }
    }
    let _ = write!(
        out,
        "experimental / sequential: throughput {:.2}x, files/s {:.2}x (seed {})",
        report.throughput_ratio, report.files_per_sec_ratio, report.seed
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------------------------

/// Models per soak batch (before `--scale`) and their file size.
const SOAK_BATCH_MODELS: usize = 20;
const SOAK_FILE_BYTES: u64 = 256 * 1024;
/// Share of soak files whose first attempt is reset mid-body.
const SOAK_RESET_SHARE: f64 = 0.04;

/// Running totals of the soak.
#[derive(Clone, Debug, Default)]
struct SoakTotals {
    batches: u64,
    files: u64,
    verified: u64,
    retries: u64,
    failed_attempts: u64,
    timeouts: u64,
    recovered: u64,
    failed_first: u64,
    peak_rss: Vec<Option<u64>>,
}

impl SoakTotals {
    fn add(&mut self, expected: u64, figures: &RunFigures) {
        self.batches += 1;
        self.files += expected;
        self.verified += figures.verified.min(expected);
        self.retries += figures.retries;
        self.failed_attempts += figures.failed_attempts;
        self.timeouts += figures.timeouts;
        self.recovered += figures.recovered;
        self.failed_first += figures.recovered + figures.unrecovered;
        self.peak_rss.push(figures.peak_rss);
    }

    /// The KPIs of the plan; a rate with nothing to measure (no failures) holds.
    fn report(&self, secs: f64) -> SoakReport {
        let rate = |part: u64, whole: u64, empty: f64| {
            if whole == 0 {
                empty
            } else {
                part as f64 / whole as f64
            }
        };
        let third = (self.peak_rss.len() / 3).max(1);
        let early = self.peak_rss.iter().take(third).flatten().copied().max();
        let late = self
            .peak_rss
            .iter()
            .rev()
            .take(third)
            .flatten()
            .copied()
            .max();
        let completion = rate(self.verified, self.files, 0.0);
        let timeout_rate = rate(self.timeouts, self.failed_attempts, 0.0);
        let recovery_rate = rate(self.recovered, self.failed_first, 1.0);
        let memory_flat = match (early, late) {
            (Some(early), Some(late)) => {
                late as f64 <= early as f64 * SOAK_RSS_GROWTH + SOAK_RSS_SLACK_BYTES as f64
            }
            _ => true,
        };
        let kpis = vec![
            (
                format!("timeout rate < {:.0}%", SOAK_MAX_TIMEOUT_RATE * 100.0),
                timeout_rate < SOAK_MAX_TIMEOUT_RATE,
            ),
            (
                format!("completion > {:.0}%", SOAK_MIN_COMPLETION * 100.0),
                completion > SOAK_MIN_COMPLETION,
            ),
            (
                format!("automatic recovery > {:.0}%", SOAK_MIN_RECOVERY * 100.0),
                recovery_rate > SOAK_MIN_RECOVERY,
            ),
            ("memory flat".to_string(), memory_flat),
        ];
        SoakReport {
            secs,
            batches: self.batches,
            files: self.files,
            verified: self.verified,
            completion,
            timeout_rate,
            recovery_rate,
            retries: self.retries,
            early_peak_rss_bytes: early,
            late_peak_rss_bytes: late,
            verdict: Verdict::of(kpis.iter().all(|(_, held)| *held)),
            kpis,
        }
    }
}

/// A soak batch's catalogue: resets on a steady share of files, chosen by `seed`.
fn soak_catalog(models: usize, file_size: u64, seed: u64) -> Catalog {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut catalog = Catalog::uniform(models, file_size);
    for file in catalog
        .models
        .iter_mut()
        .flat_map(|m| m.versions.iter_mut())
        .flat_map(|v| v.files.iter_mut())
    {
        if rng.f64() < SOAK_RESET_SHARE {
            file.faults.reset_after = Some((file.size / 2, 1));
        }
    }
    catalog
}

/// Runs experimental batches against fresh faulty fake servers until `--duration` has passed,
/// printing a line every `--report-interval`, then the verdict against the KPIs.
fn soak(workspace: &Workspace, args: &BenchArgs) -> Result<SoakReport, BenchError> {
    let duration = Duration::from_secs(args.duration);
    let interval = Duration::from_secs(args.report_interval.max(1));
    let models = scaled_count(SOAK_BATCH_MODELS, args.scale);
    let file_size = scaled_size(SOAK_FILE_BYTES, args.scale);
    let started = Instant::now();
    let mut next_report = interval;
    let mut totals = SoakTotals::default();
    while started.elapsed() < duration || totals.batches == 0 {
        let scenario = Scenario {
            name: SOAK,
            models,
            file_size,
            knobs: Knobs {
                // About 2% of a batch's API requests.
                api_503_first: 1,
                retry_after_secs: 1,
                ..Knobs::default()
            },
            faults: Faults::None,
            rate_limit: UNBINDING_RATE,
            common: Vec::new(),
            experimental: vec![EXPERIMENTAL],
        };
        let batch_seed = args.seed.wrapping_add(totals.batches);
        let catalog = soak_catalog(models, file_size, batch_seed);
        let (outcome, _) = run_against(workspace, &scenario, catalog, Side::Experimental)?;
        for failure in &outcome.figures.failures {
            eprintln!("soak: {failure}");
        }
        totals.add(models as u64, &outcome.figures);
        if started.elapsed() >= next_report {
            next_report += interval;
            eprintln!(
                "{}",
                soak_line(&totals.report(started.elapsed().as_secs_f64()))
            );
        }
    }
    let report = totals.report(started.elapsed().as_secs_f64());
    eprintln!("{}", soak_line(&report));
    for (kpi, held) in &report.kpis {
        eprintln!("soak KPI {kpi}: {}", if *held { "held" } else { "MISSED" });
    }
    eprintln!("soak verdict: {}", report.verdict.label());
    Ok(report)
}

fn soak_line(r: &SoakReport) -> String {
    format!(
        "soak {:>6.0} s: {} batches, {}/{} files verified ({:.2}%), {} retries, timeout rate \
         {:.2}%, recovery {:.1}%, peak RSS early {} late {}",
        r.secs,
        r.batches,
        r.verified,
        r.files,
        r.completion * 100.0,
        r.retries,
        r.timeout_rate * 100.0,
        r.recovery_rate * 100.0,
        rss_label(r.early_peak_rss_bytes),
        rss_label(r.late_peak_rss_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, ratio: f64, min: f64, max: f64) -> ScenarioResult {
        ScenarioResult {
            name: name.to_string(),
            speedup_ratio: ratio,
            speedup_ratio_min: min,
            speedup_ratio_max: max,
            verdict: Verdict::Pass,
            ..ScenarioResult::default()
        }
    }

    fn outcome(wall_secs: f64, verified: u64) -> RunOutcome {
        RunOutcome {
            wall_secs,
            figures: RunFigures {
                files: verified,
                verified,
                bytes: 10_000_000,
                requests: 4,
                ..RunFigures::default()
            },
        }
    }

    #[test]
    fn median_min_max_and_ratio() {
        let cases: [(&[f64], f64, (f64, f64)); 4] = [
            (&[], 0.0, (0.0, 0.0)),
            (&[3.0], 3.0, (3.0, 3.0)),
            (&[5.0, 1.0, 3.0], 3.0, (1.0, 5.0)),
            (&[4.0, 1.0, 2.0, 3.0], 2.5, (1.0, 4.0)),
        ];
        for (values, mid, range) in cases {
            assert_eq!(median(values), mid, "{values:?}");
            assert_eq!(min_max(values), range, "{values:?}");
        }
        assert_eq!(speed_up(10.0, 4.0), 2.5);
        assert_eq!(speed_up(10.0, 0.0), 0.0);
    }

    #[test]
    fn summary_pairs_rounds_and_judges_the_goal() {
        let goal = Goal::speed_up("x", 1.8, 0.0);
        let seq = [outcome(10.0, 2), outcome(12.0, 2), outcome(9.0, 2)];
        let exp = [outcome(5.0, 2), outcome(4.0, 2), outcome(6.0, 2)];
        let r = summarize("x", 2, Some(&goal), &seq, &exp, None);
        assert_eq!((r.speedup_ratio_min, r.speedup_ratio_max), (1.5, 3.0));
        assert_eq!(r.speedup_ratio, 2.0);
        assert_eq!(r.sequential.median_wall_secs, 10.0);
        assert_eq!(r.experimental.mb_per_sec, 2.0);
        assert_eq!(r.verdict, Verdict::Pass);
        let slow = summarize("x", 2, Some(&goal), &seq[..1], &seq[..1], None);
        assert_eq!(slow.verdict, Verdict::Fail);
        assert!(slow.failures.is_empty());
    }

    #[test]
    fn a_lost_file_or_an_exceeded_rate_fails_whatever_the_speed() {
        let seq = [outcome(10.0, 2)];
        let lost = summarize("x", 2, None, &seq, &[outcome(1.0, 1)], None);
        assert_eq!(lost.verdict, Verdict::Fail);
        assert_eq!(
            lost.failures,
            vec!["experimental: only 1 of 2 files verified"]
        );
        assert!(!stable(&lost));
        let within = summarize("x", 2, None, &seq, &seq, Some((10, 10.0)));
        assert_eq!(within.verdict, Verdict::Pass);
        let over = summarize("x", 2, None, &seq, &seq, Some((11, 10.0)));
        assert_eq!(over.verdict, Verdict::Fail);
        assert!(!stable(&over));
    }

    #[test]
    fn goals_with_tolerance() {
        let cases = [
            (Goal::speed_up("a", 1.8, 0.0), 1.79, false),
            (Goal::speed_up("a", 1.8, 0.0), 1.8, true),
            (Goal::speed_up("a", 1.0, NOT_SLOWER_NOISE), 0.96, true),
            (Goal::speed_up("a", 1.0, NOT_SLOWER_NOISE), 0.94, false),
            (Goal::rate_cap("a"), 0.5, true),
        ];
        for (goal, ratio, reached) in cases {
            assert_eq!(goal.reached(ratio), reached, "{goal:?} at {ratio}");
        }
        for name in DEFAULT_SCENARIOS {
            assert!(
                GOALS.iter().any(|g| g.scenario == name),
                "{name} has a goal"
            );
            assert!(scenario(name, 1.0).is_some(), "{name} is defined");
        }
    }

    #[test]
    fn baseline_verdicts() {
        let baseline = [result("a", 2.0, 1.9, 2.1), result("b", 1.0, 1.0, 1.0)];
        let cases: [(&str, f64, bool); 6] = [
            ("a", 2.0, false),
            ("a", 1.81, false),
            ("a", 1.79, true),
            ("a", 3.0, false),
            ("b", 0.5, true),
            ("new", 0.1, false),
        ];
        for (name, ratio, regressed) in cases {
            let current = [result(name, ratio, ratio, ratio)];
            let found = regressions(&current, &baseline, 0.10);
            assert_eq!(!found.is_empty(), regressed, "{name} at {ratio}");
        }
        let found = regressions(&[result("a", 1.0, 1.0, 1.0)], &baseline, 0.10);
        assert_eq!(
            found,
            vec![Regression {
                scenario: "a".into(),
                baseline: 2.0,
                current: 1.0
            }]
        );
    }

    #[test]
    fn saved_results_read_back_as_a_baseline() {
        let report = BenchReport {
            version: BENCH_VERSION,
            scenarios: vec![result("a", 2.0, 1.5, 2.5)],
            ..BenchReport::default()
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.contains("\"speedup_ratio\":2.0"));
        let back: BenchReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back.scenarios[0].speedup_ratio, 2.0);
        assert_eq!(back.scenarios[0].verdict, Verdict::Pass);
    }

    #[test]
    fn svg_has_one_bar_per_scenario() {
        let results = [
            result("api-latency", 2.0, 1.9, 2.2),
            result("flaky", 1.1, 0.9, 1.3),
            result("clean-fast", 1.0, 0.95, 1.05),
        ];
        let svg = render_svg(&results);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<g class=\"scenario\">").count(), 3);
        for r in &results {
            assert!(
                svg.contains(&format!(">{} (PASS)</text>", r.name)),
                "{}",
                r.name
            );
        }
        assert!(svg.contains("1.0 = no speed-up"));
    }

    #[test]
    fn ab_split_is_a_seeded_partition() {
        let items: Vec<u32> = (0..11).collect();
        let (a, b) = split_halves(items.clone(), 7);
        assert_eq!((a.len(), b.len()), (5, 6));
        let mut all: Vec<u32> = a.iter().chain(&b).copied().collect();
        all.sort();
        assert_eq!(all, items);
        assert_eq!(split_halves(items.clone(), 7), (a.clone(), b));
        let others: Vec<_> = (0..5)
            .map(|seed| split_halves(items.clone(), seed).0)
            .collect();
        assert!(others.iter().any(|o| *o != a), "the seed changes the split");
    }

    #[test]
    fn busiest_second() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        let cases: [(&[u64], u64); 4] = [
            (&[], 0),
            (&[0, 500, 999, 1000, 1500], 3),
            (&[3000, 0, 100, 200], 3),
            (&[0, 1000, 2000], 1),
        ];
        for (times, most) in cases {
            assert_eq!(
                max_in_window(&ms(times), Duration::from_secs(1)),
                most,
                "{times:?}"
            );
        }
    }

    #[test]
    fn child_summary_figures() {
        let report = serde_json::json!({
            "files": [
                {"label": "m1", "status": "downloaded"},
                {"label": "m2", "status": "failed", "reason": "hash mismatch"}
            ],
            "failed_targets": [{"target": "99", "reason": "not found"}],
            "stopped": null,
            "metrics": {"bytes": 5, "api": {"requests": 7}, "retries": 2,
                        "memory": {"peak_rss_mib": 12.0}}
        });
        let f = figures(&report);
        assert_eq!(
            (f.files, f.verified, f.bytes, f.requests, f.retries),
            (2, 1, 5, 7, 2)
        );
        assert_eq!(
            f.failures,
            vec!["m2: failed hash mismatch", "99: not found"]
        );
        assert_eq!(f.peak_rss, Some(12 * MIB));
        assert_eq!(peak_rss_in(&serde_json::json!({"wall_secs": 1})), None);
        assert_eq!(
            parse_vm_hwm("Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t 1 kB\n"),
            Some(2048 * 1024)
        );
    }

    #[test]
    fn soak_kpis() {
        let batch = |verified, recovered, failed, rss| RunFigures {
            verified,
            recovered,
            unrecovered: failed,
            failed_attempts: recovered,
            peak_rss: Some(rss),
            ..RunFigures::default()
        };
        let mut good = SoakTotals::default();
        for _ in 0..6 {
            good.add(20, &batch(20, 1, 0, 20 * MIB));
        }
        let report = good.report(60.0);
        assert_eq!(report.verdict, Verdict::Pass, "{:?}", report.kpis);
        assert_eq!(report.recovery_rate, 1.0);

        let mut leaky = good.clone();
        for _ in 0..6 {
            leaky.add(20, &batch(20, 0, 0, 80 * MIB));
        }
        let kpis = leaky.report(60.0).kpis;
        assert!(kpis.iter().any(|(k, held)| k == "memory flat" && !held));

        let mut lossy = SoakTotals::default();
        lossy.add(20, &batch(18, 0, 2, 20 * MIB));
        let report = lossy.report(1.0);
        assert_eq!(report.verdict, Verdict::Fail);
        assert_eq!(report.recovery_rate, 0.0);
    }

    #[test]
    fn scale_shrinks_counts_and_sizes_but_keeps_work() {
        assert_eq!(scaled_count(100, 0.05), 5);
        assert_eq!(scaled_count(4, 0.01), 1);
        assert_eq!(scaled_size(200 * MIB, 0.5), 100 * MIB);
        assert_eq!(scaled_size(1024, 0.01), MIN_FILE_BYTES);
        let flaky = scenario("flaky", 1.0).unwrap().catalog();
        let faults: Vec<&FileFaults> = flaky
            .models
            .iter()
            .map(|m| &m.versions[0].files[0].faults)
            .collect();
        assert_eq!(faults.iter().filter(|f| f.stall_after.is_some()).count(), 1);
        assert!(faults.iter().any(|f| f.reset_after.is_some()));
        assert!(faults.iter().any(|f| f.corrupt_attempts > 0));
        assert!(matches!(
            selected_scenarios(&["nope".into()]),
            Err(BenchError::UnknownScenario { .. })
        ));
    }
}
