//! Child runs: the measured executable in a fresh folder, with a scrubbed environment, its memory
//! sampled from `/proc` while it runs and its `--json` summary read back.

use super::*;

/// Where the child runs put their downloads, and the empty config file that keeps the developer's
/// own config (which might turn the experimental switch on) out of the "sequential" runs.
pub(crate) struct Workspace {
    /// The executable every child run starts.
    pub(crate) exe: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) empty_config: PathBuf,
    pub(crate) runs: std::cell::Cell<u64>,
}

impl Workspace {
    pub(crate) fn new(exe: &Path) -> Result<Workspace, BenchError> {
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
            exe: exe.to_path_buf(),
            root,
            empty_config,
            runs: std::cell::Cell::new(0),
        })
    }

    /// A fresh folder for one run.
    pub(crate) fn run_dir(&self) -> Result<PathBuf, BenchError> {
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
pub(crate) struct ChildRun<'a> {
    pub(crate) exe: &'a Path,
    pub(crate) global: Vec<String>,
    pub(crate) download: Vec<String>,
    pub(crate) dir: &'a Path,
    /// Environment for the child: `None` scrubs every variable that could leak a real key or
    /// config in (scenario runs); `Some` passes the caller's through, plus the API key.
    pub(crate) api_key_env: Option<Option<String>>,
    pub(crate) empty_config: Option<&'a Path>,
}

/// What one child run produced.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunOutcome {
    pub(crate) wall_secs: f64,
    pub(crate) figures: RunFigures,
}

/// Figures read from a child's `--json` summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RunFigures {
    pub(crate) files: u64,
    pub(crate) verified: u64,
    pub(crate) failures: Vec<String>,
    pub(crate) bytes: u64,
    pub(crate) requests: u64,
    pub(crate) retries: u64,
    pub(crate) failed_attempts: u64,
    pub(crate) timeouts: u64,
    pub(crate) recovered: u64,
    pub(crate) unrecovered: u64,
    pub(crate) peak_rss: Option<u64>,
}

impl ChildRun<'_> {
    pub(crate) fn execute(&self) -> Result<RunOutcome, BenchError> {
        let exe = self.exe;
        let stdout_path = self.dir.join("stdout.json");
        let stderr_path = self.dir.join("stderr.txt");
        let stdout = fs::File::create(&stdout_path).map_err(io_error("create", &stdout_path))?;
        let stderr = fs::File::create(&stderr_path).map_err(io_error("create", &stderr_path))?;
        let mut command = Command::new(exe);
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
        let child = command.spawn().map_err(io_error("run", exe))?;
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
pub(crate) fn wait_sampling_rss(
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
pub(crate) fn vm_hwm_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// The kernel's peak-RSS mark of a `/proc/<pid>/status`, read as the run monitor reads it.
pub(crate) fn parse_vm_hwm(status: &str) -> Option<u64> {
    civitai_dl_engine::observe::monitor::status_bytes(status, "VmHWM")
}

pub(crate) fn stderr_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Reads the figures the bench needs from a child's `--json` summary.
pub(crate) fn figures(report: &Value) -> RunFigures {
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
pub(crate) fn peak_rss_in(value: &Value) -> Option<u64> {
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
