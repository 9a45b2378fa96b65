//! `scan` and `verify` on libraries the tests build: the hash cache across runs, what the walk
//! skips, a scan killed or interrupted part-way, every verdict, quarantine, roots from ComfyUI's
//! yaml, an index that cannot be used, and a broken config file. Both commands run offline here (`--no-remote`): the
//! base URL given points nowhere, and nothing may try it. Identification on Civitai is in
//! `identify.rs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{FAST_RETRIES, Ran, Sandbox, civitai_dl, interrupt, run, wait_with_timeout};

/// A closed port: a scan that tried the network would fail.
const NOWHERE: &str = "http://127.0.0.1:9";

/// `civitai-dl <command> --index <sandbox>/index.sqlite --no-remote <args…>`.
fn library(sandbox: &Sandbox, command: &str, args: &[&str]) -> Command {
    let mut cmd = civitai_dl(NOWHERE, sandbox, FAST_RETRIES);
    cmd.arg(command)
        .arg("--index")
        .arg(index_of(sandbox))
        .arg("--no-remote")
        .args(args);
    cmd
}

/// [`library`] on one path.
fn library_on(sandbox: &Sandbox, command: &str, args: &[&str], path: &Path) -> Command {
    let mut cmd = library(sandbox, command, args);
    cmd.arg(path);
    cmd
}

fn index_of(sandbox: &Sandbox) -> PathBuf {
    sandbox.root().join("index.sqlite")
}

/// `scan --json <out>`: its NDJSON events.
fn scan_json(sandbox: &Sandbox) -> (Ran, Vec<Value>) {
    let mut cmd = library(sandbox, "scan", &["--json"]);
    cmd.arg(&sandbox.out);
    let ran = run(cmd);
    let events = ndjson(&ran.stdout);
    (ran, events)
}

fn ndjson(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The last event, which must be the summary.
fn summary(events: &[Value]) -> &Value {
    let last = events.last().expect("some events");
    assert_eq!(last["event"], "summary", "{last}");
    last
}

fn counts(summary: &Value) -> (u64, u64, u64) {
    let n = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {summary}"))
    };
    (n("files"), n("hashed"), n("reused"))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A safetensors file: header length, JSON header, tensor bytes.
fn safetensors(header: &str, tensors: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(tensors);
    bytes
}

fn sha256_upper(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Every file under `root` with its length and modification time.
fn snapshot(root: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    crate::support::files_under(root)
        .into_iter()
        .map(|relative| {
            let metadata = std::fs::metadata(root.join(&relative)).unwrap();
            (relative, metadata.len(), metadata.modified().unwrap())
        })
        .collect()
}

/// Move a file's modification time forward, as an edit would.
fn touch_later(path: &Path) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(10))
        .unwrap();
}

#[test]
fn a_warm_rescan_reuses_every_hash_a_touched_file_is_read_again_and_a_removed_one_pruned() {
    let sandbox = Sandbox::new();
    for i in 0..12 {
        write(
            &sandbox.out.join(format!("loras/l{i}.safetensors")),
            &safetensors("{}", &[i; 5000]),
        );
    }
    write(&sandbox.out.join("checkpoints/c.ckpt"), &[9; 70_000]);
    let before = snapshot(&sandbox.out);
    let (cold, events) = scan_json(&sandbox);
    cold.expect_code(0);
    assert_eq!(
        snapshot(&sandbox.out),
        before,
        "scan is read-only on the library"
    );
    assert_eq!(counts(summary(&events)), (13, 13, 0));
    assert_eq!(summary(&events)["pending"], 13);
    assert_eq!(summary(&events)["identify"], "offline");

    let (warm, events) = scan_json(&sandbox);
    warm.expect_code(0);
    assert_eq!(counts(summary(&events)), (13, 0, 13), "{}", warm.stdout);
    let files: Vec<&Value> = events.iter().filter(|e| e["event"] == "file").collect();
    assert!(files.iter().all(|f| f["source"] == "cached"));

    std::fs::write(sandbox.out.join("checkpoints/c.ckpt"), [8; 70_000]).unwrap();
    touch_later(&sandbox.out.join("checkpoints/c.ckpt"));
    std::fs::remove_file(sandbox.out.join("loras/l0.safetensors")).unwrap();
    let (after, events) = scan_json(&sandbox);
    after.expect_code(0);
    let last = summary(&events);
    assert_eq!(counts(last), (12, 1, 11));
    assert_eq!(last["pruned"], 1);
    let rehashed = events
        .iter()
        .find(|e| e["event"] == "file" && e["source"] == "hashed")
        .expect("one file hashed");
    assert_eq!(rehashed["sha256"], sha256_upper(&[8; 70_000]));
}

