//! The performance monitor end to end: per-interval lines, the metrics file, alerts.

use civitai_dl_fake::Knobs;
use serde_json::Value;

use crate::support::{Sandbox, download, model, run, serve};

const MIB: u64 = 1024 * 1024;

#[test]
fn monitored_run_logs_intervals_and_writes_the_metrics_file() {
    let models = vec![
        model(21, "LORA", 5 * MIB / 4),
        model(22, "LORA", 5 * MIB / 4),
    ];
    let knobs = Knobs {
        bandwidth: Some(MIB),
        ..Knobs::default()
    };
    let server = serve(models, knobs);
    let sandbox = Sandbox::new();
    let metrics_path = sandbox.root().join("metrics.json");
    let mut cmd = download(&server, &sandbox);
    cmd.args(["21", "22", "--json", "--monitor-performance"])
        .args(["--report-interval", "1", "--baseline-throughput", "1000"])
        .arg("--metrics-json")
        .arg(&metrics_path);
    let ran = run(cmd);
    ran.expect_code(0);

    let lines: Vec<&str> = ran
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("monitor: "))
        .collect();
    assert!(
        lines.len() >= 2,
        "a ~2.5 s run reports every second:\n{}",
        ran.stderr
    );
    for line in &lines {
        for part in ["MB/s", "active", "queued", "errors", "timeouts", "RSS"] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
    }
    assert!(
        ran.stderr.contains("alert: throughput"),
        "the unreachable baseline raises an alert:\n{}",
        ran.stderr
    );

    let text = std::fs::read_to_string(&metrics_path).expect("metrics file written");
    let metrics: Value = serde_json::from_str(&text).expect("metrics file is JSON");
    assert_eq!(metrics["version"], 1);
    assert_eq!(metrics["files_planned"], 2);
    assert_eq!(metrics["files_ok"], 2);
    assert_eq!(metrics["bytes"], 2 * (5 * MIB / 4));
    assert_eq!(metrics["failures"], 0);
    let resources = &metrics["resources"];
    assert!(resources["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0));
    assert!(resources["samples"].as_u64().is_some_and(|n| n >= 2));
    let alerts = metrics["alerts"].as_array().expect("alerts list");
    assert!(!alerts.is_empty(), "{metrics:#}");
    assert!(
        alerts.iter().all(|a| a["kind"] == "throughput"),
        "{metrics:#}"
    );
    assert_eq!(alerts[0]["threshold"], 900.0);
    assert_eq!(
        ran.json()["metrics"],
        metrics,
        "--json and --metrics-json agree"
    );
}
