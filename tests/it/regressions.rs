//! Regression tests for a review's findings: each test replays one defect end to end against
//! the fake Civitai, so the fix cannot quietly come undone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use civitai_dl_fake::{
    FakeCivitai, FakeFile, FakeModel, FakeVersion, FileFaults, Knobs, PublishedHash, fill_bytes,
};
use serde_json::json;

use crate::support::{
    FAST_RETRIES, Sandbox, assert_verified, civitai_dl, download, download_with_retries,
    first_file, info, interrupt, model, poll_until, range_start, ranges_of, run, serve,
    start_download_until_part_grows, wait_with_timeout,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Slow enough that a 4 MiB file is still in flight when the test interrupts the run.
const SLOW_BYTES_PER_SEC: u64 = 256 * KIB;
/// How long an interrupted run may take to wind down.
const PROMPT_EXIT: Duration = Duration::from_secs(10);

/// A one-file model whose file publishes `hash` and carries `faults`.
fn model_with(id: u64, size: u64, hash: PublishedHash, faults: FileFaults) -> FakeModel {
    let mut m = model(id, "LORA", size);
    let file = &mut m.versions[0].files[0];
    file.published_hash = hash;
    file.faults = faults;
    m
}

/// The first `len` bytes the fake serves for a file seeded `seed`.
fn served_prefix(seed: u64, len: u64) -> Vec<u8> {
    let mut bytes = vec![0; len as usize];
    fill_bytes(seed, 0, &mut bytes);
    bytes
}

/// Sends Ctrl-C and asserts that the run ends as interrupted (130) within two seconds.
fn assert_ctrl_c_ends_promptly(mut child: std::process::Child) {
    let interrupted = Instant::now();
    interrupt(&child);
    assert_eq!(wait_with_timeout(&mut child, PROMPT_EXIT * 6), Some(130));
    assert!(
        interrupted.elapsed() < Duration::from_secs(2),
        "exited {:?} after Ctrl-C",
        interrupted.elapsed()
    );
}

/// Bytes a process has read so far (Linux's `/proc/<pid>/io`), 0 when unknown.
fn bytes_read_by(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Asserts that `path` still holds exactly `bytes`, without dumping a whole model on failure.
fn assert_untouched(path: &Path, bytes: &[u8], by: &str) {
    let now = std::fs::read(path).unwrap_or_default();
    assert!(
        now == bytes,
        "{by} changed {}: {} bytes now, {} before",
        path.display(),
        now.len(),
        bytes.len()
    );
}

/// Defect 1: an interrupted run must not make a later run treat the user's own file at the
/// planned path as the download's.
#[test]
fn a_users_file_at_the_planned_path_survives_an_interrupted_run_and_a_rerun() {
    const USERS_BYTES: &[u8] = b"my own notes, not a model";
    let m = model(1001, "LORA", 4 * MIB);
    let file = first_file(&m).clone();
    let server = serve(
        vec![m],
        Knobs {
            bandwidth: Some(SLOW_BYTES_PER_SEC),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let users_file = sandbox.out.join(&file.name);
    std::fs::write(&users_file, USERS_BYTES).unwrap();
    let stem = file.name.trim_end_matches(".safetensors");
    let saved_name = format!("{stem}_{}.safetensors", file.id);
    let saved_as = sandbox.out.join(&saved_name);
    let part = sandbox.out.join(format!("{saved_name}.part"));

    let mut child = start_download_until_part_grows(&server, &sandbox, 1001, &part);
    interrupt(&child);
    assert_eq!(wait_with_timeout(&mut child, PROMPT_EXIT), Some(130));
    assert_untouched(&users_file, USERS_BYTES, "the interrupted run");

    server.set_knobs(Knobs::default());
    let mut rerun = download(&server, &sandbox);
    rerun.arg("1001");
    run(rerun).expect_code(0);
    assert_untouched(&users_file, USERS_BYTES, "the rerun");
    assert_verified(&saved_as, &file);
    assert_eq!(sandbox.state_record(file.id)["status"], "done");
}

/// Defect 2: a short `.part` answered with 416 is not complete; it must be fetched again.
#[test]
fn a_short_part_answered_with_416_is_downloaded_again_not_published() {
    const SHORT: u64 = 100 * KIB;
    let m = model_with(
        1002,
        512 * KIB,
        PublishedHash::Missing,
        FileFaults {
            unsatisfiable_range_attempts: 1,
            ..FileFaults::default()
        },
    );
    let file = first_file(&m).clone();
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let dest = sandbox.out.join(&file.name);
    let part = sandbox.out.join(format!("{}.part", file.name));
    std::fs::write(&part, served_prefix(file.seed, SHORT)).unwrap();
    let meta = json!({
        "source": format!("civitai:{}:{}", m.versions[0].id, file.id),
        "expected_sha256": null,
        "total": file.size,
        "etag": null,
    });
    std::fs::write(part.with_extension("part.json"), meta.to_string()).unwrap();

    let mut cmd = download(&server, &sandbox);
    cmd.arg("1002");
    run(cmd).expect_code(0);
    assert_verified(&dest, &file);
    assert!(!part.exists());
    let ranges = ranges_of(&server, file.id);
    assert_eq!(
        ranges
            .first()
            .cloned()
            .flatten()
            .as_deref()
            .and_then(range_start),
        Some(SHORT),
        "the run resumed the .part first: {ranges:?}"
    );
    assert!(
        ranges
            .last()
            .is_some_and(|r| r.as_deref().and_then(range_start).unwrap_or(0) == 0),
        "the last GET starts over from byte 0: {ranges:?}"
    );
}

/// Defect 3: a JSON error body disguised as a binary file must never become the model.
#[test]
fn a_json_error_body_served_as_a_binary_is_never_saved_as_the_model() {
    json_error_body_is_refused_then_recovered_from(1003, PublishedHash::Missing);
}

// Catches: the body sniffing skipped when Civitai published a hash. The JSON error would then
// fail the hash twice the same way and be kept as `<name>.unverified`, as if Civitai's hash were
// wrong, instead of being refused as what it is.
#[test]
fn a_json_error_body_is_refused_even_when_a_hash_is_published() {
    json_error_body_is_refused_then_recovered_from(1013, PublishedHash::Correct);
}

/// Files publishing `hash` served as a JSON error body (`application/octet-stream`, no length):
/// model `id` on every attempt, which fails without keeping anything, and model `id + 1` on the
/// first attempt only, which is then downloaded.
fn json_error_body_is_refused_then_recovered_from(id: u64, hash: PublishedHash) {
    let json_errors = |id, attempts| {
        model_with(
            id,
            256 * KIB,
            hash,
            FileFaults {
                json_error_attempts: attempts,
                ..FileFaults::default()
            },
        )
    };
    let (always, once) = (json_errors(id, 100), json_errors(id + 1, 1));
    let server = serve(vec![always.clone(), once.clone()], Knobs::default());

    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args([&always.id.to_string(), "--json"]);
    let ran = run(cmd);
    let report = ran.expect_code(1).json();
    assert!(
        ranges_of(&server, first_file(&always).id).len() > 1,
        "the error body was retried"
    );
    assert_eq!(report["files"][0]["status"], "failed", "{report:#}");
    let reason = report["files"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error document"), "{reason}");
    assert!(
        sandbox.downloads().is_empty(),
        "the JSON error was kept, as the model or as .unverified: {:?}",
        sandbox.downloads()
    );

    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg(once.id.to_string());
    run(cmd).expect_code(0);
    assert_verified(
        &sandbox.out.join(&first_file(&once).name),
        first_file(&once),
    );
    assert_eq!(ranges_of(&server, first_file(&once).id).len(), 2);
}

/// Defect 4: a file kept as `.unverified` stays one file across reruns and is moved, not fetched
/// again, when the mismatch is accepted.
#[test]
fn a_quarantined_file_survives_reruns_and_is_accepted_without_a_new_transfer() {
    let m = model_with(1005, 256 * KIB, PublishedHash::Wrong, FileFaults::default());
    let file = first_file(&m).clone();
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let dest = sandbox.out.join(&file.name);
    let quarantined = sandbox.out.join(format!("{}.unverified", file.name));
    let run_once = |extra: &[&str]| {
        let mut cmd = download(&server, &sandbox);
        cmd.arg("1005").args(extra);
        run(cmd)
    };
    let unverified_files = || -> Vec<PathBuf> {
        sandbox
            .downloads()
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".unverified"))
            .collect()
    };

    run_once(&[]).expect_code(1);
    assert_verified(&quarantined, &file);
    assert!(!dest.exists());
    let transfers = (server.stats().storage_requests(), server.stats().resolves());

    run_once(&[]).expect_code(1);
    assert_eq!(
        (server.stats().storage_requests(), server.stats().resolves()),
        transfers,
        "the rerun downloaded the quarantined file again"
    );
    assert_eq!(
        unverified_files(),
        [PathBuf::from(format!("{}.unverified", file.name))],
        "one quarantined file, never .unverified.unverified"
    );

    run_once(&["--accept-hash-mismatch"]).expect_code(0);
    assert_eq!(
        (server.stats().storage_requests(), server.stats().resolves()),
        transfers,
        "accepting the mismatch downloaded again"
    );
    assert_verified(&dest, &file);
    assert_eq!(unverified_files(), Vec::<PathBuf>::new());
    let stem = file.name.trim_end_matches(".safetensors");
    assert!(
        sandbox.out.join(format!("{stem}.civitai.info")).is_file(),
        "{:?}",
        sandbox.downloads()
    );
}

/// Defect 5: the download route is retried by one policy, not by the API client inside every
/// download attempt.
#[test]
fn a_failing_download_route_is_tried_at_most_once_per_policy_attempt() {
    let m = model(1006, "LORA", 64 * KIB);
    let server = serve(
        vec![m.clone()],
        Knobs {
            download_route_503_first: 1000,
            retry_after_secs: 0,
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = download_with_retries(&server, &sandbox, "10,10,10,10");
    cmd.arg("1006");
    run(cmd).expect_code(1);
    let tries = server.stats().download_route_requests();
    assert!(
        (1..=5).contains(&tries),
        "5 attempts at most under one policy, got {tries} requests"
    );
    assert!(!sandbox.out.join(&first_file(&m).name).exists());
}

/// Defect 6: a 206 whose range does not start where asked drops the `.part` instead of asking
/// for the same range forever.
#[test]
fn a_206_with_a_misplaced_range_restarts_the_file_from_zero() {
    const CUT: u64 = 200 * KIB;
    let m = model_with(
        1007,
        MIB,
        PublishedHash::Correct,
        FileFaults {
            reset_after: Some((CUT, 1)),
            misplaced_range_attempts: 2,
            ..FileFaults::default()
        },
    );
    let file = first_file(&m).clone();
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("1007");
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&file.name), &file);
    let starts: Vec<u64> = ranges_of(&server, file.id)
        .iter()
        .map(|r| r.as_deref().and_then(range_start).unwrap_or(0))
        .collect();
    assert_eq!(starts, [0, CUT, 0], "cut, misplaced answer, fresh start");
}

/// How a run interrupted while it waited out a `Retry-After` ended.
struct Interrupted {
    code: Option<i32>,
    stderr: String,
    /// From SIGINT to exit.
    took: Duration,
}

/// Runs `subcommand 1008` against an API whose first answer is a 429 with a `Retry-After` too
/// big for any clock, and sends SIGINT once the run is waiting.
fn interrupt_a_huge_retry_after(
    subcommand: fn(&FakeCivitai, &Sandbox) -> std::process::Command,
) -> Interrupted {
    let server = serve(
        vec![model(1008, "LORA", 64 * KIB)],
        Knobs {
            api_429_first: 1,
            retry_after_secs: u64::MAX,
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = subcommand(&server, &sandbox);
    cmd.arg("1008").stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn civitai-dl");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().expect("poll child").is_none(),
        "civitai-dl should still be waiting out the (capped) Retry-After"
    );
    assert_eq!(
        server.stats().api_requests(),
        1,
        "one throttled request so far"
    );
    let interrupted = Instant::now();
    interrupt(&child);
    let code = wait_with_timeout(&mut child, PROMPT_EXIT);
    let took = interrupted.elapsed();
    let stderr = std::io::read_to_string(child.stderr.take().expect("stderr")).unwrap();
    Interrupted { code, stderr, took }
}

/// Defect 7: a `Retry-After` too big for the clock neither panics nor blocks Ctrl-C.
#[test]
fn a_huge_retry_after_does_not_panic_and_ctrl_c_ends_the_wait() {
    let ended = interrupt_a_huge_retry_after(info);
    assert_ne!(ended.code, Some(101), "panicked: {}", ended.stderr);
    assert!(!ended.stderr.contains("panicked"), "{}", ended.stderr);
    assert!(
        ended.took < Duration::from_secs(5),
        "took {:?} after Ctrl-C: {}",
        ended.took,
        ended.stderr
    );
}

/// Defect 7, the exit code: Ctrl-C during `info` is an interruption, not a failed target.
#[test]
fn ctrl_c_while_info_waits_out_a_retry_after_exits_130() {
    let ended = interrupt_a_huge_retry_after(info);
    assert_eq!(ended.code, Some(130), "{}", ended.stderr);
}

/// Defect 7 for `download`: the same wait, interrupted while planning, exits 130 promptly.
#[test]
fn ctrl_c_while_download_waits_out_a_retry_after_exits_130() {
    let ended = interrupt_a_huge_retry_after(download);
    assert!(!ended.stderr.contains("panicked"), "{}", ended.stderr);
    assert_eq!(ended.code, Some(130), "{}", ended.stderr);
    assert!(ended.took < Duration::from_secs(5), "took {:?}", ended.took);
}

/// Defect 8: a key that cannot go into a header is a usage error that does not echo the key.
#[test]
fn an_api_key_with_a_control_character_is_a_one_line_usage_error() {
    const SECRET: &str = "s3cr3t-part";
    let key = format!("abc\u{1}{SECRET}");
    let server = serve(vec![model(1009, "LORA", 64 * KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let mut from_flag = download(&server, &sandbox);
    from_flag.args(["1009", "--api-key", &key]);
    let mut from_env = download(&server, &sandbox);
    from_env.arg("1009").env("CIVITAI_API_KEY", &key);
    for (how, cmd) in [("--api-key", from_flag), ("CIVITAI_API_KEY", from_env)] {
        let ran = run(cmd);
        ran.expect_code(2);
        let lines = ran.stderr_lines();
        assert_eq!(lines.len(), 1, "{how}: one line: {}", ran.stderr);
        assert!(lines[0].contains("api_key"), "{how}: {}", lines[0]);
        assert!(!ran.stderr.contains(SECRET), "{how}: the key is echoed");
        assert!(!ran.stdout.contains(SECRET), "{how}: the key is echoed");
    }
    assert_eq!(server.stats().api_requests(), 0);
}

/// Defect 9: a listing that pages only through `nextPage` URLs is followed to its end.
#[test]
fn a_user_listing_with_only_next_page_urls_is_followed_to_the_end() {
    let models: Vec<FakeModel> = (0..230)
        .map(|i| FakeModel {
            creator: "tester".to_owned(),
            ..model(2000 + i, "LORA", KIB)
        })
        .collect();
    let server = serve(
        models.clone(),
        Knobs {
            omit_next_cursor: true,
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = info(&server, &sandbox);
    cmd.args(["--user", "tester", "--json"]);
    let ran = run(cmd);
    ran.expect_code(0);
    let listed: BTreeSet<u64> = ran
        .json()
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|f| f["file_id"].as_u64())
        .collect();
    let want: BTreeSet<u64> = models.iter().map(|m| first_file(m).id).collect();
    assert_eq!(listed, want, "{}", ran.stderr);
}

// Regression: a second run on the same output folder (its own `--state-file`, as the old
// "state in use" message suggested) appended to the `.part` the first run was writing, and the
// first run committed a corrupt file recorded as verified, exit 0.
#[test]
fn a_second_run_on_the_same_folder_never_writes_into_a_part_another_run_holds() {
    let m = model(1101, "LORA", 4 * MIB);
    let file = first_file(&m).clone();
    let server = serve(
        vec![m],
        Knobs {
            bandwidth: Some(SLOW_BYTES_PER_SEC * 4),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let dest = sandbox.out.join(&file.name);
    let part = sandbox.out.join(format!("{}.part", file.name));
    let mut first = start_download_until_part_grows(&server, &sandbox, 1101, &part);
    let mut second = download(&server, &sandbox);
    second
        .arg("1101")
        .arg("--state-file")
        .arg(sandbox.root().join("other-state.json"));
    let second = run(second);
    let first_code = wait_with_timeout(&mut first, Duration::from_secs(60));
    assert_eq!(first_code, Some(0), "the first run finishes its file");
    assert_verified(&dest, &file);
    assert_ne!(second.code, 0, "the second run did not get the file");
    assert!(
        second
            .stderr
            .contains("another civitai-dl run is downloading"),
        "the second run says why: {}",
        second.stderr
    );
    assert!(
        !second.stderr.contains("--state-file"),
        "and recommends nothing that corrupts: {}",
        second.stderr
    );
}

// Regression: with no published hash, any file of about the listed size at the planned path was
// adopted as "already present" (a creator's v2 LoRA of the same rank has the same size), and the
// wanted file was never fetched.
#[test]
fn without_a_published_hash_a_file_of_the_same_size_is_not_taken_for_the_download() {
    let m = model_with(
        1102,
        256 * KIB,
        PublishedHash::Missing,
        FileFaults::default(),
    );
    let file = first_file(&m).clone();
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let theirs = sandbox.out.join(&file.name);
    let other_bytes = vec![7u8; file.size as usize];
    std::fs::write(&theirs, &other_bytes).unwrap();

    let mut cmd = download(&server, &sandbox);
    cmd.args(["1102", "--json"]);
    let report = run(cmd).expect_code(0).json();
    assert_untouched(&theirs, &other_bytes, "the run");
    let saved = &report["files"][0];
    assert_eq!(saved["status"], "downloaded", "{report:#}");
    let path = PathBuf::from(saved["path"].as_str().unwrap());
    assert_ne!(path, theirs, "saved beside the other file: {report:#}");
    assert_verified(&path, &file);

    // A rerun recognises its own hashless file by the hash it recorded.
    let mut again = download(&server, &sandbox);
    again.args(["1102", "--json"]);
    let report = run(again).expect_code(0).json();
    assert_eq!(report["files"][0]["status"], "present", "{report:#}");
}

/// The `.part.json` a run writes for a one-stream `.part` of `model`'s only file.
fn part_record(m: &FakeModel, total: Option<u64>) -> String {
    let file = first_file(m);
    json!({
        "source": format!("civitai:{}:{}", m.versions[0].id, file.id),
        "expected_sha256": null,
        "total": total,
        "etag": null,
    })
    .to_string()
}

// Regression: a kill between preallocating a hashless file and recording its segments left a
// full-length `.part` with a zero tail beside a one-stream record; the next run took "length ==
// total" as complete and committed zeros (no hash to catch them).
#[test]
fn a_full_length_hashless_part_is_checked_with_the_server_before_it_is_trusted() {
    let m = model_with(
        1103,
        512 * KIB,
        PublishedHash::Missing,
        FileFaults::default(),
    );
    let file = first_file(&m).clone();
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let part = sandbox.out.join(format!("{}.part", file.name));
    let mut bytes = served_prefix(file.seed, 128 * KIB);
    bytes.resize(file.size as usize, 0);
    std::fs::write(&part, &bytes).unwrap();
    std::fs::write(
        sandbox.out.join(format!("{}.part.json", file.name)),
        part_record(&m, Some(file.size)),
    )
    .unwrap();

    let mut cmd = download(&server, &sandbox);
    cmd.arg("1103");
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&file.name), &file);
}

// Regression: an unreadable `.part.json` (torn by a crash) deleted the `.part` with it, throwing
// away progress a published hash could still vouch for.
#[test]
fn an_unreadable_record_keeps_the_part_for_the_hash_to_judge() {
    const PREFIX: u64 = 200 * KIB;
    let m = model(1104, "LORA", 512 * KIB);
    let file = first_file(&m).clone();
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let part = sandbox.out.join(format!("{}.part", file.name));
    std::fs::write(&part, served_prefix(file.seed, PREFIX)).unwrap();
    std::fs::write(
        sandbox.out.join(format!("{}.part.json", file.name)),
        b"{\"sour",
    )
    .unwrap();

    let mut cmd = download(&server, &sandbox);
    cmd.arg("1104");
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&file.name), &file);
    let first = ranges_of(&server, file.id).first().cloned().flatten();
    assert_eq!(
        first.as_deref().and_then(range_start),
        Some(PREFIX),
        "the run continued the kept .part"
    );
}

// Regression: every storage 401/403/410 was taken for an expired URL and resolved again on each
// attempt, so a refusal that had nothing to do with the signature cost five resolves of
// Civitai's download quota per file and minutes of retries.
#[test]
fn a_fresh_url_refused_again_is_final_and_resolved_only_once_more() {
    let m = model_with(
        1105,
        64 * KIB,
        PublishedHash::Correct,
        FileFaults {
            forbidden_attempts: 100,
            ..FileFaults::default()
        },
    );
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["1105", "--json"]);
    let ran = run(cmd);
    ran.expect_code(1);
    assert_eq!(
        server.stats().resolves(),
        2,
        "the first URL and one fresh one: {}",
        ran.stderr
    );
    let report = ran.json();
    assert_eq!(
        report["files"][0]["resolves"], 2,
        "each file's resolves are in --json: {report:#}"
    );
    assert!(
        ran.stderr.contains("Blocked by the storage firewall"),
        "the storage host's reason is quoted: {}",
        ran.stderr
    );
}

// Regression: quota detection depended on Civitai's exact wording. A download-route 429 without
// `Retry-After` in other words (a proxy's HTML page) was retried per file across the whole list,
// spending the quota that was already gone, and the run ended with exit 1.
#[test]
fn a_repeated_download_route_429_without_retry_after_stops_the_run_as_the_quota() {
    let models: Vec<FakeModel> = (1106..1111).map(|id| model(id, "LORA", 16 * KIB)).collect();
    let server = serve(
        models,
        Knobs {
            download_route_429_html: true,
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["1106", "1107", "1108", "1109", "1110", "--json"]);
    let ran = run(cmd);
    ran.expect_code(3);
    let report = ran.json();
    assert_eq!(report["stopped"], "quota_exhausted", "{report:#}");
    assert!(
        report["files"].as_array().unwrap().len() < 5,
        "the run stopped instead of trying every file: {report:#}"
    );
}

// Regression: `.part` files were opened following symlinks, so a `.part` link planted beside the
// planned path made the download write into whatever it pointed at.
#[cfg(unix)]
#[test]
fn a_part_that_is_a_symlink_is_never_written_through() {
    let m = model_with(
        1111,
        64 * KIB,
        PublishedHash::Missing,
        FileFaults::default(),
    );
    let file = first_file(&m).clone();
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let victim = sandbox.root().join("victim.txt");
    let victims_bytes = b"someone else's file".to_vec();
    std::fs::write(&victim, &victims_bytes).unwrap();
    let part = sandbox.out.join(format!("{}.part", file.name));
    std::os::unix::fs::symlink(&victim, &part).unwrap();
    std::fs::write(
        sandbox.out.join(format!("{}.part.json", file.name)),
        part_record(&m, None),
    )
    .unwrap();

    let mut cmd = download(&server, &sandbox);
    cmd.arg("1111");
    run(cmd).expect_code(0);
    assert_untouched(&victim, &victims_bytes, "the download");
    assert_verified(&sandbox.out.join(&file.name), &file);
}

// Regression: paths read back from the state file were joined to the output folder without the
// escape check that planned paths get, so an edited or foreign state file could send a download
// outside the output folder.
#[test]
fn a_state_record_pointing_outside_the_output_folder_is_not_followed() {
    let m = model(1112, "LORA", 64 * KIB);
    let file = first_file(&m).clone();
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let mut first = download(&server, &sandbox);
    first.arg("1112");
    run(first).expect_code(0);
    let state_path = sandbox.out.join(".civitai-dl").join("state.json");
    let text = std::fs::read_to_string(&state_path).unwrap();
    let escaped = text.replace(&format!("\"{}\"", file.name), "\"../escaped.safetensors\"");
    assert_ne!(text, escaped, "the record names the file");
    std::fs::write(&state_path, escaped).unwrap();
    std::fs::remove_file(sandbox.out.join(&file.name)).unwrap();

    let mut again = download(&server, &sandbox);
    again.arg("1112");
    run(again).expect_code(0);
    assert!(
        !sandbox.root().join("escaped.safetensors").exists(),
        "the download left the output folder"
    );
    assert_verified(&sandbox.out.join(&file.name), &file);
}

// Regression: `--all-versions` with a filter dropped the whole model when one version had no
// matching file (old SD 1.5 versions often ship only a `.ckpt`).
#[test]
fn all_versions_with_a_filter_skips_the_versions_without_a_match_only() {
    let mut old = FakeFile::new(111_301, "old.ckpt", 32 * KIB);
    old.format = Some("PickleTensor".into());
    let new = FakeFile::new(111_302, "new.safetensors", 32 * KIB);
    let m = FakeModel::new(
        1113,
        "Two eras",
        "Checkpoint",
        vec![
            FakeVersion::new(11_132, "v2", vec![new.clone()]),
            FakeVersion::new(11_131, "v1", vec![old]),
        ],
    );
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["1113", "--all-versions", "--format", "SafeTensor"]);
    let ran = run(cmd);
    ran.expect_code(0);
    assert_verified(&sandbox.out.join(&new.name), &new);
    let summary = ran
        .stderr
        .lines()
        .skip_while(|l| !l.contains("downloaded,"));
    assert!(
        summary
            .clone()
            .any(|l| l.contains("skipped:") && l.contains("11131")),
        "the summary lists the skipped version: {}",
        ran.stderr
    );

    let mut cmd = download(&server, &sandbox);
    cmd.args(["1113", "--all-versions", "--format", "SafeTensor", "--json"]);
    let report = run(cmd).json();
    let skipped = report["skipped_versions"].to_string();
    assert!(skipped.contains("11131"), "{report:#}");
}

// Regression: under a creator, a model that could not be planned was only a warning and the run
// still exited 0, so an unattended mirror never learnt it was incomplete.
#[test]
fn a_creators_model_that_cannot_be_planned_fails_the_run() {
    let ok = model(1114, "LORA", 16 * KIB);
    let mut archived = model(1115, "LORA", 16 * KIB);
    archived.mode = Some("Archived".into());
    let server = serve(vec![ok.clone(), archived], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["--user", "tester", "--json"]);
    let ran = run(cmd);
    ran.expect_code(1);
    assert_verified(&sandbox.out.join(&first_file(&ok).name), first_file(&ok));
    let report = ran.json();
    let failed = report["failed_targets"].to_string();
    assert!(failed.contains("archived"), "{report:#}");
}

// Regression (issue 8.11): there was no way to choose a GGUF quantisation, and a filter matching
// several files took whichever the server listed first, so a rerun could fetch another multi-GB
// file. `--quant-type` selects one; ties are broken by a stated order, whatever the listing order.
#[test]
fn quant_type_selects_the_gguf_file_and_ties_break_the_same_way_in_any_order() {
    let gguf = |id: u64, quant: &str, size: u64| {
        let mut file = FakeFile::new(id, &format!("flux-{quant}.gguf"), size);
        file.format = Some("GGUF".into());
        file.quant_type = Some(quant.into());
        file.primary = false;
        file
    };
    let files = vec![
        gguf(111_601, "Q8_0", 48 * KIB),
        gguf(111_602, "Q4_K_M", 24 * KIB),
        gguf(111_603, "Q4_K_M", 16 * KIB),
    ];
    let mut reversed = files.clone();
    reversed.reverse();
    let listed = |id, files| {
        FakeModel::new(
            id,
            "Flux GGUF",
            "Checkpoint",
            vec![FakeVersion::new(id * 10, "v1", files)],
        )
    };
    let server = serve(
        vec![listed(1116, files.clone()), listed(1117, reversed)],
        Knobs::default(),
    );
    let sandbox = Sandbox::new();
    let download_to = |out: &Path| {
        let mut cmd = civitai_dl(&server.api_url(), &sandbox, FAST_RETRIES);
        cmd.arg("download").arg("-o").arg(out);
        cmd
    };
    let mut cmd = download_to(&sandbox.out.join("q8"));
    cmd.args(["1116", "--quant-type", "q8_0"]);
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join("q8").join(&files[0].name), &files[0]);

    for id in ["1116", "1117"] {
        let out = sandbox.out.join(id);
        let mut cmd = download_to(&out);
        cmd.args([id, "--format", "GGUF"]);
        run(cmd).expect_code(0);
        let got: Vec<_> = std::fs::read_dir(&out)
            .expect("output")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "gguf"))
            .filter_map(|e| Some(e.metadata().ok()?.len()))
            .collect();
        assert_eq!(
            got,
            vec![16 * KIB],
            "the smallest matching file, in model {id}"
        );
    }
}

// Regression (issue 8.16): Ctrl-C waited for a running hash to end. A multi-GB file at the
// final path (or a resumed prefix) is hashed on the blocking pool, which only looked at the
// cancellation when it was done: seconds to minutes on a large file or a slow disk.
#[test]
fn ctrl_c_stops_a_run_while_it_hashes_a_large_file() {
    let m = model(1118, "Checkpoint", 16 * KIB);
    let file = first_file(&m).clone();
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    // Sparse: 4 GiB to hash (seconds at any speed), no disk used.
    let big = std::fs::File::create(sandbox.out.join(&file.name)).expect("create");
    big.set_len(4 * 1024 * MIB).expect("sparse file");
    let mut cmd = download(&server, &sandbox);
    cmd.arg("1118").stdout(Stdio::null()).stderr(Stdio::null());
    let child = cmd.spawn().expect("spawn civitai-dl");
    assert!(
        poll_until(Duration::from_secs(10), || bytes_read_by(child.id())
            > 64 * MIB),
        "the run did not start hashing within 10 s"
    );
    assert_ctrl_c_ends_promptly(child);
}

// Regression (issue 8.16): Ctrl-C waited for an API answer that was on its way (each can take
// up to the read timeout).
#[test]
fn ctrl_c_stops_a_run_waiting_for_an_api_answer() {
    let server = serve(
        vec![model(1119, "LORA", 16 * KIB)],
        Knobs {
            api_latency: Duration::from_secs(30),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("1119").stdout(Stdio::null()).stderr(Stdio::null());
    let child = cmd.spawn().expect("spawn civitai-dl");
    assert!(
        poll_until(Duration::from_secs(10), || !server
            .stats()
            .api_request_times()
            .is_empty()),
        "no API request within 10 s"
    );
    assert_ctrl_c_ends_promptly(child);
}

// Regression (issue 8.4): a rerun with another `--layout` reported the finished file "present" at
// the old path, where the new app never looks. The verified file and its sidecars move to the
// newly planned path, without fetching anything again.
#[test]
fn a_changed_layout_moves_the_finished_file_and_its_sidecars() {
    let mut m = model(1120, "LORA", 64 * KIB);
    m.versions[0].images = 1;
    let file = first_file(&m).clone();
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let mut first = download(&server, &sandbox);
    first.args(["1120", "--images", "1"]);
    run(first).expect_code(0);
    let stem = file.name.trim_end_matches(".safetensors");
    let old_dir = sandbox.out.clone();
    let sidecars = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(stem))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let before = sidecars(&old_dir);
    assert!(before.len() >= 3, "model, info and preview: {before:?}");
    let storage_before = server.stats().storage_requests();

    let mut rerun = download(&server, &sandbox);
    rerun.args(["1120", "--images", "1", "--layout", "comfyui"]);
    let ran = run(rerun);
    ran.expect_code(0);
    let new_dir = sandbox.out.join("models/loras");
    assert_verified(&new_dir.join(&file.name), &file);
    assert_eq!(sidecars(&new_dir), before, "{}", ran.stderr);
    assert!(sidecars(&old_dir).is_empty(), "{:?}", sidecars(&old_dir));
    assert!(
        ran.stderr.contains("moved"),
        "the move is reported: {}",
        ran.stderr
    );
    assert_eq!(
        server.stats().storage_requests(),
        storage_before,
        "nothing is fetched again"
    );
    assert_eq!(
        sandbox.state_record(file.id)["relative_path"],
        format!("models/loras/{}", file.name)
    );
}

/// How many model files (not sidecars) the sandbox's output holds.
fn model_files(sandbox: &Sandbox) -> usize {
    sandbox
        .downloads()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .count()
}

/// `count` small LORA models by "tester", enough for more than one listing page.
fn creators_models(first_id: u64, count: u64) -> Vec<FakeModel> {
    (first_id..first_id + count)
        .map(|id| model(id, "LORA", 4 * KIB))
        .collect()
}

// Regression (issue 8.10): a creator's listing was all or nothing. Every page was fetched before
// the first download, and one failed page threw away the pages already listed. Pages now stream
// into the downloads, what was listed is kept, and a rerun resumes the listing at the page that
// failed (then lists the start once more, for anything left unfinished there).
#[test]
fn a_creators_listing_streams_keeps_what_was_listed_and_resumes_at_its_cursor() {
    let models = creators_models(12_001, 120);
    let server = serve(
        models.clone(),
        Knobs {
            listing_fails_from_page: Some(2),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["--user", "tester"]);
    let ran = run(cmd);
    ran.expect_code(1);
    assert_eq!(model_files(&sandbox), 100, "page 1 is kept: {}", ran.stderr);
    assert!(
        ran.stderr
            .contains("running the same command again continues from this page"),
        "the user is told how to continue: {}",
        ran.stderr
    );
    let first_run = server.stats().listings();
    let page_two = first_run.last().expect("page 2 was asked for").clone();
    assert!(
        page_two.cursor.is_some() && page_two.storage_requests_before >= 100,
        "page 1's files were fetched before page 2 was asked for: {first_run:?}"
    );

    server.set_knobs(Knobs::default());
    let storage_before = server.stats().storage_requests();
    let mut rerun = download(&server, &sandbox);
    rerun.args(["--user", "tester"]);
    let ran = run(rerun);
    ran.expect_code(0);
    for m in &models {
        assert_verified(&sandbox.out.join(&first_file(m).name), first_file(m));
    }
    let rerun_listings = server.stats().listings().split_off(first_run.len());
    assert_eq!(
        rerun_listings.first().map(|l| &l.cursor),
        Some(&page_two.cursor),
        "the rerun resumes at the page that failed: {rerun_listings:?}"
    );
    assert!(
        rerun_listings.iter().any(|l| l.cursor.is_none()),
        "then lists the start once more: {rerun_listings:?}"
    );
    assert_eq!(
        server.stats().storage_requests() - storage_before,
        20,
        "only the 20 files of the failed page are fetched"
    );
}

// Regression (issue 8.10): a listing page that kept failing (a page too big to build before a
// gateway's timeout) failed the whole creator; smaller pages are asked for instead.
#[test]
fn a_listing_page_that_keeps_failing_is_asked_for_in_smaller_pages() {
    let models = creators_models(12_201, 120);
    let server = serve(
        models.clone(),
        Knobs {
            listing_max_limit: Some(50),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["--user", "tester"]);
    let ran = run(cmd);
    ran.expect_code(0);
    assert_eq!(model_files(&sandbox), 120, "{}", ran.stderr);
    let limits: Vec<Option<String>> = server
        .stats()
        .listings()
        .into_iter()
        .map(|l| l.limit)
        .collect();
    assert_eq!(limits.first().cloned().flatten().as_deref(), Some("100"));
    assert!(
        limits.iter().skip(1).all(|l| l.as_deref() == Some("50")),
        "the smaller size is kept for the later pages: {limits:?}"
    );
}

// Regression (issue 9.3, 11.1): a list of model ids cost one metadata request per id, so 10,000
// ids took 33 minutes at the default rate before the first download, and again on every rerun.
// Ids are asked for 100 at a time (`/models?ids=`); what the batch lacks is asked for alone.
#[test]
fn a_list_of_model_ids_is_planned_in_batches_of_a_hundred() {
    let models = creators_models(12_401, 150);
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let list = sandbox.root().join("ids.txt");
    let mut ids: Vec<String> = models.iter().map(|m| m.id.to_string()).collect();
    ids.push("999999".into());
    std::fs::write(&list, ids.join("\n")).expect("write the list");
    let per_model_requests = |server: &FakeCivitai| {
        let stats = server.stats();
        stats.api_requests() - stats.listings().len() as u64 - stats.download_route_requests()
    };
    let mut cmd = download(&server, &sandbox);
    cmd.arg("--from-file").arg(&list);
    let ran = run(cmd);
    ran.expect_code(1);
    assert!(ran.stderr.contains("999999"), "{}", ran.stderr);
    assert_eq!(model_files(&sandbox), 150, "{}", ran.stderr);
    let batches = server.stats().listings();
    assert_eq!(batches.len(), 2, "{batches:?}");
    assert!(batches.iter().all(|b| !b.ids.is_empty()));
    assert_eq!(
        per_model_requests(&server),
        1,
        "only the id the batch lacks is asked for alone"
    );
}