#[test]
fn the_walk_ends_on_a_symlink_loop_and_skips_part_files_hidden_folders_and_our_own() {
    let sandbox = Sandbox::new();
    let out = &sandbox.out;
    write(&out.join("loras/keep.safetensors"), b"weights");
    write(&out.join("loras/KEEP2.GGUF"), b"weights");
    for skipped in [
        "loras/new.safetensors.part",
        "loras/new.safetensors.part.json",
        "loras/new.safetensors.civitai.info",
        "loras/preview.png",
        ".hidden/x.safetensors",
        "loras/.cache/y.ckpt",
        ".civitai-dl/quarantine/z.safetensors",
    ] {
        write(&out.join(skipped), b"not a model of the library");
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(out, out.join("loras/loop")).unwrap();
    let (ran, events) = scan_json(&sandbox);
    ran.expect_code(0);
    let paths: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "file")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(
        paths
            .iter()
            .all(|p| p.contains("/loras/") && !p.contains("loop"))
    );
    #[cfg(unix)]
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "problem" && e["error"] == false),
        "the loop is reported as a note: {}",
        ran.stdout
    );
}

/// A library of `count` small files under `out/many`.
fn many_files(sandbox: &Sandbox, count: usize) {
    for i in 0..count {
        write(
            &sandbox.out.join(format!("many/{i:05}.pt")),
            format!("file {i}").as_bytes(),
        );
    }
}

/// Starts `scan --json`, reads events until `hashed` files are done, then stops reading: the
/// scan blocks on its full stdout pipe long before it can finish.
fn scan_until(
    sandbox: &Sandbox,
    hashed: usize,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut cmd = library(sandbox, "scan", &["--json"]);
    cmd.arg(&sandbox.out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn civitai-dl");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = 0;
    let mut line = String::new();
    while seen < hashed {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the scan ended early"
        );
        if line.contains(r#""event":"file""#) {
            seen += 1;
        }
    }
    (child, reader)
}

/// 2,000 file events are far more than a pipe buffer holds, so the scan cannot be done when the
/// test stops reading after a few.
const MANY: usize = 2000;

#[test]
fn a_killed_scan_keeps_what_it_hashed_and_the_rerun_resumes() {
    let sandbox = Sandbox::new();
    many_files(&sandbox, MANY);
    let (mut child, _reader) = scan_until(&sandbox, 5);
    child.kill().unwrap();
    child.wait().unwrap();
    let (rerun, events) = scan_json(&sandbox);
    rerun.expect_code(0);
    let (files, hashed, reused) = counts(summary(&events));
    assert_eq!(files, MANY as u64);
    assert!(
        reused >= 5,
        "every reported hash was committed: reused {reused}"
    );
    assert!(hashed < MANY as u64, "the rerun resumed: hashed {hashed}");
    assert_eq!(hashed + reused, MANY as u64);
}

#[test]
fn ctrl_c_stops_a_scan_with_exit_130_and_keeps_its_hashes() {
    let sandbox = Sandbox::new();
    many_files(&sandbox, MANY);
    let (mut child, reader) = scan_until(&sandbox, 5);
    interrupt(&child);
    let events: Vec<Value> = reader
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(30)),
        Some(130)
    );
    let last = summary(&events);
    assert_eq!(last["stopped"], true);
    assert!(last["hashed"].as_u64().unwrap() < MANY as u64, "{last}");
    let (_, events) = scan_json(&sandbox);
    assert!(counts(summary(&events)).2 >= 5);
}

/// `<stem>.civitai.info` listing `name` with these hashes.
fn sidecar(model: &Path, name: &str, size: usize, sha256: Option<&str>, autov3: Option<&str>) {
    let stem = Path::new(name).file_stem().unwrap().to_str().unwrap();
    let info = serde_json::json!({
        "id": 10, "modelId": 1,
        "files": [{"name": name, "sizeKB": size as f64 / 1024.0,
                   "hashes": {"SHA256": sha256, "AutoV3": autov3}}]
    });
    write(
        &model.with_file_name(format!("{stem}.civitai.info")),
        info.to_string().as_bytes(),
    );
}

