//! Helpers shared by the end-to-end tests: a catalogue builder, a sandbox folder, a command builder
//! that isolates the binary from the developer's own key and config, and checks on the results.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use civitai_dl_fake::{Catalog, FakeCivitai, FakeFile, FakeModel, FakeVersion, FileFaults, Knobs};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The API key the fake accepts.
pub const KEY: &str = "test-key";
/// Longest a single run of the binary may take before the test fails instead of hanging.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A one-version, one-file model: version id `id * 10`, file id `id * 100`, file name
/// `model_<id>.safetensors`, content seeded by the file id.
pub fn model(id: u64, model_type: &str, size: u64) -> FakeModel {
    let file = FakeFile::new(id * 100, &format!("model_{id}.safetensors"), size);
    FakeModel::new(
        id,
        &format!("Model {id}"),
        model_type,
        vec![FakeVersion::new(id * 10, "v1.0", vec![file])],
    )
}

/// The only file of a model built by [`model`] (or the first file of its first version).
pub fn first_file(model: &FakeModel) -> &FakeFile {
    &model.versions[0].files[0]
}

/// `count` one-file LORA [`model`]s of `size` bytes with consecutive ids from `first_id`.
pub fn models(first_id: u64, count: u64, size: u64) -> Vec<FakeModel> {
    (first_id..first_id + count)
        .map(|id| model(id, "LORA", size))
        .collect()
}

/// A [`model`] LORA whose first `attempts` GETs are cut after `bytes` body bytes.
pub fn cut_after(id: u64, size: u64, bytes: u64, attempts: u32) -> FakeModel {
    with_faults(
        id,
        size,
        FileFaults {
            reset_after: Some((bytes, attempts)),
            ..FileFaults::default()
        },
    )
}

/// A [`model`] LORA whose only file has `faults`.
pub fn with_faults(id: u64, size: u64, faults: FileFaults) -> FakeModel {
    let mut m = model(id, "LORA", size);
    m.versions[0].files[0].faults = faults;
    m
}

/// Starts a fake Civitai serving `models`, accepting [`KEY`].
pub fn serve(models: Vec<FakeModel>, knobs: Knobs) -> FakeCivitai {
    let catalog = Catalog {
        models,
        valid_keys: vec![KEY.to_owned()],
    };
    FakeCivitai::start_in_background(catalog, knobs).expect("fake Civitai starts")
}

/// The setup most end-to-end tests start from: a fake Civitai serving `models`, a fresh sandbox,
/// and the download command for every one of the models.
pub struct Scenario {
    pub models: Vec<FakeModel>,
    pub server: FakeCivitai,
    pub sandbox: Sandbox,
}

impl Scenario {
    /// Serve `models` with `knobs` into a new sandbox.
    pub fn new(models: Vec<FakeModel>, knobs: Knobs) -> Scenario {
        Scenario {
            server: serve(models.clone(), knobs),
            models,
            sandbox: Sandbox::new(),
        }
    }

    /// `civitai-dl download -o <out> <every model id> <args…>`.
    pub fn download(&self, args: &[&str]) -> Command {
        let mut cmd = download(&self.server, &self.sandbox);
        cmd.args(self.models.iter().map(|m| m.id.to_string()))
            .args(args);
        cmd
    }

    /// Every model's first file is in `out/`, holding the bytes the fake serves.
    pub fn assert_all_verified(&self) {
        for m in &self.models {
            let file = first_file(m);
            assert_verified(&self.sandbox.out.join(&file.name), file);
        }
    }
}

/// A private folder per test: `out/` receives the downloads and `home/` stands in for the user's
/// home and config directory; anything else appearing under the root is a leak.
pub struct Sandbox {
    root: TempDir,
    /// The output directory given with `-o`.
    pub out: PathBuf,
    /// HOME and XDG_CONFIG_HOME of the binary.
    pub home: PathBuf,
}

impl Sandbox {
    /// A fresh sandbox with empty `out/` and `home/`.
    pub fn new() -> Sandbox {
        let root = tempfile::tempdir().expect("temp dir");
        let out = root.path().join("out");
        let home = root.path().join("home");
        std::fs::create_dir_all(&out).expect("create out");
        std::fs::create_dir_all(&home).expect("create home");
        Sandbox { root, out, home }
    }

