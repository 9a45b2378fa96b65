//! The bench's pure parts: ratios, verdicts, the gate, the table, the A/B split, the soak KPIs.

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