#[test]
fn verify_gives_every_verdict_and_exits_0_only_when_all_pass() {
    let sandbox = Sandbox::new();
    let out = &sandbox.out;
    let tensors = vec![5u8; 4000];
    let original = safetensors(r#"{"w":{}}"#, &tensors);
    let autov3 = &sha256_upper(&tensors)[..12];
    let sha = sha256_upper(&original);

    let ok = out.join("ok.safetensors");
    write(&ok, &original);
    sidecar(
        &ok,
        "ok.safetensors",
        original.len(),
        Some(&sha),
        Some(autov3),
    );
    // SwarmUI's edit: the same tensors under a longer header.
    let edited = out.join("edited.safetensors");
    write(
        &edited,
        &safetensors(
            r#"{"__metadata__":{"modelspec.title":"x"},"w":{}}"#,
            &tensors,
        ),
    );
    sidecar(
        &edited,
        "edited.safetensors",
        original.len(),
        Some(&sha),
        Some(autov3),
    );
    let passing = run(library_on(&sandbox, "verify", &[], out));
    passing.expect_code(0);
    assert!(passing.stdout.contains("ok-tensor"), "{}", passing.stdout);

    let bad = out.join("bad.ckpt");
    write(&bad, b"flipped bits");
    sidecar(
        &bad,
        "bad.ckpt",
        12,
        Some(&sha256_upper(b"original bits")),
        None,
    );
    let bare = out.join("bare.pt");
    write(&bare, b"no hash published");
    sidecar(&bare, "bare.pt", 17, None, None);
    write(&out.join("mine.bin"), b"no sidecar at all");
    sidecar(
        &out.join("gone.safetensors"),
        "gone.safetensors",
        10,
        Some(&sha),
        None,
    );
    let mut cmd = library(&sandbox, "verify", &["--json"]);
    cmd.arg(out);
    let ran = run(cmd);
    ran.expect_code(1);
    let events = ndjson(&ran.stdout);
    let verdict = |name: &str| {
        events
            .iter()
            .find(|e| e["event"] == "verdict" && e["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("no verdict for {name}: {}", ran.stdout))["verdict"]
            .clone()
    };
    assert_eq!(verdict("/ok.safetensors"), "ok");
    assert_eq!(verdict("/edited.safetensors"), "ok-tensor");
    assert_eq!(verdict("/bad.ckpt"), "mismatch");
    assert_eq!(verdict("/bare.pt"), "no-published-hash");
    assert_eq!(verdict("/mine.bin"), "unknown");
    assert_eq!(verdict("/gone.safetensors"), "missing");
    let last = summary(&events);
    assert_eq!(
        (last["ok"].as_u64(), last["mismatch"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(bad.exists(), "verify without --quarantine moves nothing");
}

#[test]
fn quarantine_moves_a_mismatch_under_the_root_and_never_overwrites() {
    let sandbox = Sandbox::new();
    let bad = sandbox.out.join("loras/bad.safetensors");
    let quarantine = sandbox.out.join(".civitai-dl/quarantine/loras");
    for round in 0..2u8 {
        write(&bad, &[round; 100]);
        sidecar(
            &bad,
            "bad.safetensors",
            100,
            Some(&sha256_upper(b"published")),
            None,
        );
        let ran = run(library_on(
            &sandbox,
            "verify",
            &["--quarantine"],
            &sandbox.out,
        ));
        ran.expect_code(1);
        assert!(ran.stdout.contains("moved to"), "{}", ran.stdout);
        assert!(!bad.exists(), "round {round}: the mismatch left its folder");
    }
    assert_eq!(
        std::fs::read(quarantine.join("bad.safetensors")).unwrap(),
        [0; 100]
    );
    assert_eq!(
        std::fs::read(quarantine.join("bad.safetensors.1")).unwrap(),
        [1; 100]
    );
    // The quarantine is not part of the library.
    let (_, events) = scan_json(&sandbox);
    assert_eq!(counts(summary(&events)).0, 0);
}

#[test]
fn verify_cached_trusts_the_hashes_scan_left() {
    let sandbox = Sandbox::new();
    let file = sandbox.out.join("a.safetensors");
    let bytes = safetensors("{}", &[1; 300]);
    write(&file, &bytes);
    sidecar(
        &file,
        "a.safetensors",
        bytes.len(),
        Some(&sha256_upper(&bytes)),
        None,
    );
    scan_json(&sandbox).0.expect_code(0);
    let mut cmd = library(&sandbox, "verify", &["--cached", "--json"]);
    cmd.arg(&file);
    let ran = run(cmd);
    ran.expect_code(0);
    let events = ndjson(&ran.stdout);
    let checked = events.iter().find(|e| e["event"] == "verdict").unwrap();
    assert_eq!(
        (checked["verdict"].as_str(), checked["source"].as_str()),
        (Some("ok"), Some("cached"))
    );
}

#[test]
fn roots_come_from_comfyuis_extra_model_paths_yaml() {
    let sandbox = Sandbox::new();
    let webui = sandbox.out.join("webui");
    write(&webui.join("models/Lora/a.safetensors"), b"lora");
    write(&webui.join("models/Stable-diffusion/b.ckpt"), b"checkpoint");
    write(
        &webui.join("extensions/x/not-listed.pt"),
        b"not in a listed folder",
    );
    let yaml = sandbox.root().join("extra_model_paths.yaml");
    std::fs::write(
        &yaml,
        "a1111:\n  base_path: out/webui\n  checkpoints: models/Stable-diffusion\n  loras: |\n    models/Lora\n    models/LyCORIS\n",
    )
    .unwrap();
    let mut cmd = library(&sandbox, "scan", &["--json", "--comfy-yaml"]);
    cmd.arg(&yaml);
    let ran = run(cmd);
    ran.expect_code(0);
    let events = ndjson(&ran.stdout);
    assert_eq!(counts(summary(&events)).0, 2, "{}", ran.stdout);
    assert!(
        ran.stderr.contains("LyCORIS"),
        "the missing folder is named: {}",
        ran.stderr
    );
}

#[test]
fn an_index_that_cannot_be_used_is_a_one_line_usage_error_naming_it() {
    let sandbox = Sandbox::new();
    write(&sandbox.out.join("a.pt"), b"x");
    std::fs::write(index_of(&sandbox), vec![b'#'; 5000]).unwrap();
    let ran = run(library_on(&sandbox, "scan", &[], &sandbox.out));
    ran.expect_code(2);
    let lines = ran.stderr_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&index_of(&sandbox).display().to_string()),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("delete it"), "{}", lines[0]);
    assert!(ran.stdout.is_empty());
}

#[test]
fn the_default_index_lives_in_the_cache_folder_and_a_missing_root_is_a_usage_error() {
    let sandbox = Sandbox::new();
    write(&sandbox.out.join("a.pt"), b"x");
    let mut cmd = civitai_dl(NOWHERE, &sandbox, FAST_RETRIES);
    cmd.arg("scan").arg("--no-remote").arg(&sandbox.out);
    let ran = run(cmd);
    ran.expect_code(0);
    assert!(ran.stdout.contains("hashed"), "{}", ran.stdout);
    assert!(
        sandbox
            .home
            .join(".cache/civitai-dl/index.sqlite")
            .is_file()
    );

    let mut cmd = civitai_dl(NOWHERE, &sandbox, FAST_RETRIES);
    cmd.arg("scan").arg(sandbox.root().join("no-such-folder"));
    let ran = run(cmd);
    ran.expect_code(2);
    assert!(ran.stderr.contains("does not exist"), "{}", ran.stderr);
}

#[test]
fn a_broken_config_stops_a_remote_scan_or_verify_with_the_way_to_work_offline() {
    let sandbox = Sandbox::new();
    write(&sandbox.out.join("a.ckpt"), &[1; 100]);
    let config = sandbox.home.join("broken.toml");
    std::fs::write(&config, "bogus = 1\n").unwrap();
    for command in ["scan", "verify"] {
        let mut cmd = civitai_dl(NOWHERE, &sandbox, FAST_RETRIES);
        cmd.arg(command)
            .arg("--index")
            .arg(index_of(&sandbox))
            .arg("--config")
            .arg(&config)
            .arg(&sandbox.out);
        let ran = run(cmd);
        ran.expect_code(2);
        let error = ran.stderr.trim();
        assert!(
            error.contains("bogus") && error.contains("broken.toml"),
            "{error}"
        );
        assert!(
            error.ends_with("or run with --no-remote to work offline"),
            "{command}: {error}"
        );
        assert_eq!(error.lines().count(), 1, "{error}");
        // Offline the config is not read; verify says 1 only because a.ckpt has no sidecar.
        let offline = run(library_on(
            &sandbox,
            command,
            &["--config", config.to_str().unwrap()],
            &sandbox.out,
        ));
        offline.expect_code(if command == "scan" { 0 } else { 1 });
    }
}
