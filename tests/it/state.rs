//! What a run remembers: reruns skip finished work, the quota stop saves progress.

use civitai_dl_fake::Knobs;

use civitai_dl_fake::FakeCivitai;

use crate::support::{Sandbox, assert_verified, download, first_file, model, models, run, serve};

const KIB: u64 = 1024;

#[test]
fn rerun_downloads_nothing() {
    let mut models = vec![model(201, "LORA", 256 * KIB), model(202, "LORA", 128 * KIB)];
    for m in &mut models {
        m.versions[0].images = 1;
    }
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let mut first = download(&server, &sandbox);
    first.args(["201", "202", "--images", "1"]);
    run(first).expect_code(0);
    let storage_after_first = server.stats().storage_requests();
    let resolves_after_first = server.stats().resolves();
    assert_eq!(storage_after_first, 4, "two files and two previews");

    let mut second = download(&server, &sandbox);
    second.args(["201", "202", "--images", "1", "--json"]);
    let ran = run(second);
    ran.expect_code(0);
    assert_eq!(
        server.stats().storage_requests(),
        storage_after_first,
        "the rerun transferred files"
    );
    assert_eq!(server.stats().resolves(), resolves_after_first);
    let report = ran.json();
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 4, "{report:#}");
    assert!(files.iter().all(|f| f["status"] == "present"), "{report:#}");
    assert!(files.iter().all(|f| f["transferred"] == 0), "{report:#}");
    assert!(
        ran.stderr.contains("0 downloaded, 2 already present")
            && ran
                .stderr
                .contains("previews: 0 downloaded, 2 already present"),
        "{}",
        ran.stderr
    );
    for m in &models {
        assert_verified(&sandbox.out.join(&first_file(m).name), first_file(m));
        assert_eq!(sandbox.state_record(first_file(m).id)["status"], "done");
    }
}

#[test]
fn rerun_after_the_file_was_damaged_downloads_it_again() {
    let m = model(203, "LORA", 128 * KIB);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut first = download(&server, &sandbox);
    first.arg("203");
    run(first).expect_code(0);
    let path = sandbox.out.join(&first_file(&m).name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(1000);
    std::fs::write(&path, bytes).unwrap();

    let mut second = download(&server, &sandbox);
    second.arg("203");
    run(second).expect_code(0);
    // The damaged file is civitai-dl's own (the state recorded it as done at this path), so it
    // is repaired in place rather than left beside a second copy under another name.
    assert_verified(&path, first_file(&m));
    assert_eq!(sandbox.downloads().len(), 2, "{:?}", sandbox.downloads());
}

#[test]
fn quota_stops_the_run_with_exit_3_and_saves_state() {
    let models = vec![
        model(211, "LORA", 64 * KIB),
        model(212, "LORA", 64 * KIB),
        model(213, "LORA", 64 * KIB),
    ];
    let server = serve(
        models.clone(),
        Knobs {
            quota_after: Some(1),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["211", "212", "213", "--json"]);
    let ran = run(cmd);
    ran.expect_code(3);
    assert!(ran.stderr.contains("quota"), "{}", ran.stderr);
    assert_eq!(ran.json()["stopped"], "quota_exhausted", "{}", ran.stdout);

    let first = first_file(&models[0]);
    assert_verified(&sandbox.out.join(&first.name), first);
    for m in &models[1..] {
        assert!(!sandbox.out.join(&first_file(m).name).exists());
    }
    let fetched: Vec<u64> = server.stats().ranges().iter().map(|(id, _)| *id).collect();
    assert_eq!(
        fetched,
        vec![first.id],
        "only the first file was transferred"
    );
    assert_eq!(
        server.stats().resolves(),
        1,
        "after the quota answer nothing else is tried"
    );
    assert_eq!(sandbox.state_record(first.id)["status"], "done");
    // The second file met the quota (one attempt, recorded for the rerun); the run stopped
    // before the third was even planned, so it has no record at all.
    let second = sandbox.state_record(first_file(&models[1]).id);
    assert_eq!(second["attempts"], 1, "{second:#}");
    assert!(
        second["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("quota")),
        "{second:#}"
    );
    let state = sandbox.state();
    let recorded: Vec<&serde_json::Value> = state["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["file"]["id"])
        .collect();
    assert_eq!(
        recorded,
        [first.id, first_file(&models[1]).id],
        "the third file was touched: {state:#}"
    );
}

/// Metadata requests the fake answered: models, versions and batches of models.
fn metadata_requests(server: &FakeCivitai) -> u64 {
    [
        "GET /api/v1/models/{id}",
        "GET /api/v1/model-versions/{id}",
        "GET /api/v1/models",
    ]
    .iter()
    .map(|route| server.stats().requests_to(route))
    .sum()
}

// Issue 9.6 / 11.1: a rerun of pinned versions asked Civitai about every one again (1,000
// batched requests for 100,000 targets before anything else). A published version's files do
// not change: a pinned target whose files are all recorded done and on disk is trusted; a
// target whose file is gone, or a rerun with other settings, is asked about again.
#[test]
fn a_rerun_of_finished_pinned_versions_asks_civitai_nothing_and_checks_what_changed() {
    let models = models(231, 3, 64 * KIB);
    let server = serve(models.clone(), Knobs::default());
    let sandbox = Sandbox::new();
    let pinned: Vec<String> = models
        .iter()
        .map(|m| {
            format!(
                "https://civitai.com/models/{}?modelVersionId={}",
                m.id, m.versions[0].id
            )
        })
        .collect();
    let pinned_run = |extra: &[&str]| {
        let mut cmd = download(&server, &sandbox);
        cmd.args(&pinned).args(extra);
        run(cmd)
    };
    pinned_run(&[]).expect_code(0);
    let first = metadata_requests(&server);
    assert!(first > 0);

    let rerun = pinned_run(&["--json"]);
    rerun.expect_code(0);
    assert_eq!(metadata_requests(&server), first, "{}", rerun.stderr);
    let report = rerun.json();
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{report:#}");
    assert!(files.iter().all(|f| f["status"] == "present"), "{report:#}");

    let gone = first_file(&models[1]);
    std::fs::remove_file(sandbox.out.join(&gone.name)).unwrap();
    pinned_run(&[]).expect_code(0);
    assert_eq!(
        metadata_requests(&server),
        first + 1,
        "only the changed target"
    );
    assert_verified(&sandbox.out.join(&gone.name), gone);

    pinned_run(&["--fp", "fp16"]).expect_code(1);
    assert_eq!(
        metadata_requests(&server),
        2 * first + 1,
        "other settings plan every target again, as the first run did"
    );
}
