//! `civitai-dl bench`: a tiny scenario end to end, the baseline gate, and A/B against the fake.

use std::path::Path;

use serde_json::Value;

use crate::support::{FAST_RETRIES, KEY, Sandbox, civitai_dl, model, run, serve};

/// No scenario run uses the global base URL; the bench starts its own fake servers.
const UNUSED_HOST: &str = "http://127.0.0.1:9";

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("bench wrote its result");
    serde_json::from_str(&text).expect("the result is JSON")
}

fn clean_fast_bench(sandbox: &Sandbox, extra: &[&str]) -> crate::support::Ran {
    let mut cmd = civitai_dl(UNUSED_HOST, sandbox, FAST_RETRIES);
    cmd.args([
        "bench",
        "--scenario",
        "clean-fast",
        "--rounds",
        "1",
        "--scale",
        "0.05",
    ])
    .args(extra);
    run(cmd)
}

#[test]
fn bench_saves_ratios_and_gates_on_a_baseline() {
    let sandbox = Sandbox::new();
    let result = sandbox.root().join("result.json");
    let ran = clean_fast_bench(&sandbox, &["--json-file", result.to_str().unwrap()]);
    ran.expect_code(0);
    assert!(
        ran.stderr.contains("speed-up"),
        "table printed: {}",
        ran.stderr
    );
    let json = read_json(&result);
    let scenario = &json["scenarios"][0];
    assert_eq!(scenario["name"], "clean-fast");
    let ratio = scenario["speedup_ratio"].as_f64().expect("a ratio");
    assert!(ratio > 0.0, "{scenario:#}");
    assert!(scenario["speedup_ratio_min"].as_f64().unwrap() <= ratio);
    assert!(scenario["speedup_ratio_max"].as_f64().unwrap() >= ratio);
    assert_eq!(
        scenario["sequential"]["wall_secs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        scenario["failures"].as_array().unwrap().len(),
        0,
        "{scenario:#}"
    );
    // The speed-up of a 0.05-scale run is noise, so either verdict can come; but it must be the
    // one the goal gives for the figures saved beside it.
    let goal = civitai_dl_bench::GOALS
        .iter()
        .find(|g| g.scenario == "clean-fast")
        .expect("clean-fast has a goal");
    assert_eq!(scenario["target_ratio"].as_f64(), goal.min_speed_up);
    let expected = if goal.reached(ratio) { "PASS" } else { "FAIL" };
    assert_eq!(scenario["verdict"], expected, "{scenario:#}");

    // Ratios of a 0.05-scale run swing widely, so the gate is shown with baselines far on either
    // side (the exact boundary is unit-tested in bench.rs).
    let gate = |baseline_ratio: f64, name: &str| {
        let mut baseline = json.clone();
        baseline["scenarios"][0]["speedup_ratio"] = Value::from(baseline_ratio);
        let path = sandbox.root().join(name);
        std::fs::write(&path, baseline.to_string()).unwrap();
        clean_fast_bench(&sandbox, &["--baseline", path.to_str().unwrap()])
    };
    let slower = gate(0.01, "low.json");
    slower.expect_code(0);
    assert!(slower.stderr.contains("no regression"), "{}", slower.stderr);

    // A baseline far faster than anything measurable: the gate trips and names the scenario.
    let fallen = gate(100.0, "high.json");
    fallen.expect_code(1);
    assert!(
        fallen.stderr.contains("regression: clean-fast"),
        "{}",
        fallen.stderr
    );
}

#[test]
fn bench_rejects_an_unknown_scenario() {
    let sandbox = Sandbox::new();
    let mut cmd = civitai_dl(UNUSED_HOST, &sandbox, FAST_RETRIES);
    cmd.args(["bench", "--scenario", "warp-speed"]);
    let ran = run(cmd);
    ran.expect_code(2);
    assert!(
        ran.stderr.contains("unknown scenario 'warp-speed'"),
        "{}",
        ran.stderr
    );
}

#[test]
fn ab_splits_a_list_between_the_two_configurations() {
    let models: Vec<_> = (1..=6).map(|id| model(id, "LORA", 64 * 1024)).collect();
    let server = serve(models, Default::default());
    let sandbox = Sandbox::new();
    let list = sandbox.root().join("targets.txt");
    std::fs::write(&list, "# six models\n1\n2\n3\n4\n5\n6\n").unwrap();
    let result = sandbox.root().join("ab.json");
    let mut cmd = civitai_dl(&server.api_url(), &sandbox, FAST_RETRIES);
    cmd.args(["--api-key", KEY, "bench", "--ab"])
        .arg(&list)
        .args(["--seed", "3", "--json-file"])
        .arg(&result);
    let ran = run(cmd);
    ran.expect_code(0);
    let json = read_json(&result);
    let (seq, exp) = (&json["sequential"], &json["experimental"]);
    assert_eq!(
        seq["targets"].as_u64().unwrap() + exp["targets"].as_u64().unwrap(),
        6
    );
    assert_eq!(
        seq["verified"].as_u64().unwrap() + exp["verified"].as_u64().unwrap(),
        6
    );
    assert_eq!(
        (seq["errors"].as_u64(), exp["errors"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(json["throughput_ratio"].as_f64().unwrap() > 0.0, "{json:#}");
    assert_eq!(server.stats().resolves(), 6, "every file fetched once");
}
