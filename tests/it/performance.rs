//! Experimental performance (issue 3) end to end: the concurrency limits hold, the rate limit
//! holds whatever the concurrency, `--force-sync-mode` and plain runs stay on one connection, the
//! failsafe hands a faulty run to the sequential path without losing or repeating a file,
//! segmented downloads survive resets, refusals and kills, the emergency stop file stops a run
//! that a rerun then finishes, and previews are fetched in a bounded pool.
//!
//! The fake server's counters are the witnesses: open connections per origin, API arrival times
//! and the Range header of every storage GET.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use civitai_dl_engine::fetch::{Segment, split};
use civitai_dl_engine::plan::preview_path;
use civitai_dl_fake::{FakeCivitai, FakeModel, FileFaults, Knobs};
use serde_json::Value;

use crate::support::{
    EXPERIMENTAL, FAST_RETRIES, SEGMENTS, Sandbox, Scenario, assert_verified, cut_after, download,
    first_file, len_or_zero, model, models, poll_until, range_start, ranges_of, run,
    segmented_download, segmented_download_with_retries, serve, wait_with_timeout, with_faults,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// API answers `latency_ms` late, storage at 1 MiB/s per connection: slow enough that work in
/// flight overlaps observably.
fn throttled(latency_ms: u64) -> Knobs {
    Knobs {
        api_latency: Duration::from_millis(latency_ms),
        bandwidth: Some(MIB),
        ..Knobs::default()
    }
}

/// The models' ids as download targets.
fn targets(models: &[FakeModel]) -> Vec<String> {
    models.iter().map(|m| m.id.to_string()).collect()
}

fn assert_all_verified(sandbox: &Sandbox, models: &[FakeModel]) {
    for m in models {
        let file = first_file(m);
        assert_verified(&sandbox.out.join(&file.name), file);
    }
}

/// `cmd` with other values for the `--rate-limit` and `--rate-burst` it already carries (clap
/// refuses the flags twice, so they are replaced rather than appended).
fn with_rate(cmd: &Command, rate: &str, burst: &str) -> Command {
    let mut args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    for i in 1..args.len() {
        if args[i - 1] == "--rate-limit" {
            args[i] = rate.into();
        } else if args[i - 1] == "--rate-burst" {
            args[i] = burst.into();
        }
    }
    let mut rebuilt = Command::new(cmd.get_program());
    rebuilt.args(args);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => rebuilt.env(key, value),
            None => rebuilt.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        rebuilt.current_dir(dir);
    }
    rebuilt
}

/// The most requests whose arrival falls within any `window` starting at an arrival.
fn busiest_window(times: &[Duration], window: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            sorted[i..]
                .iter()
                .take_while(|&&t| t < start + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Stderr lines that are the failsafe's warning (not the summary's mention of it).
fn failsafe_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("failsafe"))
        .collect()
}

/// The start offsets of ranged GETs (the `bytes=0-0` size probe excluded), sorted.
fn segment_starts(ranges: &[Option<String>]) -> Vec<u64> {
    let mut starts: Vec<u64> = ranges
        .iter()
        .flatten()
        .filter(|r| r.as_str() != "bytes=0-0")
        .filter_map(|r| range_start(r))
        .collect();
    starts.sort_unstable();
    starts
}

/// A fake serving `m` at `bandwidth` bytes/s per connection.
fn capped(m: &FakeModel, bandwidth: u64) -> FakeCivitai {
    serve(
        vec![m.clone()],
        Knobs {
            bandwidth: Some(bandwidth),
            ..Knobs::default()
        },
    )
}

/// Run `cmd` and kill it (as kill -9 would) once the segment record of `dest` satisfies
/// `recorded` or 30 s passed; whether it did.
fn kill_when(mut cmd: Command, dest: &Path, recorded: impl Fn(&[Segment]) -> bool) -> bool {
    let mut child = cmd.spawn().expect("spawn civitai-dl");
    let seen = poll_until(Duration::from_secs(30), || {
        recorded_segments(dest).is_some_and(|s| recorded(&s))
    });
    child.kill().expect("kill civitai-dl");
    child.wait().expect("reap civitai-dl");
    seen
}

