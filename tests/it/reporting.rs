//! What a run tells a user who is not watching a terminal: retry lines, `-v`/`-vv` request
//! lines, progress lines on long files and long lists, and `--json` whatever the paths.

use civitai_dl_fake::Knobs;

use crate::support::{
    FAST_RETRIES, KEY, Sandbox, Scenario, civitai_dl, cut_after, download, model, run, serve,
    slow_list,
};

const MIB: u64 = 1024 * 1024;

// Issue 11.7: the retry line read `…: error; retry 1 in 5.0s`, which said neither which attempt
// of how many came next nor in words what was retried.
#[test]
fn a_retry_says_what_when_which_attempt_and_why() {
    let scenario = Scenario::new(
        vec![cut_after(2101, 64 * 1024, 1024, 1)],
        Knobs {
            api_503_first: 1,
            ..Knobs::default()
        },
    );
    let ran = run(scenario.download(&[]));
    ran.expect_code(0);
    let retries: Vec<&str> = ran
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("retrying"))
        .collect();
    let api = retries
        .iter()
        .find(|l| l.contains("retrying GET 127.0.0.1:"))
        .unwrap_or_else(|| panic!("no API retry line: {}", ran.stderr));
    assert!(api.contains("/api/v1/models/2101 in "), "{api}");
    assert!(
        api.contains("(attempt 2 of 4): Civitai server error 503"),
        "{api}"
    );
    let file = retries
        .iter()
        .find(|l| l.contains("file model_2101.safetensors in "))
        .unwrap_or_else(|| panic!("no file retry line: {}", ran.stderr));
    assert!(file.contains(" ms (attempt 2 of 4): transfer"), "{file}");
}

// Issue 11.2: `-v`/`-vv` added nothing about requests. They show each request (method, host,
// path, status, bytes, time), and never the key or a signed URL's query.
#[test]
fn verbose_shows_requests_but_never_the_key_or_a_signature() {
    let scenario = Scenario::new(vec![model(2102, "LORA", 256 * 1024)], Knobs::default());
    let elsewhere = Sandbox::new();
    let mut quiet = download(&scenario.server, &elsewhere);
    quiet.args(["2102", "--api-key", KEY]);
    let plain = run(quiet);
    plain.expect_code(0);
    assert!(
        !plain.stderr.contains("GET "),
        "no request lines by default: {}",
        plain.stderr
    );

    let ran = run(scenario.download(&["--api-key", KEY, "-vv"]));
    ran.expect_code(0);
    let lines = ran.stderr_lines();
    let api = lines
        .iter()
        .find(|l| l.contains("GET 127.0.0.1:") && l.contains("/api/v1/models/2102 -> 200, "))
        .unwrap_or_else(|| panic!("no API request line: {}", ran.stderr));
    assert!(api.contains(" B in ") && api.ends_with(" ms"), "{api}");
    let storage_host = scenario
        .server
        .storage_url()
        .trim_start_matches("http://")
        .to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("GET {storage_host}/file/")) && l.contains("-> 200")),
        "no storage request line: {}",
        ran.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("GET {storage_host}/file/"))
                && l.contains(": body 262144 B in ")),
        "no line for the bytes a storage answer brought: {}",
        ran.stderr
    );
    assert!(
        lines.iter().any(|l| l.contains("content-type: ")),
        "-vv shows the headers behind decisions: {}",
        ran.stderr
    );
    for secret in [KEY, "sig=", "expires="] {
        assert!(
            !ran.stderr.contains(secret) && !ran.stdout.contains(secret),
            "{secret} leaked into the output:\n{}",
            ran.stderr
        );
    }
}

// Issue 11.2: a log showed nothing while a long file transferred. Without bars, a progress line
// per interval says how far it is, how fast, and how long yet.
#[test]
fn a_long_file_logs_progress_lines_without_a_terminal() {
    let scenario = Scenario::new(
        vec![model(2103, "Checkpoint", 3 * MIB)],
        Knobs {
            bandwidth: Some(MIB),
            ..Knobs::default()
        },
    );
    let ran = run(scenario.download(&["--progress-interval", "1"]));
    ran.expect_code(0);
    let lines: Vec<&str> = ran
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("model_2103.safetensors: "))
        .collect();
    assert!(!lines.is_empty(), "no progress line: {}", ran.stderr);
    let line = lines[0];
    assert!(line.contains(" of 3.00 MiB ("), "{line}");
    assert!(
        line.contains(" %), ") && line.contains("/s, ETA "),
        "{line}"
    );
    assert!(
        ran.stderr.contains("downloaded model_2103.safetensors"),
        "{}",
        ran.stderr
    );
}

// Issue 11.1: planning a long list printed nothing until the end. A log says how many targets
// are to be planned, where planning stands each interval, and when it is done.
#[test]
fn a_long_list_logs_where_planning_stands() {
    let (server, sandbox, list) = slow_list(2200);
    let mut cmd = download(&server, &sandbox);
    cmd.arg("--from-file")
        .arg(&list)
        .args(["--dry-run", "--progress-interval", "1"]);
    let ran = run(cmd);
    ran.expect_code(0);
    let lines = ran.stderr_lines();
    assert!(
        lines.iter().any(|l| l.ends_with("planning 120 targets")),
        "{}",
        ran.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("planning ") && l.ends_with("/120 targets")),
        "a line while planning: {}",
        ran.stderr
    );
    assert!(
        lines.iter().any(|l| l.contains("planned 120 targets in ")),
        "{}",
        ran.stderr
    );
}

// Issue 11.9: `--json` with an output folder whose name is not UTF-8 printed no JSON at all.
#[cfg(unix)]
#[test]
fn json_survives_a_path_that_is_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let server = serve(vec![model(2104, "LORA", 4096)], Knobs::default());
    let sandbox = Sandbox::new();
    let out = sandbox.root().join(OsStr::from_bytes(b"caf\xe9"));
    let mut cmd = civitai_dl(&server.api_url(), &sandbox, FAST_RETRIES);
    cmd.args(["download", "2104", "--json", "-o"]).arg(&out);
    let ran = run(cmd);
    ran.expect_code(0);
    let json = ran.json();
    let file = &json["files"][0];
    let path = file["path"].as_str().expect("a path string");
    assert!(path.contains("caf\u{fffd}"), "{path}");
    let bytes: Vec<u8> = file["path_bytes"]
        .as_array()
        .expect("the exact bytes beside the lossy string")
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(
        OsStr::from_bytes(&bytes),
        out.join("model_2104.safetensors")
    );
    assert!(out.join("model_2104.safetensors").is_file());
}

// Regression: a file whose first attempt was cut part-way said "N kept from an earlier run"
// for the bytes that attempt had received in this very run, and left them out of its speed.
#[test]
fn bytes_an_earlier_attempt_of_this_run_received_count_as_received_in_this_run() {
    let scenario = Scenario::new(
        vec![cut_after(2106, 256 * 1024, 128 * 1024, 1)],
        Knobs::default(),
    );
    let ran = run(scenario.download(&[]));
    ran.expect_code(0);
    let saved = ran
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("downloaded model_2106.safetensors"))
        .unwrap_or_else(|| panic!("no saved line: {}", ran.stderr))
        .to_owned();
    assert!(
        ran.stderr.contains("retrying model 2106"),
        "the first attempt was cut: {}",
        ran.stderr
    );
    assert!(!saved.contains("kept from an earlier run"), "{saved}");
}
