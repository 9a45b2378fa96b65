//! Failures and their exit codes: each says what went wrong and what to do, on one line.

use civitai_dl_fake::{Access, FakeModel, Knobs};

use crate::support::{
    KEY, Sandbox, assert_key_only_at_api, assert_verified, download, first_file, model, run, serve,
};

const KIB: u64 = 1024;

fn gated(id: u64, access: Access) -> FakeModel {
    let mut m = model(id, "LORA", 64 * KIB);
    m.versions[0].access = access;
    m
}

/// Runs `download <id>` (plus `extra`) against a server holding only `m`; returns the run and
/// asserts that no model file was written.
fn download_refused(m: FakeModel, extra: &[&str]) -> crate::support::Ran {
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg(m.id.to_string()).args(extra);
    let ran = run(cmd);
    assert!(
        !sandbox.out.join(&first_file(&m).name).exists(),
        "a refused file was written"
    );
    assert_eq!(
        server.stats().storage_requests(),
        0,
        "storage was contacted"
    );
    ran
}

#[test]
fn unknown_model_id_fails_with_not_found() {
    let server = serve(vec![model(101, "LORA", 64 * KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("999999");
    let ran = run(cmd);
    ran.expect_code(1);
    assert!(ran.stderr.contains("not found"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("999999"),
        "names the target: {}",
        ran.stderr
    );
}

#[test]
fn login_required_without_a_key_asks_for_one() {
    let ran = download_refused(gated(102, Access::LoginRequired), &[]);
    ran.expect_code(1);
    assert!(ran.stderr.contains("--api-key"), "{}", ran.stderr);
    assert!(ran.stderr.contains("CIVITAI_API_KEY"), "{}", ran.stderr);
}

#[test]
fn login_required_with_a_valid_key_downloads() {
    let m = gated(103, Access::LoginRequired);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["103", "--api-key", KEY]);
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
    assert_key_only_at_api(&server);
}

#[test]
fn login_required_with_the_key_from_the_environment_downloads() {
    let m = gated(104, Access::LoginRequired);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("104").env("CIVITAI_TOKEN", KEY);
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
    assert_key_only_at_api(&server);
}

#[test]
fn invalid_key_is_rejected_before_any_download() {
    let server = serve(vec![model(105, "LORA", 64 * KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["105", "--api-key", "not-the-key"]);
    let ran = run(cmd);
    ran.expect_code(2);
    assert!(ran.stderr.contains("API key rejected"), "{}", ran.stderr);
    assert_eq!(ran.stderr_lines().len(), 1, "one line: {}", ran.stderr);
    assert_eq!(server.stats().resolves(), 0);
    assert_eq!(server.stats().storage_requests(), 0);
    assert!(!ran.stderr.contains("not-the-key"), "the key is echoed");
}

#[test]
fn early_access_names_the_deadline() {
    const DEADLINE: &str = "2031-05-06T07:08:09.000Z";
    let ran = download_refused(
        gated(
            106,
            Access::EarlyAccess {
                deadline: DEADLINE.to_owned(),
            },
        ),
        &[],
    );
    ran.expect_code(1);
    assert!(ran.stderr.contains("Early Access"), "{}", ran.stderr);
    assert!(ran.stderr.contains("2031-05-06"), "{}", ran.stderr);
}

#[test]
fn downloads_disabled_says_so() {
    let ran = download_refused(gated(107, Access::DownloadsDisabled), &["--api-key", KEY]);
    ran.expect_code(1);
    assert!(ran.stderr.contains("disabled downloads"), "{}", ran.stderr);
}

#[test]
fn archived_model_says_so() {
    let m = FakeModel {
        mode: Some("Archived".to_owned()),
        ..model(108, "LORA", 64 * KIB)
    };
    let ran = download_refused(m, &[]);
    ran.expect_code(1);
    assert!(ran.stderr.contains("archived"), "{}", ran.stderr);
}

#[test]
fn bad_target_text_is_a_one_line_usage_error() {
    let server = serve(vec![model(109, "LORA", 64 * KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("definitely not a model");
    let ran = run(cmd);
    ran.expect_code(2);
    let lines = ran.stderr_lines();
    assert_eq!(lines.len(), 1, "one line: {}", ran.stderr);
    assert!(lines[0].contains("definitely not a model"), "{}", lines[0]);
    assert!(
        lines[0].contains("e.g.") || lines[0].contains("examples"),
        "{}",
        lines[0]
    );
    assert_eq!(server.stats().api_requests(), 0);
}

#[test]
fn unknown_config_key_names_the_key_and_the_file() {
    let server = serve(vec![model(110, "LORA", 64 * KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let config = sandbox.home.join("my-settings.toml");
    std::fs::write(&config, "bogus = 1\n").unwrap();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("110").arg("--config").arg(&config);
    let ran = run(cmd);
    ran.expect_code(2);
    assert!(ran.stderr.contains("bogus"), "{}", ran.stderr);
    assert!(ran.stderr.contains("my-settings.toml"), "{}", ran.stderr);
    assert!(
        ran.stderr.trim_start().starts_with("error:"),
        "{}",
        ran.stderr
    );
    assert_eq!(server.stats().api_requests(), 0);
}

#[test]
fn config_in_the_user_config_dir_is_read() {
    let server = serve(vec![model(111, "LORA", 64 * KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let dir = sandbox.home.join("civitai-dl");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), "[network]\nbogus_timeout = 3\n").unwrap();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("111");
    let ran = run(cmd);
    ran.expect_code(2);
    assert!(ran.stderr.contains("bogus_timeout"), "{}", ran.stderr);
}

#[test]
fn one_failed_target_does_not_stop_the_others() {
    let models = vec![model(121, "LORA", 64 * KIB), model(123, "LORA", 64 * KIB)];
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["121", "122", "123", "--json"]);
    let ran = run(cmd);
    ran.expect_code(1);
    for m in &models {
        assert_verified(&sandbox.out.join(&first_file(m).name), first_file(m));
    }
    let report = ran.json();
    let failed = report["failed_targets"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert!(
        failed[0]["target"].as_str().unwrap().contains("122"),
        "{report:#}"
    );
}

// Issue 11.6: `--user nobody` ended with "0 downloaded, 0 already present, 0 failed" and exit 0,
// so a typo in a creator's name looked like success.
#[test]
fn a_creator_with_no_models_fails_and_says_so() {
    let server = serve(vec![model(1301, "LORA", 4 * KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["--user", "nobody"]);
    let ran = run(cmd);
    ran.expect_code(1);
    assert!(
        ran.stderr.contains("nobody") && ran.stderr.contains("no models"),
        "{}",
        ran.stderr
    );
}

// Issue 11.6: an empty list file was answered with "give … --from-file FILE", though one was
// given; a list saved with a byte-order mark failed on an invisible character; `--from-file -`
// did not read standard input.
#[test]
fn list_files_empty_with_a_byte_order_mark_or_on_standard_input() {
    let m = model(1302, "LORA", 4 * KIB);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let list = sandbox.root().join("list.txt");

    std::fs::write(&list, "# nothing yet\n\n").expect("write the list");
    let mut cmd = download(&server, &sandbox);
    cmd.arg("--from-file").arg(&list);
    let ran = run(cmd);
    ran.expect_code(2);
    assert!(
        ran.stderr.contains("list.txt") && ran.stderr.contains("no targets"),
        "the empty file is named: {}",
        ran.stderr
    );

    std::fs::write(&list, "\u{feff}1302\r\n").expect("write the list");
    let mut cmd = download(&server, &sandbox);
    cmd.arg("--from-file").arg(&list);
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));

    std::fs::remove_file(sandbox.out.join(&first_file(&m).name)).expect("remove");
    let mut cmd = download(&server, &sandbox);
    cmd.args(["--from-file", "-"])
        .stdin(std::process::Stdio::piped());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn civitai-dl");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"1302\n").expect("write stdin");
    }
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
}

// Issue 11.8: unbounded settings were accepted (`--segments 100000` sent about 100,000 range
// requests), and `--size medium` got past the parser. Every numeric setting has a range, named in
// the message, on the command line and in the config file alike.
#[test]
fn settings_out_of_range_are_refused_with_the_range() {
    let server = serve(vec![model(1303, "LORA", 4 * KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let cases: [(&[&str], &str); 5] = [
        (&["--segments", "100000"], "between 1 and 16"),
        (&["--segments", "0"], "between 1 and 16"),
        (&["--read-timeout", "0"], "between 1 and 3600"),
        (
            &["--max-concurrent-downloads", "100000"],
            "between 1 and 64",
        ),
        (&["--size", "medium"], "pruned"),
    ];
    for (args, expected) in cases {
        let mut cmd = download(&server, &sandbox);
        cmd.arg("1303").args(args);
        let ran = run(cmd);
        ran.expect_code(2);
        assert!(ran.stderr.contains(expected), "{args:?}: {}", ran.stderr);
    }
    let config = sandbox.root().join("bad.toml");
    std::fs::write(&config, "[network]\nrate_limit = -1\n").expect("write config");
    let mut cmd = download(&server, &sandbox);
    cmd.arg("1303").arg("--config").arg(&config);
    let ran = run(cmd);
    ran.expect_code(2);
    assert!(
        ran.stderr.contains("bad.toml") && ran.stderr.contains("network.rate_limit"),
        "the file and the key are named: {}",
        ran.stderr
    );
    assert_eq!(server.stats().storage_requests(), 0);
}

// Issue 11.9: a bad output directory gave exit 1 or 2 for the same problem, and `-o afile` said
// "File exists (os error 17)". It is a usage error (exit 2) that says what is wrong.
#[test]
fn an_output_path_that_is_a_file_or_cannot_be_created_is_a_usage_error() {
    let server = serve(vec![model(1304, "LORA", 4 * KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let afile = sandbox.root().join("afile");
    std::fs::write(&afile, b"not a folder").expect("write");
    for out in [afile.clone(), afile.join("below")] {
        let mut cmd = crate::support::civitai_dl(&server.api_url(), &sandbox, "20");
        cmd.args(["download", "1304", "-o"]).arg(&out);
        let ran = run(cmd);
        ran.expect_code(2);
        assert!(
            ran.stderr.contains("not a directory") && !ran.stderr.contains("os error 17"),
            "{}: {}",
            out.display(),
            ran.stderr
        );
    }
    assert_eq!(server.stats().storage_requests(), 0);
}

// Issue 11.9: a `--metrics-json` file that could not be written was logged and the run exited
// 0, so a dashboard fed by it went stale unnoticed.
#[test]
fn a_metrics_file_that_cannot_be_written_fails_the_run() {
    let m = model(1305, "LORA", 4 * KIB);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let blocked = sandbox.root().join("afile");
    std::fs::write(&blocked, b"a file where a folder should be").expect("write");
    let mut cmd = download(&server, &sandbox);
    cmd.arg("1305")
        .arg("--metrics-json")
        .arg(blocked.join("metrics.json"));
    let ran = run(cmd);
    ran.expect_code(1);
    assert!(ran.stderr.contains("metrics.json"), "{}", ran.stderr);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
}