    /// The folder holding `out/` and `home/`.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Every file under the sandbox root, relative to it.
    pub fn all_files(&self) -> Vec<PathBuf> {
        files_under(self.root())
    }

    /// Files of the output folder, relative to it, excluding the state folder.
    pub fn downloads(&self) -> Vec<PathBuf> {
        files_under(&self.out)
            .into_iter()
            .filter(|p| !p.starts_with(".civitai-dl"))
            .collect()
    }

    /// The state snapshot `<out>/.civitai-dl/state.json`.
    pub fn state(&self) -> Value {
        let path = self.out.join(".civitai-dl").join("state.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("state.json is not JSON: {e}"))
    }

    /// The state record of a file id.
    pub fn state_record(&self, file_id: u64) -> Value {
        let state = self.state();
        state["files"]
            .as_array()
            .expect("state has files")
            .iter()
            .find(|r| r["file"]["id"] == file_id)
            .cloned()
            .unwrap_or_else(|| panic!("no state record for file {file_id}: {state:#}"))
    }
}

/// Recursively lists the files under `root`, relative to it, sorted.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                found.push(relative.to_path_buf());
            }
        }
    }
    found.sort();
    found
}

/// Retry waits of most tests: short, so injected faults recover quickly.
pub const FAST_RETRIES: &str = "20,50,100";

/// The binary with `base_url` as its API host, `retry_delays_ms` between retries, no progress bars,
/// and an environment scrubbed of anything that could leak a real key or config into the test.
pub fn civitai_dl(base_url: &str, sandbox: &Sandbox, retry_delays_ms: &str) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("civitai-dl"));
    for var in civitai_dl_engine::env::ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.env("HOME", &sandbox.home)
        .env("XDG_CONFIG_HOME", &sandbox.home)
        .env("XDG_CACHE_HOME", sandbox.home.join(".cache"))
        .env("NO_COLOR", "1")
        .current_dir(&sandbox.home)
        .args(["--base-url", base_url])
        .args(["--no-progress", "--retry-delays-ms", retry_delays_ms])
        .args(["--rate-limit", "500", "--rate-burst", "100"]);
    cmd
}

/// `civitai-dl download -o <out>` against `server`; append targets and flags.
pub fn download(server: &FakeCivitai, sandbox: &Sandbox) -> Command {
    download_with_retries(server, sandbox, FAST_RETRIES)
}

/// [`download`] with other retry waits (milliseconds, comma-separated).
pub fn download_with_retries(
    server: &FakeCivitai,
    sandbox: &Sandbox,
    retry_delays_ms: &str,
) -> Command {
    let mut cmd = civitai_dl(&server.api_url(), sandbox, retry_delays_ms);
    cmd.arg("download").arg("-o").arg(&sandbox.out);
    cmd
}

/// The switch that turns on the experimental concurrent driver, segments and preview pool.
pub const EXPERIMENTAL: &str = "--enable-experimental-performance";
/// The segment count the segmented tests ask for.
pub const SEGMENTS: usize = 4;

/// A config file lowering the segment threshold to 1 MiB, so a few-MiB file is segmented.
pub fn low_threshold_config(sandbox: &Sandbox) -> PathBuf {
    let path = sandbox.root().join("segments.toml");
    std::fs::write(&path, "[experimental]\nsegment_threshold_mib = 1\n").expect("write config");
    path
}

/// `download <model>` with [`SEGMENTS`] segments above a 1 MiB threshold.
pub fn segmented_download(server: &FakeCivitai, sandbox: &Sandbox, model: &FakeModel) -> Command {
    segmented_download_with_retries(server, sandbox, model, FAST_RETRIES)
}

/// [`segmented_download`] with other retry waits (milliseconds, comma-separated).
pub fn segmented_download_with_retries(
    server: &FakeCivitai,
    sandbox: &Sandbox,
    model: &FakeModel,
    retry_delays_ms: &str,
) -> Command {
    let mut cmd = download_with_retries(server, sandbox, retry_delays_ms);
    cmd.arg(model.id.to_string())
        .args([EXPERIMENTAL, "--segments", &SEGMENTS.to_string()])
        .arg("--config")
        .arg(low_threshold_config(sandbox));
    cmd
}

