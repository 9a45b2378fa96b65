//! Ways of naming targets, listings, plans without downloads, and host fallback.

use std::collections::BTreeSet;

use civitai_dl_fake::{FakeModel, Knobs};
use serde_json::Value;

use crate::support::{
    FAST_RETRIES, KEY, Sandbox, assert_key_only_at_api, assert_verified, civitai_dl, download,
    first_file, info, model, run, serve,
};

const KIB: u64 = 1024;

fn by(creator: &str, nsfw: bool, m: FakeModel) -> FakeModel {
    FakeModel {
        creator: creator.to_owned(),
        nsfw,
        ..m
    }
}

/// File ids listed by `info --json` / `download --dry-run --json`.
fn listed_file_ids(plan: &Value) -> BTreeSet<u64> {
    plan.as_array()
        .unwrap_or_else(|| panic!("a JSON array: {plan:#}"))
        .iter()
        .map(|f| f["file_id"].as_u64().expect("file_id"))
        .collect()
}

#[test]
fn user_listing_walks_every_page() {
    // More models than one page holds (100), so the listing must follow the cursor.
    let mut models: Vec<FakeModel> = (0..104)
        .map(|i| by("tester", i % 10 == 0, model(1000 + i, "LORA", KIB)))
        .collect();
    models.push(by("someone_else", false, model(1200, "LORA", KIB)));
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();

    let mut all = info(&server, &sandbox);
    all.args(["--user", "tester", "--json"]);
    let ran = run(all);
    ran.expect_code(0);
    let want: BTreeSet<u64> = models
        .iter()
        .filter(|m| m.creator == "tester")
        .map(|m| first_file(m).id)
        .collect();
    assert_eq!(listed_file_ids(&ran.json()), want);

    let mut sfw = info(&server, &sandbox);
    sfw.args(["--user", "tester", "--sfw-only", "--json"]);
    let ran = run(sfw);
    ran.expect_code(0);
    let want_sfw: BTreeSet<u64> = models
        .iter()
        .filter(|m| m.creator == "tester" && !m.nsfw)
        .map(|m| first_file(m).id)
        .collect();
    assert_eq!(listed_file_ids(&ran.json()), want_sfw);
}

#[test]
fn user_download_takes_nsfw_models_unless_sfw_only() {
    let models = vec![
        by("tester", false, model(301, "LORA", 64 * KIB)),
        by("tester", true, model(302, "LORA", 64 * KIB)),
        by("other", false, model(303, "LORA", 64 * KIB)),
    ];
    let server = serve(models.clone(), Knobs::default());

    let everything = Sandbox::new();
    let mut cmd = download(&server, &everything);
    cmd.args(["--user", "tester"]);
    run(cmd).expect_code(0);
    assert_verified(
        &everything.out.join(&first_file(&models[0]).name),
        first_file(&models[0]),
    );
    assert_verified(
        &everything.out.join(&first_file(&models[1]).name),
        first_file(&models[1]),
    );
    assert!(!everything.out.join(&first_file(&models[2]).name).exists());

    let sfw = Sandbox::new();
    let mut cmd = download(&server, &sfw);
    cmd.args(["--user", "tester", "--sfw-only"]);
    run(cmd).expect_code(0);
    assert_verified(
        &sfw.out.join(&first_file(&models[0]).name),
        first_file(&models[0]),
    );
    assert!(
        !sfw.out.join(&first_file(&models[1]).name).exists(),
        "nsfw model downloaded"
    );
}

#[test]
fn targets_from_file_version_air_and_url() {
    let models: Vec<FakeModel> = (401..=405).map(|id| model(id, "LORA", 64 * KIB)).collect();
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let list = sandbox.home.join("targets.txt");
    std::fs::write(
        &list,
        "# my favourites\n\n401\n   \n  # indented comment\n402\n",
    )
    .unwrap();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("--from-file")
        .arg(&list)
        .args(["--version", "4030"])
        .arg("urn:air:sdxl:lora:civitai:404@4040")
        .arg("https://civitai.com/models/405/some-slug?modelVersionId=4050")
        // With a key, so that a key reaching storage would be seen.
        .args(["--api-key", KEY]);
    let ran = run(cmd);
    ran.expect_code(0);
    for m in &models {
        assert_verified(&sandbox.out.join(&first_file(m).name), first_file(m));
    }
    assert_key_only_at_api(&server);
}

