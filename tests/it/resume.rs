//! Interrupted transfers: cut connections, killed and interrupted runs, expired signed URLs.

use std::process::Child;
use std::time::Duration;

use civitai_dl_fake::{FakeCivitai, FakeModel, FileFaults, Knobs};

use crate::support::{
    Sandbox, assert_verified, cut_after, download, download_with_retries, first_file, interrupt,
    len_or_zero, model, range_start, ranges_of, run, serve, start_download_until_part_grows,
    wait_with_timeout, with_faults,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Slow enough that a 4 MiB file is still in flight when the test stops the run.
const SLOW_BYTES_PER_SEC: u64 = 256 * KIB;

/// Starts a download of `model_id` in the background and waits until its `.part` holds bytes.
fn start_slow_download(server: &FakeCivitai, sandbox: &Sandbox, model: &FakeModel) -> Child {
    let part = sandbox.out.join(format!("{}.part", first_file(model).name));
    start_download_until_part_grows(server, sandbox, model.id, &part)
}

/// A 4 MiB model served slowly enough to be interrupted mid-file, and its server.
fn slow_model(id: u64) -> (FakeModel, FakeCivitai) {
    let m = model(id, "LORA", 4 * MIB);
    let knobs = Knobs {
        bandwidth: Some(SLOW_BYTES_PER_SEC),
        ..Knobs::default()
    };
    (m.clone(), serve(vec![m], knobs))
}

/// Asserts that the last GET of the file asked for the rest from a non-zero offset.
fn assert_resumed_from_offset(server: &FakeCivitai, file_id: u64) -> u64 {
    let ranges = ranges_of(server, file_id);
    let last = ranges.last().cloned().flatten();
    let start = last.as_deref().and_then(range_start);
    assert!(
        start.is_some_and(|s| s > 0),
        "the rerun should continue with a Range from a non-zero offset: {ranges:?}"
    );
    start.unwrap_or_default()
}

#[test]
fn connection_cut_mid_file_resumes_with_a_range_request() {
    const CUT: u64 = 300 * KIB;
    let m = cut_after(81, 2 * MIB, CUT, 1);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("81");
    run(cmd).expect_code(0);
    let file = first_file(&m);
    assert_verified(&sandbox.out.join(&file.name), file);
    let ranges = ranges_of(&server, file.id);
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(
        ranges[1].as_deref().and_then(range_start),
        Some(CUT),
        "second GET continues at the cut: {ranges:?}"
    );
    assert!(!sandbox.out.join(format!("{}.part", file.name)).exists());
    // The resume reuses the signed URL of the run (a resolve counts against the quota): a cache
    // that never hits would resolve twice.
    assert_eq!(server.stats().resolves(), 1, "the resume resolved again");
}

#[test]
fn part_left_by_a_killed_run_is_continued() {
    let (m, server) = slow_model(82);
    let sandbox = Sandbox::new();
    let mut child = start_slow_download(&server, &sandbox, &m);
    child.kill().expect("kill civitai-dl");
    child.wait().expect("reap civitai-dl");

    server.set_knobs(Knobs::default());
    let mut cmd = download(&server, &sandbox);
    cmd.arg("82");
    run(cmd).expect_code(0);
    let file = first_file(&m);
    assert_verified(&sandbox.out.join(&file.name), file);
    let start = assert_resumed_from_offset(&server, file.id);
    assert!(start < file.size);
}

#[test]
fn ctrl_c_exits_130_keeps_the_part_and_a_rerun_completes() {
    let (m, server) = slow_model(83);
    let sandbox = Sandbox::new();
    let mut child = start_slow_download(&server, &sandbox, &m);
    interrupt(&child);
    let exit = wait_with_timeout(&mut child, Duration::from_secs(20));
    assert_eq!(exit, Some(130), "Ctrl-C exits with 130");

    let file = first_file(&m);
    let part = sandbox.out.join(format!("{}.part", file.name));
    assert!(len_or_zero(&part) > 0, "the .part is kept");
    assert!(!sandbox.out.join(&file.name).exists());
    // Interrupted is not failed: the record says the file is still to do.
    let record = sandbox.state_record(file.id);
    assert_eq!(record["status"], "pending", "{record:#}");

    server.set_knobs(Knobs::default());
    let mut cmd = download(&server, &sandbox);
    cmd.arg("83");
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&file.name), file);
    assert_resumed_from_offset(&server, file.id);
    assert_eq!(sandbox.state_record(file.id)["status"], "done");
}

