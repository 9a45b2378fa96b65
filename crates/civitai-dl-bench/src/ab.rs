//! A/B on a real target list: one half sequential, one half experimental, with the caller's own
//! host, key and config.

use super::*;

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

pub(crate) fn ab_test(options: &BenchOptions, list: &Path) -> Result<bool, BenchError> {
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
    let (first, second) = split_halves(targets, options.seed);
    let workspace = Workspace::new(&options.exe)?;
    let sequential = ab_half(&workspace, options, "sequential", &first)?;
    let experimental = ab_half(&workspace, options, "experimental", &second)?;
    let report = AbReport {
        seed: options.seed,
        throughput_ratio: speed_up(experimental.mb_per_sec, sequential.mb_per_sec),
        files_per_sec_ratio: speed_up(experimental.files_per_sec, sequential.files_per_sec),
        sequential,
        experimental,
    };
    eprintln!("{}", render_ab(&report));
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| BenchError::Invalid(format!("cannot encode the result: {e}")))?;
    if let Some(path) = &options.json_file {
        fs::write(path, &text).map_err(io_error("write", path))?;
    }
    if options.json {
        println!("{text}");
    }
    Ok(report.sequential.errors == 0 && report.experimental.errors == 0)
}

/// Downloads one half with the caller's global options (real host, key, config).
pub(crate) fn ab_half(
    workspace: &Workspace,
    options: &BenchOptions,
    configuration: &str,
    targets: &[Target],
) -> Result<AbHalf, BenchError> {
    let dir = workspace.run_dir()?;
    let list = dir.join("targets.txt");
    let lines: String = targets.iter().map(|t| format!("{t}\n")).collect();
    fs::write(&list, lines).map_err(io_error("write", &list))?;
    let mut globals = options.forwarded.clone();
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
        exe: &workspace.exe,
        global: globals,
        download,
        dir: &dir,
        api_key_env: Some(options.api_key.clone()),
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

pub(crate) fn render_ab(report: &AbReport) -> String {
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
