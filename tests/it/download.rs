//! Downloads that end well: clean runs, repaired faults, layouts, API bursts, hash policies.

use civitai_dl_fake::{FakeFile, FakeModel, FileFaults, Knobs, PublishedHash};
use serde_json::Value;

use crate::support::{
    KEY, Sandbox, assert_key_only_at_api, assert_verified, download, first_file, model, run, serve,
    sha256_file, with_faults,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn with_hash(id: u64, size: u64, hash: PublishedHash) -> FakeModel {
    let mut m = model(id, "LORA", size);
    m.versions[0].files[0].published_hash = hash;
    m
}

#[test]
fn clean_multi_model_run_verifies_files_sidecars_and_previews() {
    let mut models = vec![
        model(11, "LORA", 64 * KIB),
        model(12, "Checkpoint", MIB),
        model(13, "LORA", 300 * KIB),
    ];
    for m in &mut models {
        m.versions[0].images = 2;
    }
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    // With a key, so that a key reaching storage on any of these requests would be seen.
    cmd.args(["11", "12", "13", "--images", "1", "--json"])
        .args(["--api-key", KEY]);
    let ran = run(cmd);
    ran.expect_code(0);

    for m in &models {
        let file = first_file(m);
        assert_verified(&sandbox.out.join(&file.name), file);
        let stem = file.name.trim_end_matches(".safetensors");
        let info_path = sandbox.out.join(format!("{stem}.civitai.info"));
        let info: Value = serde_json::from_slice(&std::fs::read(&info_path).unwrap())
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", info_path.display()));
        assert_eq!(info["modelId"], m.id, "{info:#}");
        assert!(info["files"].as_array().is_some_and(|f| !f.is_empty()));
        let previews: Vec<_> = sandbox
            .downloads()
            .into_iter()
            .filter(|p| p.to_string_lossy().starts_with(&format!("{stem}.preview")))
            .collect();
        assert_eq!(
            previews.len(),
            1,
            "--images 1 fetches one preview: {previews:?}"
        );
        let preview = std::fs::read(sandbox.out.join(&previews[0])).unwrap();
        assert_eq!(&preview[..3], &[0xFF, 0xD8, 0xFF], "a JPEG preview");
    }

    let report = ran.json();
    let files = report["files"].as_array().unwrap();
    let downloaded = files.iter().filter(|f| f["status"] == "downloaded").count();
    assert_eq!(downloaded, 6, "3 models + 3 previews: {report:#}");
    assert!(report["failed_targets"].as_array().unwrap().is_empty());
    assert!(report["stopped"].is_null());
    assert!(
        ran.stderr
            .contains("3 downloaded, 0 already present, 0 failed")
            && ran
                .stderr
                .contains("previews: 3 downloaded, 0 already present, 0 failed"),
        "{}",
        ran.stderr
    );
    assert_key_only_at_api(&server);
}

#[test]
fn corrupted_first_attempt_is_downloaded_again() {
    let m = with_faults(
        21,
        512 * KIB,
        FileFaults {
            corrupt_attempts: 1,
            ..FileFaults::default()
        },
    );
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("21");
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
    assert!(
        server.stats().ranges().len() >= 2,
        "the corrupt copy was fetched again: {:?}",
        server.stats().ranges()
    );
    assert_eq!(
        sandbox.downloads().len(),
        2,
        "file + sidecar only: {:?}",
        sandbox.downloads()
    );
}

#[test]
fn html_page_instead_of_the_file_is_never_saved_as_the_model() {
    let m = with_faults(
        31,
        256 * KIB,
        FileFaults {
            html_attempts: 1,
            ..FileFaults::default()
        },
    );
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("31");
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
}

#[test]
fn html_page_on_every_attempt_fails_without_a_model_file() {
    let m = with_faults(
        32,
        256 * KIB,
        FileFaults {
            html_attempts: 10,
            ..FileFaults::default()
        },
    );
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["32", "--json"]);
    let ran = run(cmd);
    ran.expect_code(1);
    let name = &first_file(&m).name;
    assert!(
        !sandbox.out.join(name).exists(),
        "the HTML page became the model"
    );
    let report = ran.json();
    let reason = report["files"][0]["reason"].as_str().unwrap_or_default();
    assert_eq!(report["files"][0]["status"], "failed", "{report:#}");
    assert!(
        reason.to_lowercase().contains("html"),
        "reason should mention HTML: {reason}"
    );
    assert!(ran.stderr.to_lowercase().contains("html"), "{}", ran.stderr);
}

#[test]
fn api_key_never_reaches_the_storage_host() {
    let m = model(41, "LORA", 256 * KIB);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["41", "--api-key", KEY]);
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
    assert_key_only_at_api(&server);
    let agents = server.stats().user_agents();
    assert!(!agents.is_empty());
    assert!(
        agents.iter().all(|a| a.starts_with("civitai-dl/")),
        "User-Agents: {agents:?}"
    );
}