/// `civitai-dl info` against `server`; append targets and flags.
pub fn info(server: &FakeCivitai, sandbox: &Sandbox) -> Command {
    let mut cmd = civitai_dl(&server.api_url(), sandbox, FAST_RETRIES);
    cmd.arg("info");
    cmd
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Ran {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ran {
    /// Panics (with both streams) unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Ran {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Stdout parsed as JSON (`--json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The non-empty lines of stderr.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs a command to its end (failing the test after [`RUN_TIMEOUT`]).
pub fn run(cmd: Command) -> Ran {
    let output: Output = assert_cmd::Command::from_std(cmd)
        .timeout(RUN_TIMEOUT)
        .output()
        .expect("civitai-dl runs");
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Uppercase hex SHA-256 of a file on disk (the form `content_sha256` returns).
pub fn sha256_file(path: &Path) -> String {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Asserts that `path` holds exactly the bytes the fake serves for `file`.
pub fn assert_verified(path: &Path, file: &FakeFile) {
    assert!(path.is_file(), "{} is missing", path.display());
    assert_eq!(
        sha256_file(path),
        civitai_dl_fake::content_sha256(file.seed, file.size),
        "{} does not hold the served bytes",
        path.display()
    );
}

/// Asserts that the API key reached the API host and never the storage host, which did serve
/// something.
pub fn assert_key_only_at_api(server: &FakeCivitai) {
    let stats = server.stats();
    assert!(stats.auth_at_api() > 0, "the API host never got the key");
    assert!(
        stats.storage_requests() > 0,
        "nothing was fetched from storage"
    );
    assert_eq!(
        stats.auth_at_storage(),
        0,
        "the key leaked to the storage host"
    );
}

/// [`KEY`] is in neither output stream of `ran` nor in any file under the sandbox.
pub fn assert_key_written_nowhere(ran: &Ran, sandbox: &Sandbox) {
    assert!(!ran.stdout.contains(KEY), "key in stdout");
    assert!(!ran.stderr.contains(KEY), "key in stderr");
    for path in sandbox.all_files() {
        let bytes = std::fs::read(sandbox.root().join(&path)).unwrap();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the key is written into {}",
            path.display()
        );
    }
}

/// Polls `check` every 20 ms until it holds; false if `limit` passed first.
pub fn poll_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !check() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The size of a file, or 0 when it does not exist.
pub fn len_or_zero(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The Range headers sent for one file id, in order.
pub fn ranges_of(server: &FakeCivitai, file_id: u64) -> Vec<Option<String>> {
    server
        .stats()
        .ranges()
        .into_iter()
        .filter(|(id, _)| *id == file_id)
        .map(|(_, range)| range)
        .collect()
}

/// The start offset of a `bytes=N-` Range header.
pub fn range_start(range: &str) -> Option<u64> {
    range
        .strip_prefix("bytes=")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Sends SIGINT to a running child, as Ctrl-C in a terminal would.
pub fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT failed");
}

/// Waits for a child, killing it (and failing) if it outlives `limit`; its exit code.
pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let mut status = None;
    let exited = poll_until(limit, || {
        status = child.try_wait().expect("poll child");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("civitai-dl did not exit within {limit:?}");
    }
    status.and_then(|s| s.code())
}

/// Starts `download <model_id>` in the background and waits until `part` holds bytes.
pub fn start_download_until_part_grows(
    server: &FakeCivitai,
    sandbox: &Sandbox,
    model_id: u64,
    part: &Path,
) -> Child {
    let mut cmd = download(server, sandbox);
    cmd.arg(model_id.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn civitai-dl");
    if !poll_until(Duration::from_secs(30), || len_or_zero(part) > 0) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no bytes reached {} within 30 s", part.display());
    }
    child
}

/// Targets a list plans in batches of 100: a list file of 120 one-file models from `first_id`,
/// served with 700 ms per API answer so planning takes over a second (two batches). The fake,
/// a sandbox, and the list file in it.
pub fn slow_list(first_id: u64) -> (FakeCivitai, Sandbox, PathBuf) {
    let catalogue = models(first_id, 120, 1024);
    let ids: Vec<String> = catalogue.iter().map(|m| m.id.to_string()).collect();
    let server = serve(
        catalogue,
        Knobs {
            api_latency: Duration::from_millis(700),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let list = sandbox.root().join("list.txt");
    std::fs::write(&list, ids.join("\n")).expect("write the list");
    (server, sandbox, list)
}
