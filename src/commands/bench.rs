//! `civitai-dl bench`: sequential against experimental on the fake Civitai, A/B and soak. The
//! measuring is the `civitai-dl-bench` crate; this command hands it the running executable and the
//! caller's flags, spelled as the command line spells them.

use anyhow::Context;
use civitai_dl_bench::{BenchError, BenchOptions};

use super::{Exit, usage};
use crate::cli::{BenchArgs, GlobalArgs};

/// `civitai-dl bench` waits on child processes, so it runs on the blocking pool.
pub(super) async fn bench(global: GlobalArgs, args: BenchArgs) -> anyhow::Result<Exit> {
    let exe = std::env::current_exe().context("cannot locate the civitai-dl executable")?;
    let options = BenchOptions {
        forwarded: forwarded_globals(&global),
        api_key: global.api_key.clone(),
        json: global.json,
        exe,
        scenarios: args.scenarios,
        rounds: args.rounds,
        scale: args.scale,
        json_file: args.json_file,
        baseline: args.baseline,
        threshold: args.threshold,
        plot: args.plot,
        ab: args.ab,
        seed: args.seed,
        duration: args.duration,
        report_interval: args.report_interval,
    };
    let passed = tokio::task::spawn_blocking(move || civitai_dl_bench::run(&options))
        .await
        .context("the bench task failed")?
        .map_err(|error| match error {
            BenchError::UnknownScenario { .. } | BenchError::Invalid(_) => usage(error.to_string()),
            other => other.into(),
        })?;
    Ok(if passed {
        Exit::Success
    } else {
        Exit::SomeFailed
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
