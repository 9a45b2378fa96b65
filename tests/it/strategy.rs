//! The plan's test strategy, scaled for CI: a load test (100 models in one run) and a fault test
//! (an outage window in the middle of a run). The endurance soak lives in `civitai-dl bench
//! --scenario soak`.

use std::time::Duration;

use civitai_dl_fake::Knobs;

use crate::support::*;

const KIB: u64 = 1024;

fn models(count: u64, size: u64) -> Vec<civitai_dl_fake::FakeModel> {
    (1..=count).map(|i| model(5000 + i, "LORA", size)).collect()
}

fn ids(models: &[civitai_dl_fake::FakeModel]) -> Vec<String> {
    models.iter().map(|m| m.id.to_string()).collect()
}

/// The plan's load test: 100 models in one run, success rate reported (> 99 %: here every one).
#[test]
fn load_one_hundred_models_in_one_run() {
    // Every API answer takes at least this long, so the reported latencies have a floor.
    const LATENCY_MS: u64 = 3;
    let models = models(100, 16 * KIB);
    let server = serve(
        models.clone(),
        Knobs {
            api_latency: Duration::from_millis(LATENCY_MS),
            ..Knobs::default()
        },
    );
    for experimental in [false, true] {
        let api_before = server.stats().api_requests();
        let sandbox = Sandbox::new();
        let mut cmd = download(&server, &sandbox);
        cmd.args(ids(&models)).args(["--no-metadata", "--json"]);
        if experimental {
            cmd.arg("--enable-experimental-performance");
        }
        let ran = run(cmd);
        ran.expect_code(0);
        let report = ran.json();
        let metrics = &report["metrics"];
        assert_eq!(metrics["files_ok"], 100, "{metrics:#}");
        assert_eq!(metrics["files_failed"], 0);
        assert_eq!(metrics["success_rate"], 1.0);
        assert!(metrics["files_per_hour"].as_f64().unwrap() > 0.0);
        let api = &metrics["api"];
        assert_eq!(
            api["requests"].as_u64(),
            Some(server.stats().api_requests() - api_before),
            "every API request the server saw is counted: {metrics:#}"
        );
        let percentile = |p: &str| api[p].as_f64().unwrap();
        assert!(
            LATENCY_MS as f64 <= percentile("p50_ms")
                && percentile("p50_ms") <= percentile("p95_ms")
                && percentile("p95_ms") <= percentile("p99_ms"),
            "latencies are measured, at least the server's {LATENCY_MS} ms: {metrics:#}"
        );
        for m in &models {
            assert_verified(&sandbox.out.join(&first_file(m).name), first_file(m));
        }
    }
}

/// The plan's network-failure test, scaled down: an outage window (every API and storage request
/// gets 503) opens while files are transferring. Retries happen, every file ends verified, and
/// the recovery is reported.
#[test]
fn an_outage_in_the_middle_of_a_run_is_ridden_out() {
    let models = models(6, 256 * KIB);
    let knobs = Knobs {
        // About a quarter of a second per file, so the window falls mid-run.
        bandwidth: Some(1024 * KIB),
        outage: Some((Duration::from_millis(400), Duration::from_millis(1500))),
        retry_after_secs: 0,
        ..Knobs::default()
    };
    let server = serve(models.clone(), knobs);
    let sandbox = Sandbox::new();
    let mut cmd = download_with_retries(&server, &sandbox, "300,600,1200,2400");
    cmd.args(ids(&models)).args(["--no-metadata", "--json"]);
    let ran = run(cmd);
    ran.expect_code(0);
    for m in &models {
        assert_verified(&sandbox.out.join(&first_file(m).name), first_file(m));
    }
    let metrics = &ran.json()["metrics"];
    assert!(metrics["retries"].as_u64().unwrap() > 0, "{metrics:#}");
    assert!(metrics["failures"].as_u64().unwrap() > 0, "{metrics:#}");
    assert_eq!(metrics["files_ok"], 6);
    assert!(metrics["recovered"].as_u64().unwrap() > 0, "{metrics:#}");
    assert_eq!(metrics["recovery_rate"], 1.0, "{metrics:#}");
    assert!(
        ran.stderr.contains("retry"),
        "retries are logged: {}",
        ran.stderr
    );
}
