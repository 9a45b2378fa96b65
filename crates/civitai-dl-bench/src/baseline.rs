//! The regression gate: a saved result from the base branch, and the speed-ups that fell by more
//! than the threshold since.

use super::*;

/// A saved result to compare with. An empty or foreign file is refused rather than read as "no
/// scenarios", which would let every comparison pass.
pub(crate) fn load_baseline(path: &Path) -> Result<BenchReport, BenchError> {
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