#[test]
fn dry_run_writes_nothing_and_lists_files_with_hashes() {
    let models = vec![
        model(501, "LORA", 64 * KIB),
        model(502, "Checkpoint", 128 * KIB),
    ];
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let fresh_out = sandbox.out.join("not-yet");
    let mut cmd = civitai_dl(&server.api_url(), &sandbox, FAST_RETRIES);
    cmd.args(["download", "501", "502", "--dry-run", "--json", "-o"])
        .arg(&fresh_out);
    let ran = run(cmd);
    ran.expect_code(0);
    assert!(!fresh_out.exists(), "--dry-run created the output folder");
    assert!(sandbox.all_files().is_empty(), "{:?}", sandbox.all_files());
    assert_eq!(server.stats().storage_requests(), 0);
    assert_eq!(server.stats().resolves(), 0);
    assert_plan_lists(&ran.json(), &models);
}

#[test]
fn info_json_lists_files_with_hashes() {
    let models = vec![model(511, "LORA", 64 * KIB), model(512, "LORA", 64 * KIB)];
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = info(&server, &sandbox);
    cmd.args(["511", "512", "--json"]);
    let ran = run(cmd);
    ran.expect_code(0);
    assert_plan_lists(&ran.json(), &models);
    assert!(sandbox.all_files().is_empty(), "{:?}", sandbox.all_files());
    assert_eq!(server.stats().storage_requests(), 0);
}

fn assert_plan_lists(plan: &Value, models: &[FakeModel]) {
    let entries = plan.as_array().unwrap_or_else(|| panic!("array: {plan:#}"));
    assert_eq!(entries.len(), models.len(), "{plan:#}");
    for m in models {
        let file = first_file(m);
        let entry = entries
            .iter()
            .find(|e| e["file_id"] == file.id)
            .unwrap_or_else(|| panic!("file {} not listed: {plan:#}", file.id));
        let sha = entry["sha256"].as_str().unwrap_or_default();
        assert!(
            sha.eq_ignore_ascii_case(&civitai_dl_fake::content_sha256(file.seed, file.size)),
            "{entry:#}"
        );
        assert_eq!(entry["size_bytes"], file.size, "{entry:#}");
    }
}

#[test]
fn unreachable_primary_host_falls_back() {
    let m = model(601, "LORA", 64 * KIB);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = civitai_dl("http://127.0.0.1:1", &sandbox, FAST_RETRIES);
    cmd.arg("--fallback-base-url")
        .arg(server.api_url())
        .args(["download", "601", "--json", "-o"])
        .arg(&sandbox.out);
    let ran = run(cmd);
    ran.expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
    let hosts = ran.json()["hosts"].clone();
    let port = server.api_url().rsplit(':').next().unwrap().to_owned();
    let served_by_fake = hosts
        .as_object()
        .unwrap_or_else(|| panic!("hosts: {hosts:#}"))
        .iter()
        .any(|(host, n)| host.contains(&port) && n.as_u64() > Some(0));
    assert!(served_by_fake, "hosts: {hosts:#}");
}

/// Runs `cmd` with its standard output closed before it prints anything (planning asks the API
/// first): its exit code and standard error.
fn run_into_a_closed_pipe(mut cmd: std::process::Command) -> (Option<i32>, String) {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn civitai-dl");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait for civitai-dl");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// Issue 11.5: `civitai-dl info … | head -1` panicked with "failed printing to stdout: Broken
// pipe" (exit 101). A closed pipe ends the output quietly, as ripgrep does.
#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    let models: Vec<FakeModel> = (1201..1206).map(|id| model(id, "LORA", 4 * KIB)).collect();
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = info(&server, &sandbox);
    cmd.args(models.iter().map(|m| m.id.to_string()));
    let (code, stderr) = run_into_a_closed_pipe(cmd);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// A closed pipe does not hide a failure: the exit code still says how the work went.