/// The segment progress recorded beside a `.part`, if any has been recorded yet.
fn recorded_segments(dest: &Path) -> Option<Vec<Segment>> {
    let meta_path =
        dest.with_file_name(format!("{}.part.json", dest.file_name()?.to_string_lossy()));
    let meta: Value = serde_json::from_slice(&std::fs::read(meta_path).ok()?).ok()?;
    serde_json::from_value(meta.get("segments")?.clone()).ok()
}

#[test]
fn concurrent_run_respects_download_and_api_limits() {
    let scenario = Scenario::new(models(101, 12, 256 * KIB), throttled(50));
    let cmd = scenario.download(&[
        EXPERIMENTAL,
        "--max-concurrent-downloads",
        "3",
        "--max-concurrent-api",
        "2",
        "--json",
    ]);
    let report = run(cmd).expect_code(0).json();
    assert_eq!(report["mode"], "concurrent", "{report:#}");
    scenario.assert_all_verified();
    let stats = scenario.server.stats();
    let storage = stats.max_concurrent_storage();
    assert!(
        (2..=3).contains(&storage),
        "between 2 (it ran concurrently) and 3 (the limit) transfers at once, saw {storage}"
    );
    assert!(
        stats.max_concurrent_api() <= 2,
        "at most 2 API calls in flight, saw {}",
        stats.max_concurrent_api()
    );
}

#[test]
fn force_sync_mode_wins_over_the_experimental_switch_and_its_limits() {
    let scenario = Scenario::new(models(201, 4, 128 * KIB), throttled(20));
    let ran = run(scenario.download(&[
        EXPERIMENTAL,
        "--force-sync-mode",
        "--max-concurrent-downloads",
        "8",
        "--max-concurrent-api",
        "8",
        "--json",
    ]));
    let report = ran.expect_code(0).json();
    assert_eq!(report["mode"], "sequential", "{report:#}");
    scenario.assert_all_verified();
    assert_eq!(scenario.server.stats().max_concurrent_storage(), 1);
    assert_eq!(scenario.server.stats().max_concurrent_api(), 1);
    for flag in ["--max-concurrent-downloads", "--max-concurrent-api"] {
        let warning = format!("{flag} is ignored: --force-sync-mode");
        assert!(
            ran.stderr.contains(&warning),
            "expected '{warning}' in:\n{}",
            ran.stderr
        );
    }
}

#[test]
fn a_concurrency_flag_without_the_switch_is_ignored_and_the_run_stays_sequential() {
    let scenario = Scenario::new(models(211, 4, 128 * KIB), throttled(20));
    let ran = run(scenario.download(&["--max-concurrent-downloads", "8", "--json"]));
    let report = ran.expect_code(0).json();
    assert_eq!(report["mode"], "sequential", "{report:#}");
    scenario.assert_all_verified();
    assert_eq!(scenario.server.stats().max_concurrent_storage(), 1);
    assert_eq!(scenario.server.stats().max_concurrent_api(), 1);
    assert!(
        ran.stderr
            .contains("--max-concurrent-downloads is ignored without --enable-experimental"),
        "{}",
        ran.stderr
    );
}

#[test]
fn rate_limit_holds_under_concurrency() {
    const RATE: f64 = 10.0;
    let models = models(301, 30, 4 * KIB);
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = with_rate(&download(&server, &sandbox), "10", "1");
    cmd.args(targets(&models)).args([
        EXPERIMENTAL,
        "--max-concurrent-api",
        "8",
        "--max-concurrent-downloads",
        "8",
    ]);
    let started = Instant::now();
    run(cmd).expect_code(0);
    let wall = started.elapsed();
    assert_all_verified(&sandbox, &models);

    let times = server.stats().api_request_times();
    let requests = times.len();
    assert!(
        requests >= 31,
        "one batch of metadata for the 30 models and 30 resolves: {requests}"
    );
    // Burst 1 lets one request through early; 50 ms absorb arrival jitter on a loaded machine.
    let busiest = busiest_window(&times, Duration::from_millis(950));
    assert!(
        busiest <= RATE as usize + 1,
        "{busiest} requests within one second at --rate-limit 10: {times:?}"
    );
    let least = Duration::from_secs_f64((requests - 1) as f64 / RATE);
    let span = times.iter().max().copied().unwrap_or_default()
        - times.iter().min().copied().unwrap_or_default();
    assert!(
        span >= least.mul_f64(0.95),
        "{requests} requests arrived within {span:?}, less than {least:?}"
    );
    assert!(wall >= least, "the run took {wall:?}, less than {least:?}");
}

