//! The soak: faulty work at a steady rate for a given time, judged against the stability targets
//! (`docs/design.md#the-stability-targets`).

use super::*;

/// Models per soak batch (before `--scale`) and their file size.
pub(crate) const SOAK_BATCH_MODELS: usize = 20;
pub(crate) const SOAK_FILE_BYTES: u64 = 256 * 1024;
/// Share of soak files whose first attempt is reset mid-body.
pub(crate) const SOAK_RESET_SHARE: f64 = 0.04;

/// Running totals of the soak.
#[derive(Clone, Debug, Default)]
pub(crate) struct SoakTotals {
    pub(crate) batches: u64,
    pub(crate) files: u64,
    pub(crate) verified: u64,
    pub(crate) retries: u64,
    pub(crate) failed_attempts: u64,
    pub(crate) timeouts: u64,
    pub(crate) recovered: u64,
    pub(crate) failed_first: u64,
    pub(crate) peak_rss: Vec<Option<u64>>,
}

impl SoakTotals {
    pub(crate) fn add(&mut self, expected: u64, figures: &RunFigures) {
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

    /// The stability targets; a rate with nothing to measure (no failures) holds.
    pub(crate) fn report(&self, secs: f64) -> SoakReport {
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
pub(crate) fn soak_catalog(models: usize, file_size: u64, seed: u64) -> Catalog {
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
pub(crate) fn soak(
    workspace: &Workspace,
    options: &BenchOptions,
) -> Result<SoakReport, BenchError> {
    let duration = Duration::from_secs(options.duration);
    let interval = Duration::from_secs(options.report_interval.max(1));
    let models = scaled_count(SOAK_BATCH_MODELS, options.scale);
    let file_size = scaled_size(SOAK_FILE_BYTES, options.scale);
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
        let batch_seed = options.seed.wrapping_add(totals.batches);
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

pub(crate) fn soak_line(r: &SoakReport) -> String {
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