#[test]
fn a_closed_stdout_pipe_keeps_the_exit_code_of_a_failed_target() {
    let server = serve(vec![model(1207, "LORA", 4 * KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = info(&server, &sandbox);
    cmd.args(["1207", "999999"]);
    let (code, stderr) = run_into_a_closed_pipe(cmd);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("999999") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

// Issue 11.10: no shell completions and no man page. `completions <shell>` and `man` print them
// (clap_complete, clap_mangen), generated from the same definitions as --help.
#[test]
fn completions_and_a_man_page_are_printed_from_the_command_line_definitions() {
    let sandbox = Sandbox::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let mut cmd = civitai_dl("http://127.0.0.1:9", &sandbox, FAST_RETRIES);
        cmd.args(["completions", shell]);
        let ran = run(cmd);
        ran.expect_code(0);
        assert!(
            ran.stdout.contains("download") && ran.stdout.contains("--from-file"),
            "{shell}: {}",
            &ran.stdout[..ran.stdout.len().min(400)]
        );
    }
    let mut cmd = civitai_dl("http://127.0.0.1:9", &sandbox, FAST_RETRIES);
    cmd.arg("man");
    let ran = run(cmd);
    ran.expect_code(0);
    assert!(
        ran.stdout.starts_with(".ie") || ran.stdout.contains(".TH"),
        "{}",
        &ran.stdout[..200.min(ran.stdout.len())]
    );
    assert!(ran.stdout.contains("civitai\\-dl") || ran.stdout.contains("civitai-dl"));
    let mut cmd = civitai_dl("http://127.0.0.1:9", &sandbox, FAST_RETRIES);
    cmd.args(["completions", "tcsh"]);
    run(cmd).expect_code(2);
}

// Issue 11.10: `info` refused -o and --layout, so every path it showed was under `./` in the flat
// layout, not where the download would put the file.
#[test]
fn info_shows_the_paths_of_the_chosen_folder_and_layout() {
    let m = model(1208, "LORA", 4 * KIB);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = info(&server, &sandbox);
    cmd.args(["1208", "--json", "-o", "library", "--layout", "comfyui"]);
    let ran = run(cmd);
    ran.expect_code(0);
    let plan: Value = ran.json();
    let path = plan[0]["path"].as_str().unwrap_or_default().to_string();
    assert!(
        path.ends_with(&format!("library/models/loras/{}", first_file(&m).name)),
        "{path}"
    );
}

// Issue 11.10: `--images N --dry-run` did not list the previews it would fetch.
#[test]
fn a_plan_lists_the_previews_it_would_fetch() {
    let mut m = model(1209, "LORA", 4 * KIB);
    m.versions[0].images = 3;
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = info(&server, &sandbox);
    cmd.args(["1209", "--images", "2", "--json"]);
    let ran = run(cmd);
    ran.expect_code(0);
    let plan: Value = ran.json();
    let previews = plan[0]["previews"].as_array().cloned().unwrap_or_default();
    assert_eq!(previews.len(), 2, "{plan:#}");
    let stem = first_file(&m)
        .name
        .trim_end_matches(".safetensors")
        .to_string();
    assert!(
        previews[0]
            .as_str()
            .is_some_and(|p| p.contains(&format!("{stem}.preview."))),
        "{previews:?}"
    );
    let mut cmd = info(&server, &sandbox);
    cmd.args(["1209", "--images", "2"]);
    let ran = run(cmd);
    assert!(ran.stdout.contains(".preview."), "{}", ran.stdout);
}

// Issue 11.10: no examples in --help.
#[test]
fn help_ends_with_examples() {
    let sandbox = Sandbox::new();
    for command in ["download", "info"] {
        let mut cmd = civitai_dl("http://127.0.0.1:9", &sandbox, FAST_RETRIES);
        cmd.args([command, "--help"]);
        let ran = run(cmd);
        ran.expect_code(0);
        let examples = ran.stdout.rsplit("Examples:").next().unwrap_or_default();
        assert!(
            ran.stdout.contains("Examples:")
                && examples.contains(&format!("civitai-dl {command} ")),
            "{command}: {}",
            ran.stdout
        );
    }
}

// Issue 11.10: several defaults were missing from --help. Every option that has a default says
// it, the ones from the config file as `[default: …]` text.
#[test]
fn download_help_shows_every_default() {
    let sandbox = Sandbox::new();
    let mut cmd = civitai_dl("http://127.0.0.1:9", &sandbox, FAST_RETRIES);
    cmd.args(["download", "--help"]);
    let ran = run(cmd);
    ran.expect_code(0);
    // An option's block: its header line and the indented lines under it.
    let block = |flag: &str| -> String {
        let mut lines = ran.stdout.lines().skip_while(|l| {
            let header = l.trim_start();
            !(header.starts_with(&format!("{flag} ")) || header.contains(&format!(", {flag} ")))
        });
        let header = lines
            .next()
            .unwrap_or_else(|| panic!("{flag} is not in the help"));
        let body: Vec<&str> = lines
            .take_while(|l| l.is_empty() || l.starts_with("          "))
            .collect();
        format!("{header} {}", body.join(" "))
    };
    for flag in [
        "--output",
        "--layout",
        "--images",
        "--state-file",
        "--min-speed",
        "--min-speed-window",
        "--max-concurrent-api",
        "--max-concurrent-downloads",
        "--max-concurrent-images",
        "--segments",
        "--emergency-stop-file",
        "--report-interval",
        "--base-url",
        "--config",
        "--progress-interval",
        "--rate-limit",
        "--rate-burst",
        "--retry-delays-ms",
        "--connect-timeout",
        "--read-timeout",
    ] {
        let text = block(flag);
        assert!(
            text.contains("[default: "),
            "{flag} shows no default: {text}"
        );
    }
}
