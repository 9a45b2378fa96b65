//! Tests found missing by a mutation probe: one-line breakages of the engine that left the whole
//! suite green. Each test names the breakage it catches; together they pin down the resume hash
//! check, the key staying off the storage host on every path, the shared `Retry-After` pause, the
//! failsafe's hand-over to the sequential path, and 429s not counting as failures. The probe's
//! other findings are checked beside the tests they complete (resume, state, strategy, bench,
//! performance, regressions).

use std::time::Duration;

use civitai_dl_engine::plan::preview_path;
use civitai_dl_fake::Knobs;

use crate::support::{
    EXPERIMENTAL, KEY, SEGMENTS, Sandbox, Scenario, assert_key_only_at_api, assert_verified,
    cut_after, download, download_with_retries, first_file, low_threshold_config, model, models,
    range_start, ranges_of, run, segmented_download, serve,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The N of the failsafe's "finishing the remaining N item(s)" line, if it was logged.
fn remaining_after_switch(stderr: &str) -> Option<usize> {
    let (_, rest) = stderr.split_once("finishing the remaining ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Catches: the SHA-256 comparison skipped (or always passing) for a resumed transfer. A `.part`
/// left by a failed run has a byte flipped inside its prefix; the rerun resumes it, must see
/// the hash disagree, start over from byte 0 and end with the served bytes.
#[test]
fn a_resumed_part_with_a_corrupted_prefix_is_fetched_again_and_verified() {
    const CUT: u64 = 256 * KIB;
    let m = cut_after(1101, MIB, CUT, 2);
    let file = first_file(&m).clone();
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    // Two attempts, both cut: the run gives up with two cuts' worth in the `.part`.
    let mut cmd = download_with_retries(&server, &sandbox, "20");
    cmd.arg("1101");
    run(cmd).expect_code(1);
    let part = sandbox.out.join(format!("{}.part", file.name));
    let mut bytes = std::fs::read(&part).expect("the .part is kept");
    assert_eq!(bytes.len() as u64, 2 * CUT, "two cut attempts");
    assert!(
        sandbox
            .out
            .join(format!("{}.part.json", file.name))
            .is_file(),
        "its record is kept"
    );
    bytes[1000] ^= 0xFF;
    std::fs::write(&part, &bytes).expect("corrupt the .part");
    let first_run = ranges_of(&server, file.id).len();

    let mut cmd = download(&server, &sandbox);
    cmd.arg("1101");
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&file.name), &file);
    let rerun = ranges_of(&server, file.id).split_off(first_run);
    assert_eq!(
        rerun,
        [Some(format!("bytes={}-", 2 * CUT)), None],
        "the rerun resumes, sees the hash disagree, and starts over"
    );
    assert!(!part.exists());
}

/// Catches: the key sent on segment requests (and the size probe before them).
#[test]
fn the_key_stays_off_segment_requests() {
    let m = model(1111, "Checkpoint", 2 * MIB);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = segmented_download(&server, &sandbox, &m);
    cmd.args(["--api-key", KEY]);
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
    let ranges = ranges_of(&server, first_file(&m).id);
    assert_eq!(ranges.len(), 1 + SEGMENTS, "probe and segments: {ranges:?}");
    assert_key_only_at_api(&server);
}

/// Catches: the key sent on a resumed (`Range: bytes=N-`) request.
#[test]
fn the_key_stays_off_a_resumed_range_request() {
    const CUT: u64 = 128 * KIB;
    let m = cut_after(1112, 512 * KIB, CUT, 1);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["1112", "--api-key", KEY]);
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
    let ranges = ranges_of(&server, first_file(&m).id);
    assert_eq!(
        ranges
            .last()
            .cloned()
            .flatten()
            .as_deref()
            .and_then(range_start),
        Some(CUT),
        "resumed at the cut: {ranges:?}"
    );
    assert_key_only_at_api(&server);
}

/// Catches: the key sent on preview image requests.
#[test]
fn the_key_stays_off_preview_requests() {
    const IMAGES: usize = 2;
    let mut m = model(1113, "LORA", 64 * KIB);
    m.versions[0].images = IMAGES as u32;
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["1113", "--images", &IMAGES.to_string(), "--api-key", KEY]);
    run(cmd).expect_code(0);
    let model_path = sandbox.out.join(&first_file(&m).name);
    assert_verified(&model_path, first_file(&m));
    for n in 0..IMAGES {
        assert!(
            preview_path(&model_path, n, "jpeg").is_file(),
            "preview {n}"
        );
    }
    assert_key_only_at_api(&server);
}

/// Catches: the key sent on storage requests of the concurrent driver.
#[test]
fn the_key_stays_off_storage_under_concurrency() {
    let scenario = Scenario::new(
        models(1121, 4, 256 * KIB),
        Knobs {
            bandwidth: Some(MIB),
            ..Knobs::default()
        },
    );
    let cmd = scenario.download(&[
        EXPERIMENTAL,
        "--max-concurrent-downloads",
        "3",
        "--api-key",
        KEY,
    ]);
    run(cmd).expect_code(0);
    scenario.assert_all_verified();
    assert!(
        scenario.server.stats().max_concurrent_storage() >= 2,
        "the transfers overlapped"
    );
    assert_key_only_at_api(&scenario.server);
}

