//! Measuring a scenario: A B A B rounds against fresh fake servers, and the ratios and verdicts
//! that come out of them.

use super::*;

/// Which configuration a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Sequential,
    Experimental,
}

/// One run of `side` against a fresh fake server serving the scenario's catalogue.
pub(crate) fn scenario_run(
    workspace: &Workspace,
    scenario: &Scenario,
    side: Side,
) -> Result<(RunOutcome, u64), BenchError> {
    run_against(workspace, scenario, scenario.catalog(), side)
}

/// One run of `side` against a fresh fake server serving `catalog`; also the most API requests
/// the server saw in any one second.
pub(crate) fn run_against(
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
        exe: &workspace.exe,
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
pub(crate) fn child_globals(rate_limit: f64) -> Vec<String> {
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
pub(crate) fn measure(
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
pub(crate) fn summarize(
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

pub(crate) fn run_failures(side: &str, run: &RunOutcome, expected_files: u64) -> Vec<String> {
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

pub(crate) fn side_result(runs: &[RunOutcome]) -> SideResult {
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