#[test]
fn api_burst_of_503_and_429_still_downloads_everything() {
    let models = vec![model(51, "LORA", 128 * KIB), model(52, "LORA", 128 * KIB)];
    let knobs = Knobs {
        api_503_first: 2,
        api_429_first: 1,
        retry_after_secs: 0,
        ..Knobs::default()
    };
    let server = serve(models.clone(), knobs);
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["51", "52", "--json"]);
    let ran = run(cmd);
    ran.expect_code(0);
    for m in &models {
        assert_verified(&sandbox.out.join(&first_file(m).name), first_file(m));
    }
    assert!(
        ran.json()["metrics"]["retries"].as_u64().unwrap() >= 3,
        "{}",
        ran.stdout
    );
}

#[test]
fn comfyui_layout_sorts_by_model_type() {
    let models = vec![
        model(61, "LORA", 64 * KIB),
        model(62, "Checkpoint", 64 * KIB),
    ];
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["61", "62", "--layout", "comfyui"]);
    run(cmd).expect_code(0);
    let lora = first_file(&models[0]);
    let checkpoint = first_file(&models[1]);
    assert_verified(&sandbox.out.join("models/loras").join(&lora.name), lora);
    assert_verified(
        &sandbox
            .out
            .join("models/checkpoints")
            .join(&checkpoint.name),
        checkpoint,
    );
}

#[test]
fn wrong_published_hash_keeps_the_file_as_unverified() {
    let m = with_hash(71, 128 * KIB, PublishedHash::Wrong);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["71", "--json"]);
    let ran = run(cmd);
    ran.expect_code(1);
    let file = first_file(&m);
    assert!(
        !sandbox.out.join(&file.name).exists(),
        "kept under its real name"
    );
    let unverified = sandbox.out.join(format!("{}.unverified", file.name));
    assert_verified(&unverified, file);
    assert_eq!(
        ran.json()["files"][0]["status"],
        "unverified",
        "{}",
        ran.stdout
    );
    assert!(
        ran.stderr.contains("--accept-hash-mismatch"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("published hash is likely wrong"),
        "{}",
        ran.stderr
    );
}

#[test]
fn wrong_published_hash_accepted_keeps_the_real_name() {
    let m = with_hash(72, 128 * KIB, PublishedHash::Wrong);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["72", "--accept-hash-mismatch"]);
    run(cmd).expect_code(0);
    let file = first_file(&m);
    assert_verified(&sandbox.out.join(&file.name), file);
    assert!(
        !sandbox
            .out
            .join(format!("{}.unverified", file.name))
            .exists()
    );
}

#[test]
fn missing_published_hash_records_the_local_sha256() {
    let m = with_hash(73, 128 * KIB, PublishedHash::Missing);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("73");
    run(cmd).expect_code(0);
    let file: &FakeFile = first_file(&m);
    let path = sandbox.out.join(&file.name);
    assert_verified(&path, file);
    let record = sandbox.state_record(file.id);
    assert_eq!(record["status"], "done", "{record:#}");
    let local = record["local_sha256"].as_str().unwrap_or_default();
    assert!(
        local.eq_ignore_ascii_case(&sha256_file(&path)),
        "{record:#}"
    );
}

#[test]
fn maintenance_page_from_the_api_is_retried() {
    let m = model(53, "LORA", 64 * KIB);
    let server = serve(
        vec![m.clone()],
        Knobs {
            api_html_first: 2,
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("53");
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
}

#[test]
fn no_metadata_writes_no_sidecar() {
    let m = model(54, "LORA", 64 * KIB);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["54", "--no-metadata"]);
    run(cmd).expect_code(0);
    assert_eq!(
        sandbox.downloads(),
        vec![std::path::PathBuf::from(&first_file(&m).name)]
    );
}

// Issue 11.2: an unattended run (stderr not a terminal) logged nothing per file, only warnings
// and the final summary. Each downloaded file gets one plain line: where, how much, how fast,
// and whether the SHA-256 was checked.
#[test]
fn each_downloaded_file_gets_one_plain_line() {
    let models: Vec<FakeModel> = (1401..1403).map(|id| model(id, "LORA", 64 * KIB)).collect();
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["1401", "1402"]);
    let ran = run(cmd);
    ran.expect_code(0);
    for m in &models {
        let name = &first_file(m).name;
        let line = ran
            .stderr
            .lines()
            .find(|l| l.contains("downloaded ") && l.contains(name.as_str()))
            .unwrap_or_else(|| panic!("no line for {name}: {}", ran.stderr));
        assert!(
            line.contains("64.00 KiB") && line.contains("/s") && line.contains("SHA-256 verified"),
            "{line}"
        );
    }
}