#[test]
fn expired_signed_url_is_resolved_again() {
    let m = cut_after(84, MIB, 128 * KIB, 1);
    let server = serve(
        vec![m.clone()],
        Knobs {
            url_ttl: Duration::from_millis(300),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    // Retries wait longer than the URL lives, so the resumed GET cannot reuse the first URL.
    let mut cmd = download_with_retries(&server, &sandbox, "600,600,600");
    cmd.arg("84");
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
    // One resolve, then exactly one renewal after the refusal: not a resolve per retry.
    assert_eq!(server.stats().resolves(), 2, "one resolve and one renewal");
}

#[test]
fn storage_ignoring_range_restarts_the_file_cleanly() {
    let m = with_faults(
        85,
        MIB,
        FileFaults {
            reset_after: Some((200 * KIB, 1)),
            ignore_range: true,
            ..FileFaults::default()
        },
    );
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("85");
    run(cmd).expect_code(0);
    assert_verified(&sandbox.out.join(&first_file(&m).name), first_file(&m));
}

#[test]
fn stalled_transfer_times_out_and_resumes() {
    const STALL: u64 = 256 * KIB;
    let m = with_faults(
        86,
        MIB,
        FileFaults {
            stall_after: Some((STALL, 1)),
            ..FileFaults::default()
        },
    );
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["86", "--read-timeout", "1"]);
    run(cmd).expect_code(0);
    let file = first_file(&m);
    assert_verified(&sandbox.out.join(&file.name), file);
    let ranges = ranges_of(&server, file.id);
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert!(
        ranges[1]
            .as_deref()
            .and_then(range_start)
            .is_some_and(|s| s > 0),
        "the retry continues the stalled bytes: {ranges:?}"
    );
}

#[test]
fn a_second_run_on_the_same_output_is_refused_while_the_first_runs() {
    let (m, server) = slow_model(87);
    let sandbox = Sandbox::new();
    let mut first = start_slow_download(&server, &sandbox, &m);
    let mut second = download(&server, &sandbox);
    second.arg("87");
    let ran = run(second);
    let _ = first.kill();
    let _ = first.wait();
    assert_ne!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("another civitai-dl run"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        ranges_of(&server, first_file(&m).id).len(),
        1,
        "the second run downloaded"
    );
}

// Issue 11.10: SIGTERM (a service manager stopping the run, `timeout`, `docker stop`) killed the
// run without a summary and left its files recorded as downloading. It stops the run like
// Ctrl-C: state saved, summary printed, exit 130.
#[test]
fn sigterm_stops_the_run_like_ctrl_c() {
    let (m, server) = slow_model(84);
    let sandbox = Sandbox::new();
    let mut child = start_slow_download(&server, &sandbox, &m);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(130)
    );
    let record = sandbox.state_record(first_file(&m).id);
    assert_eq!(record["status"], "pending", "{record:#}");
}

// Issue 11.3: after Ctrl-C the summary said "0 B in 5 seconds" while megabytes were kept for the
// next run. It says how much the `.part` files keep.
#[test]
fn the_interrupt_summary_says_what_the_part_files_keep() {
    let (m, server) = slow_model(85);
    let sandbox = Sandbox::new();
    let part = sandbox.out.join(format!("{}.part", first_file(&m).name));
    let log = sandbox.root().join("stderr.log");
    let mut cmd = download(&server, &sandbox);
    cmd.arg("85")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut child = cmd.spawn().expect("spawn civitai-dl");
    assert!(
        crate::support::poll_until(Duration::from_secs(30), || len_or_zero(&part) > 64 * 1024),
        "no bytes reached the .part"
    );
    interrupt(&child);
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(130)
    );
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(stderr.contains("kept in .part files"), "{stderr}");
}