/// Catches: a key from `CIVITAI_API_KEY` reaching the storage host.
#[test]
fn a_key_from_the_environment_stays_off_storage() {
    let scenario = Scenario::new(models(1131, 1, 64 * KIB), Knobs::default());
    let mut cmd = scenario.download(&[]);
    cmd.env("CIVITAI_API_KEY", KEY);
    run(cmd).expect_code(0);
    scenario.assert_all_verified();
    assert_key_only_at_api(&scenario.server);
}

/// Catches: a key from the config file reaching the storage host.
#[test]
fn a_key_from_the_config_file_stays_off_storage() {
    let scenario = Scenario::new(models(1132, 1, 64 * KIB), Knobs::default());
    // The default location: `$XDG_CONFIG_HOME/civitai-dl/config.toml`.
    let dir = scenario.sandbox.home.join("civitai-dl");
    std::fs::create_dir_all(&dir).expect("config dir");
    std::fs::write(dir.join("config.toml"), format!("api_key = \"{KEY}\"\n")).expect("config");
    run(scenario.download(&[])).expect_code(0);
    scenario.assert_all_verified();
    assert_key_only_at_api(&scenario.server);
}

/// Catches: the `Retry-After` of a 429 pausing only the task that got it. The first API request
/// is answered 429 `Retry-After: 1` (after 200 ms, like every answer); from then on no task may
/// send anything until the second has passed. Requests that were already on their way when the
/// 429 arrived land within a few milliseconds of it, long before the quiet window checked here.
#[test]
fn a_retry_after_pauses_every_concurrent_task() {
    const LATENCY: Duration = Duration::from_millis(200);
    let scenario = Scenario::new(
        models(1141, 8, 16 * KIB),
        Knobs {
            api_latency: LATENCY,
            api_429_first: 1,
            retry_after_secs: 1,
            ..Knobs::default()
        },
    );
    let cmd = scenario.download(&[EXPERIMENTAL, "--max-concurrent-api", "3", "--json"]);
    let report = run(cmd).expect_code(0).json();
    assert_eq!(report["mode"], "concurrent", "{report:#}");
    scenario.assert_all_verified();

    let mut times = scenario.server.stats().api_request_times();
    times.sort();
    let throttled = times[0];
    // The 429 reaches the client at `throttled + LATENCY`; the pause lasts until one second
    // after that. The window leaves 300 ms on either side for a loaded machine.
    let quiet_from = throttled + LATENCY + Duration::from_millis(300);
    let quiet_until = throttled + LATENCY + Duration::from_millis(900);
    let during: Vec<_> = times
        .iter()
        .filter(|t| (quiet_from..quiet_until).contains(*t))
        .collect();
    assert!(
        during.is_empty(),
        "requests sent during the Retry-After pause: {during:?} (429 at {throttled:?}, all: \
         {times:?})"
    );
}

/// Catches: the concurrent driver ignoring a failsafe trip (or the hand-over keeping the
/// configured limits). The first three API answers are 503s, the three planning calls in flight,
/// so the failsafe trips before any file starts: every file must then go through the sequential
/// path, one plain GET at a time, although segments are configured and the files are above the
/// threshold.
#[test]
fn after_a_failsafe_trip_every_file_goes_one_connection_at_a_time() {
    let models = models(1151, 6, MIB);
    let server = serve(
        models.clone(),
        Knobs {
            api_503_first: 3,
            retry_after_secs: 0,
            bandwidth: Some(4 * MIB),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(models.iter().map(|m| m.id.to_string()))
        .args([
            EXPERIMENTAL,
            "--max-concurrent-api",
            "3",
            "--max-concurrent-downloads",
        ])
        .args([
            "3",
            "--segments",
            &SEGMENTS.to_string(),
            "--json",
            "--config",
        ])
        .arg(low_threshold_config(&sandbox));
    let ran = run(cmd);
    let report = ran.expect_code(0).json();
    for m in &models {
        assert_verified(&sandbox.out.join(&first_file(m).name), first_file(m));
    }
    assert!(
        report["failsafe"].as_str().is_some_and(|r| !r.is_empty()),
        "{report:#}"
    );
    assert_eq!(
        remaining_after_switch(&ran.stderr),
        Some(models.len()),
        "every target is left to the sequential path: {}",
        ran.stderr
    );
    assert_eq!(
        server.stats().max_concurrent_storage(),
        1,
        "one connection at a time after the trip"
    );
    for m in &models {
        let ranges = ranges_of(&server, first_file(m).id);
        assert_eq!(ranges, [None], "one plain GET, no segments: {ranges:?}");
    }
}

/// Catches: 429s counted as failures by the failsafe. Three 429s in a row would trip it; they
/// are the server pacing the client, which the limiter handles, so the run stays concurrent.
#[test]
fn a_burst_of_429s_does_not_trip_the_failsafe() {
    let scenario = Scenario::new(
        models(1161, 6, 64 * KIB),
        Knobs {
            api_429_first: 3,
            retry_after_secs: 0,
            ..Knobs::default()
        },
    );
    let cmd = scenario.download(&[EXPERIMENTAL, "--max-concurrent-api", "3", "--json"]);
    let ran = run(cmd);
    let report = ran.expect_code(0).json();
    scenario.assert_all_verified();
    assert!(report["failsafe"].is_null(), "{report:#}");
    assert_eq!(report["metrics"]["failsafe_switches"], 0, "{report:#}");
    assert_eq!(remaining_after_switch(&ran.stderr), None, "{}", ran.stderr);
    assert!(
        scenario.server.stats().api_requests() >= 3 + 1 + 6,
        "the 429s were answered and retried, then one batch of metadata and six resolves"
    );
}