#[test]
fn failsafe_switches_to_sequential_under_an_error_burst_and_finishes_everything() {
    const CUT: u64 = 128 * KIB;
    let models: Vec<FakeModel> = (401..413)
        .map(|id| cut_after(id, 512 * KIB, CUT, 1))
        .collect();
    let server = serve(
        models.clone(),
        Knobs {
            bandwidth: Some(2 * MIB),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(targets(&models)).args([EXPERIMENTAL, "--json"]);
    let ran = run(cmd);
    let report = ran.expect_code(0).json();
    assert_all_verified(&sandbox, &models);

    let reason = report["failsafe"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "the failsafe tripped: {report:#}");
    assert_eq!(report["metrics"]["failsafe_switches"], 1, "{report:#}");
    let warnings = failsafe_warnings(&ran.stderr);
    assert_eq!(
        warnings.len(),
        1,
        "one failsafe warning: {warnings:?}\n{}",
        ran.stderr
    );
    assert!(warnings[0].contains(reason), "{warnings:?} vs {reason}");

    for m in &models {
        let file = first_file(m);
        let ranges = ranges_of(&server, file.id);
        assert_eq!(
            ranges.len(),
            2,
            "{}: one cut attempt and one resume, nothing fetched twice: {ranges:?}",
            file.name
        );
        assert_eq!(ranges[0], None, "{}: {ranges:?}", file.name);
        assert_eq!(
            ranges[1].as_deref().and_then(range_start),
            Some(CUT),
            "{}: the second GET continues at the cut: {ranges:?}",
            file.name
        );
    }
}

#[test]
fn segmented_download_uses_four_ranges_and_verifies() {
    let m = model(501, "Checkpoint", 6 * MIB);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    run(segmented_download(&server, &sandbox, &m)).expect_code(0);
    let file = first_file(&m);
    assert_verified(&sandbox.out.join(&file.name), file);

    let ranges = ranges_of(&server, file.id);
    assert_eq!(
        ranges.first().cloned().flatten().as_deref(),
        Some("bytes=0-0"),
        "a one-byte probe learns the size first: {ranges:?}"
    );
    assert_eq!(ranges.len(), 1 + SEGMENTS, "{ranges:?}");
    let expected: Vec<u64> = split(file.size, SEGMENTS).iter().map(|s| s.start).collect();
    assert_eq!(segment_starts(&ranges), expected, "{ranges:?}");
}

#[test]
fn segmented_download_survives_a_reset_in_one_segment() {
    const CUT: u64 = 256 * KIB;
    // Attempt 1 is the size probe, so attempt 2 is the first segment to arrive.
    let m = cut_after(502, 6 * MIB, CUT, 2);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    run(segmented_download(&server, &sandbox, &m)).expect_code(0);
    let file = first_file(&m);
    assert_verified(&sandbox.out.join(&file.name), file);

    let ranges = ranges_of(&server, file.id);
    assert_eq!(
        ranges.len(),
        1 + SEGMENTS + 1,
        "probe, four segments, one retry: {ranges:?}"
    );
    let retry = ranges
        .last()
        .cloned()
        .flatten()
        .as_deref()
        .and_then(range_start);
    let segment_starts: Vec<u64> = split(file.size, SEGMENTS).iter().map(|s| s.start).collect();
    assert!(
        retry.is_some_and(|r| segment_starts.iter().any(|s| s + CUT == r)),
        "the retry continues its own segment where it was cut: {ranges:?}"
    );
}

#[test]
fn segmented_download_falls_back_to_one_stream_when_ranges_are_refused() {
    let m = model(503, "Checkpoint", 6 * MIB);
    let server = serve(
        vec![m.clone()],
        Knobs {
            storage_refuses_ranges_when_concurrent: true,
            // Slow enough that the parallel GETs overlap however loaded the machine is (at full
            // speed one could end before the next arrived, and nothing would be refused).
            bandwidth: Some(2 * MIB),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let ran = run(segmented_download(&server, &sandbox, &m));
    ran.expect_code(0);
    let file = first_file(&m);
    assert_verified(&sandbox.out.join(&file.name), file);
    assert!(
        ran.stderr.contains("does not serve parallel ranges"),
        "{}",
        ran.stderr
    );
    let ranges = ranges_of(&server, file.id);
    // The probe, the parallel attempt, then each unfinished segment once over one connection.
    assert!(
        ranges.len() <= 1 + 2 * SEGMENTS,
        "no retry storm against a host refusing ranges: {ranges:?}"
    );
}

#[test]
fn killed_segmented_download_continues_its_segments() {
    // 6 MiB segments: each records progress after 4 MiB (about 2.7 s at this pace), long
    // before it ends, so the kill lands while every segment is half done.
    let m = model(504, "Checkpoint", 24 * MIB);
    let server = capped(&m, 3 * MIB / 2);
    let sandbox = Sandbox::new();
    let file = first_file(&m);
    let dest = sandbox.out.join(&file.name);
    let mut cmd = segmented_download(&server, &sandbox, &m);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let progressed = kill_when(cmd, &dest, |s| s.iter().any(|s| s.done > 0));
    assert!(progressed, "no segment progress recorded within 30 s");
    let recorded = recorded_segments(&dest).expect("segment record kept");
    let first_run_gets = ranges_of(&server, file.id).len();

    server.set_knobs(Knobs::default());
    run(segmented_download(&server, &sandbox, &m)).expect_code(0);
    assert_verified(&dest, file);

    let rerun = ranges_of(&server, file.id).split_off(first_run_gets);
    let expected: Vec<u64> = recorded
        .iter()
        .filter(|s| s.done < s.end - s.start)
        .map(|s| s.start + s.done)
        .collect();
    assert_eq!(
        segment_starts(&rerun),
        expected,
        "the rerun asks for what each recorded segment misses, no probe: {rerun:?} after \
         {recorded:?}"
    );
    assert!(
        recorded
            .iter()
            .any(|s| s.done > 0 && s.start + s.done < s.end),
        "some segment was continued from inside: {recorded:?}"
    );
    assert_eq!(rerun.len(), expected.len(), "{rerun:?}");
}

/// Where a test puts the emergency stop file.
#[derive(Clone, Copy)]
enum StopFile {
    /// `EMERGENCY_STOP` in the output directory, found without any flag.
    DefaultInOutput,
    /// A path outside the output directory, given with `--emergency-stop-file`.
    Chosen,
}

/// Starts a slow run (with `extra_args`), creates the stop file after a second, and expects
/// exit 4 soon after with the `.part` files and the state kept; then a rerun without the file
/// finishes everything.
fn emergency_stop_then_rerun(first_id: u64, extra_args: &[&str], stop: StopFile) {
    let models = models(first_id, 6, 2 * MIB);
    let server = serve(
        models.clone(),
        Knobs {
            bandwidth: Some(512 * KIB),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let stop_file = match stop {
        StopFile::DefaultInOutput => sandbox.out.join("EMERGENCY_STOP"),
        StopFile::Chosen => sandbox.root().join("stop-now"),
    };
    let command = || {
        let mut cmd = download(&server, &sandbox);
        cmd.args(targets(&models)).args(extra_args);
        if let StopFile::Chosen = stop {
            cmd.arg("--emergency-stop-file").arg(&stop_file);
        }
        cmd
    };
    let creator = {
        let stop_file = stop_file.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            std::fs::write(&stop_file, "").expect("create the stop file");
            Instant::now()
        })
    };
    let ran = run(command());
    let exited = Instant::now();
    let created = creator.join().expect("stop file thread");
    ran.expect_code(4);
    let reaction = exited.saturating_duration_since(created);
    assert!(
        reaction <= Duration::from_millis(2500),
        "exit {reaction:?} after the stop file appeared"
    );
    assert!(
        sandbox.downloads().iter().any(
            |p| is_part(p) && std::fs::metadata(sandbox.out.join(p)).is_ok_and(|m| m.len() > 0)
        ),
        ".part files are kept: {:?}",
        sandbox.downloads()
    );
    assert_stopped_state_is_resumable(&sandbox, models.len());

    std::fs::remove_file(&stop_file).expect("remove the stop file");
    server.set_knobs(Knobs::default());
    run(command()).expect_code(0);
    assert_all_verified(&sandbox, &models);
    assert!(
        !sandbox.downloads().iter().any(|p| is_part(p)),
        "{:?}",
        sandbox.downloads()
    );
}

/// The state saved by a stopped run: each model file recorded so far is `done` (and in place) or
/// `pending` (the stop is no failure), at least one pending file keeps a non-empty `.part` for
/// the rerun, and not every file was done.
fn assert_stopped_state_is_resumable(sandbox: &Sandbox, files: usize) {
    let state = sandbox.state();
    let records = state["files"].as_array().expect("state has files");
    let mut done = 0;
    let mut resumable = 0;
    for record in records {
        let path = sandbox
            .out
            .join(record["relative_path"].as_str().expect("relative_path"));
        let part = path.with_file_name(format!(
            "{}.part",
            path.file_name().unwrap().to_string_lossy()
        ));
        match record["status"].as_str() {
            Some("done") => {
                assert!(path.is_file(), "done but missing: {record:#}");
                done += 1;
            }
            Some("pending") => {
                assert!(!path.exists(), "pending but in place: {record:#}");
                resumable += usize::from(len_or_zero(&part) > 0);
            }
            _ => panic!("a stopped file is done or pending: {record:#}"),
        }
    }
    assert!(done < files, "the stop came before the end: {state:#}");
    assert!(
        resumable >= 1,
        "a pending file keeps its .part: {state:#}\n{:?}",
        sandbox.downloads()
    );
}

fn is_part(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "part")
}

#[test]
fn emergency_stop_file_in_the_output_directory_stops_a_concurrent_run() {
    emergency_stop_then_rerun(601, &[EXPERIMENTAL], StopFile::DefaultInOutput);
}

#[test]
fn emergency_stop_file_at_a_chosen_path_stops_a_sequential_run() {
    emergency_stop_then_rerun(611, &[], StopFile::Chosen);
}

#[test]
fn previews_are_fetched_in_a_bounded_pool() {
    const IMAGES: usize = 4;
    let mut m = model(701, "LORA", 64 * KIB);
    m.versions[0].images = IMAGES as u32;
    let server = serve(
        vec![m.clone()],
        Knobs {
            image_latency: Duration::from_millis(150),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg(m.id.to_string()).args([
        EXPERIMENTAL,
        "--images",
        &IMAGES.to_string(),
        "--max-concurrent-images",
        "2",
    ]);
    run(cmd).expect_code(0);
    let file = first_file(&m);
    let model_path = sandbox.out.join(&file.name);
    assert_verified(&model_path, file);
    for n in 0..IMAGES {
        let preview = preview_path(&model_path, n, "jpeg");
        let bytes = std::fs::read(&preview)
            .unwrap_or_else(|e| panic!("preview {} missing: {e}", preview.display()));
        assert_eq!(bytes[..3], [0xFF, 0xD8, 0xFF], "{}", preview.display());
    }
    assert_eq!(
        server.stats().max_concurrent_storage(),
        2,
        "previews overlap, two at a time (the model file ends before them)"
    );
}

/// Files that run out of retries while the error burst trips the failsafe are not reported failed:
/// they go back to the queue, and the sequential path gets them.
#[test]
fn files_failing_during_the_burst_are_handed_to_the_sequential_path() {
    // The first two files (the two the concurrent driver starts) are cut more often than the
    // three attempts `--retry-delays-ms 20,50` allow; the others are clean.
    let models: Vec<FakeModel> = (431..437)
        .map(|id| {
            let cuts = if id < 433 { 3 } else { 0 };
            with_faults(
                id,
                256 * KIB,
                FileFaults {
                    reset_after: (cuts > 0).then_some((64 * KIB, cuts)),
                    ..FileFaults::default()
                },
            )
        })
        .collect();
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = crate::support::download_with_retries(&server, &sandbox, "20,50");
    cmd.args(targets(&models)).args([EXPERIMENTAL, "--json"]);
    let ran = run(cmd);
    let report = ran.expect_code(0).json();
    assert_all_verified(&sandbox, &models);
    assert!(
        report["failsafe"].as_str().is_some_and(|r| !r.is_empty()),
        "{report:#}"
    );
    assert!(
        ran.stderr.contains("the sequential path will try it again"),
        "{}",
        ran.stderr
    );
    let files = report["files"].as_array().unwrap();
    assert!(
        files.iter().all(|f| f["status"] == "downloaded"),
        "{report:#}"
    );
}

// Regression (issue 8.8): a range whose retry met an expired URL marked the storage host as "does
// not serve parallel ranges" for the rest of the run, so every later file (all of Civitai's share
// one host) lost its segments. An expiry is renewed once and every unfinished segment continues
// in parallel with the new URL.
#[test]
fn an_expired_url_mid_file_is_renewed_and_the_host_keeps_its_parallel_ranges() {
    // 2 MiB segments at 1 MiB/s take 2 s; the URL lives 0.6 s and one segment is cut after
    // 1 MiB, so its retry asks with an expired URL while the other segments still stream.
    let first = cut_after(505, 8 * MIB, MIB, 2);
    let second = model(506, "Checkpoint", 8 * MIB);
    let server = serve(
        vec![first.clone(), second.clone()],
        Knobs {
            bandwidth: Some(MIB),
            url_ttl: Duration::from_millis(600),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = segmented_download(&server, &sandbox, &first);
    cmd.arg(second.id.to_string())
        .args(["--max-concurrent-downloads", "1"]);
    let ran = run(cmd);
    ran.expect_code(0);
    assert_all_verified(&sandbox, &[first.clone(), second.clone()]);
    assert!(
        !ran.stderr.contains("does not serve parallel ranges"),
        "an expiry is not a refusal of parallel ranges: {}",
        ran.stderr
    );
    assert!(failsafe_warnings(&ran.stderr).is_empty(), "{}", ran.stderr);
    let later = ranges_of(&server, first_file(&second).id);
    assert_eq!(
        later.len(),
        1 + SEGMENTS,
        "the next file still gets its parallel segments: {later:?}"
    );
    assert_eq!(
        server.stats().resolves(),
        3,
        "one resolve per file and one renewal: {}",
        ran.stderr
    );
}

// Regression (issue 8.8): every segment ran the whole retry policy inside every attempt of the
// file, so a dead host got attempts × attempts requests per segment (about 11 minutes to fail
// with the default waits). One budget per file: each attempt asks once for each unfinished
// segment.
#[test]
fn segments_share_the_files_retry_budget() {
    let m = cut_after(507, 6 * MIB, 64 * KIB, 1000);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let ran = run(segmented_download(&server, &sandbox, &m));
    ran.expect_code(1);
    let attempts = FAST_RETRIES.split(',').count() + 1;
    let ranges = ranges_of(&server, first_file(&m).id);
    // The failsafe trips on the run of failures and hands the file to the sequential path,
    // which has a budget of its own and asks for one segment at a time.
    assert!(
        ranges.len() <= 1 + attempts * SEGMENTS + attempts,
        "the probe, then at most one request per unfinished segment per attempt of the file: \
         {ranges:?}\n{}",
        ran.stderr
    );
    let dest = sandbox.out.join(&first_file(&m).name);
    assert!(
        recorded_segments(&dest).is_some_and(|s| s.iter().all(|s| s.done > 0)),
        "every segment keeps what it received for the next run"
    );
}

// Regression: `--min-speed` was judged on the one-stream path only, so a segment crawling far
// below it held its connection (and the file) for hours.
#[test]
fn a_crawling_segment_is_abandoned_by_the_minimum_speed() {
    let m = model(508, "Checkpoint", 6 * MIB);
    let server = capped(&m, 512);
    let sandbox = Sandbox::new();
    // One retry: each attempt takes a whole window to judge.
    let mut cmd = segmented_download_with_retries(&server, &sandbox, &m, "20");
    let log = sandbox.root().join("stderr.log");
    cmd.args(["--min-speed", "4096", "--min-speed-window", "1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut child = cmd.spawn().expect("spawn civitai-dl");
    let code = wait_with_timeout(&mut child, Duration::from_secs(60));
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("minimum speed"), "{stderr}");
}

// Issue 9.2: the range a reset left went over one connection in the next attempt while the
// others sat idle, which made a segmented file with one fault barely faster than one stream.
// It is split over the idle connections (in pieces of at least 4 MiB).
#[test]
fn a_range_left_by_a_reset_is_split_over_the_idle_connections() {
    const CUT: u64 = MIB;
    let m = with_faults(
        509,
        40 * MIB,
        FileFaults {
            reset_after: Some((CUT, 2)),
            ..FileFaults::default()
        },
    );
    let server = capped(&m, 4 * MIB);
    let sandbox = Sandbox::new();
    run(segmented_download(&server, &sandbox, &m)).expect_code(0);
    let file = first_file(&m);
    assert_verified(&sandbox.out.join(&file.name), file);
    let ranges = ranges_of(&server, file.id);
    let retries = segment_starts(&ranges[1 + SEGMENTS..]);
    let left = 10 * MIB - CUT;
    assert_eq!(
        retries.len(),
        2,
        "the 9 MiB left go over two connections: {ranges:?}"
    );
    // Halves of what was left, give or take what the other connections still had to receive.
    assert!(
        (retries[1] - retries[0]).abs_diff(left / 2) < MIB / 4,
        "{ranges:?}"
    );
}

// Issue 9.2: a connection that finished its range early sat idle while a slow one finished
// alone. It takes the second half of the busiest range's rest (work stealing), and the record
// stays resumable: killed right after a steal, a rerun continues every recorded range.
#[test]
fn a_connection_that_finishes_early_takes_half_of_a_slow_range_and_a_kill_after_it_resumes() {
    const STALL: u64 = MIB;
    let m = with_faults(
        510,
        64 * MIB,
        FileFaults {
            stall_after: Some((STALL, 2)),
            ..FileFaults::default()
        },
    );
    let server = capped(&m, 8 * MIB);
    let sandbox = Sandbox::new();
    let file = first_file(&m);
    let dest = sandbox.out.join(&file.name);
    let mut cmd = segmented_download(&server, &sandbox, &m);
    cmd.args(["--read-timeout", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let stole = kill_when(cmd, &dest, |s| s.len() > SEGMENTS);
    assert!(
        stole,
        "no split recorded within 30 s: {:?}",
        ranges_of(&server, file.id)
    );
    let ranges = ranges_of(&server, file.id);
    let stalled = ranges[1]
        .as_deref()
        .and_then(range_start)
        .expect("a segment range");
    let rest = 16 * MIB - STALL;
    assert!(
        segment_starts(&ranges).contains(&(stalled + STALL + rest / 2)),
        "the second half of the stalled range's rest was taken: {ranges:?}"
    );
    let recorded = recorded_segments(&dest).expect("record kept");
    let first_run = ranges.len();

    server.set_knobs(Knobs::default());
    run(segmented_download(&server, &sandbox, &m)).expect_code(0);
    assert_verified(&dest, file);
    let rerun = ranges_of(&server, file.id).split_off(first_run);
    for segment in recorded.iter().filter(|s| s.done < s.end - s.start) {
        assert!(
            segment_starts(&rerun).contains(&(segment.start + segment.done)),
            "the rerun continues {segment:?}: {rerun:?}"
        );
    }
}

/// The `(start, end)` of each `bytes=A-B` range asked for, in the order asked, without the probe.
fn asked_ranges(ranges: &[Option<String>]) -> Vec<(u64, u64)> {
    ranges
        .iter()
        .flatten()
        .filter(|r| r.as_str() != "bytes=0-0")
        .filter_map(|r| {
            let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
            Some((a.parse().ok()?, b.parse::<u64>().ok()? + 1))
        })
        .collect()
}

// Issue 9.1: a segmented file was laid out as four equal ranges, so three quarters of it were
// not a contiguous prefix until the very end, and the whole file was re-read for its hash after
// the last byte. A large file now comes in whole pieces taken in file order (the hash follows
// the prefix as it grows), and a kill between pieces leaves a record the rerun continues.
#[test]
fn a_large_segmented_file_arrives_in_whole_pieces_in_file_order_and_resumes_after_a_kill() {
    // 25 MiB a connection, in two pieces of at most 16 MiB.
    const PIECE: u64 = 25 * MIB / 2;
    let m = model(511, "Checkpoint", 100 * MIB);
    let server = capped(&m, 8 * MIB);
    let sandbox = Sandbox::new();
    let file = first_file(&m);
    let dest = sandbox.out.join(&file.name);
    let mut cmd = segmented_download(&server, &sandbox, &m);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let took_a_piece = kill_when(cmd, &dest, |s| s.len() > SEGMENTS + 1);
    assert!(took_a_piece, "no piece taken from the rest within 30 s");
    let first_run = ranges_of(&server, file.id);
    let asked = asked_ranges(&first_run);
    let mut firsts: Vec<u64> = asked.iter().take(SEGMENTS).map(|r| r.0).collect();
    firsts.sort_unstable();
    assert_eq!(firsts, [0, PIECE, 2 * PIECE, 3 * PIECE], "{first_run:?}");
    // About a quarter of what was left when it was taken: the other pieces were nearly done.
    let next = asked.iter().find(|r| r.0 == 4 * PIECE);
    assert!(
        next.is_some_and(|r| r.1.abs_diff(5 * PIECE) < MIB),
        "the next piece is the front of the rest, whole: {first_run:?}"
    );
    let recorded = recorded_segments(&dest).expect("record kept");

    server.set_knobs(Knobs::default());
    run(segmented_download(&server, &sandbox, &m)).expect_code(0);
    assert_verified(&dest, file);
    let rerun = asked_ranges(&ranges_of(&server, file.id)[first_run.len()..]);
    for segment in recorded.iter().filter(|s| s.done < s.end - s.start) {
        assert!(
            rerun.iter().any(|r| r.0 == segment.start + segment.done),
            "the rerun continues {segment:?}: {rerun:?}"
        );
    }
    for (start, _) in &rerun {
        assert!(
            !recorded
                .iter()
                .any(|s| (s.start..s.start + s.done).contains(start)),
            "nothing recorded as done is asked for again: {rerun:?} after {recorded:?}"
        );
    }
}

// Issue 9.2: a storage host throttling one client (S3's 503 SlowDown) refuses the connections
// over its limit. Their ranges went to the connections it kept, and every byte arrived in the
// first attempt; yet the attempt still failed on the refusal, and the file waited out the
// Retry-After for a retry with nothing left to fetch.
#[test]
fn ranges_a_throttling_host_refuses_go_to_the_connections_it_keeps_without_a_retry() {
    const RETRY_AFTER_SECS: u64 = 30;
    let m = model(512, "Checkpoint", 8 * MIB);
    let server = serve(
        vec![m.clone()],
        Knobs {
            storage_max_open_per_file: Some(2),
            retry_after_secs: RETRY_AFTER_SECS,
            // Slow enough that the four GETs overlap however loaded the machine is.
            bandwidth: Some(2 * MIB),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let ran = run(segmented_download(&server, &sandbox, &m));
    ran.expect_code(0);
    let file = first_file(&m);
    assert_verified(&sandbox.out.join(&file.name), file);
    assert!(
        server.stats().slow_downs() > 0,
        "the host refused a connection: {:?}",
        ranges_of(&server, file.id)
    );
    assert!(
        started.elapsed() < Duration::from_secs(RETRY_AFTER_SECS),
        "no retry waited out the Retry-After: {}",
        ran.stderr
    );
}

// Issue 9.2: every piece costs its connection one wait for the first byte. Behind a storage host
// 100 ms away, a 200 MiB file in 12.5 MiB pieces spent a fifth of its time waiting, and aria2c's
// four long ranges were 13 % faster. The probe's wait sizes the pieces: here, one range each.
#[test]
fn a_far_storage_host_gets_one_long_range_per_connection() {
    let m = model(513, "Checkpoint", 100 * MIB);
    let server = serve(
        vec![m.clone()],
        Knobs {
            storage_latency: Duration::from_millis(150),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    run(segmented_download(&server, &sandbox, &m)).expect_code(0);
    let file = first_file(&m);
    assert_verified(&sandbox.out.join(&file.name), file);
    let ranges = ranges_of(&server, file.id);
    let expected: Vec<u64> = split(file.size, SEGMENTS).iter().map(|s| s.start).collect();
    // The probe, then the first request of each connection; work stealing may follow.
    let first = &ranges[..(1 + SEGMENTS).min(ranges.len())];
    assert_eq!(segment_starts(first), expected, "{ranges:?}");
}
