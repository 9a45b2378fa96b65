//! Identification on Civitai, end to end against the fake: `scan` batches SHA-256 lookups, keeps
//! what it learnt so a warm rescan asks nothing, finds a header-edited file by its AutoV3, and
//! leaves files `pending` (never `unmatched`) when Civitai fails, and takes a file a sidecar
//! proves (its listed SHA-256 is the file's) without asking, offline or not; `identify` names a
//! file or a hash and the command that fetches it.

use std::path::Path;
use std::process::Command;

use civitai_dl_fake::{
    BatchFault, Catalog, FakeCivitai, FakeFile, FakeModel, FakeVersion, FileBytes, FileContent,
    ImageFormat, Knobs,
};
use serde_json::{Value, json};

use crate::support::{
    FAST_RETRIES, KEY, Ran, Sandbox, assert_key_written_nowhere, civitai_dl, run, sha256_file,
};

const BATCH_ROUTE: &str = "POST /api/v1/model-versions/by-hash";
const SINGLE_ROUTE: &str = "GET /api/v1/model-versions/by-hash/{hash}";

/// `civitai-dl --json <command> --index <sandbox>/index.sqlite <args…>` against `server`.
fn against(server: &FakeCivitai, sandbox: &Sandbox, command: &str, args: &[&str]) -> Command {
    let mut cmd = civitai_dl(&server.api_url(), sandbox, FAST_RETRIES);
    cmd.arg("--json")
        .arg(command)
        .arg("--index")
        .arg(sandbox.root().join("index.sqlite"))
        .args(args);
    cmd
}

/// `scan --json <out>`: the run and its NDJSON events.
fn scan(server: &FakeCivitai, sandbox: &Sandbox, args: &[&str]) -> (Ran, Vec<Value>) {
    let mut cmd = against(server, sandbox, "scan", args);
    cmd.arg(&sandbox.out);
    let ran = run(cmd);
    let events = ran
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (ran, events)
}

fn summary(events: &[Value]) -> &Value {
    let last = events.last().expect("some events");
    assert_eq!(last["event"], "summary", "{last}");
    last
}

/// (matched, unmatched, pending) of a scan's summary.
fn statuses(events: &[Value]) -> (u64, u64, u64) {
    let s = summary(events);
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    (n("matched"), n("unmatched"), n("pending"))
}

/// The `identity` event of the file named `name`.
fn identity<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "identity" && e["path"].as_str().is_some_and(|p| p.ends_with(name)))
        .unwrap_or_else(|| panic!("no identity event for {name}"))
}

/// Write the bytes the fake serves for `file` to `path`: a local copy of it.
fn local_copy(file: &FakeFile, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = vec![0; file.size as usize];
    FileBytes::of(file).fill(0, &mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// [`Catalog::uniform`] with a local copy of each of its files in `dir`, and those files.
fn uniform_copies(count: usize, size: u64, dir: &Path) -> (Catalog, Vec<FakeFile>) {
    let catalog = Catalog::uniform(count, size);
    let files: Vec<FakeFile> = catalog
        .models
        .iter()
        .map(|m| m.versions[0].files[0].clone())
        .collect();
    for file in &files {
        local_copy(file, &dir.join(&file.name));
    }
    (catalog, files)
}

fn start(catalog: Catalog, knobs: Knobs) -> FakeCivitai {
    FakeCivitai::start_in_background(catalog, knobs).expect("fake Civitai starts")
}

/// Model 7, version 70, with one safetensors file (700) whose header a test can rewrite.
fn tensors_catalog() -> Catalog {
    let file = FakeFile {
        content: FileContent::Safetensors {
            title: "Ink".to_owned(),
        },
        ..FakeFile::new(700, "ink.safetensors", 40_000)
    };
    Catalog {
        models: vec![FakeModel::new(
            7,
            "Ink Style",
            "LORA",
            vec![FakeVersion::new(70, "v1.0", vec![file])],
        )],
        valid_keys: Vec::new(),
    }
}

#[test]
fn two_hundred_fifty_local_files_take_three_posts_and_a_warm_rescan_asks_nothing() {
    let sandbox = Sandbox::new();
    let (catalog, files) = uniform_copies(250, 1_000, &sandbox.out.join("loras"));
    // The same bytes under another name: asked about once, matched twice.
    local_copy(&files[0], &sandbox.out.join("backup/copy.safetensors"));
    std::fs::write(sandbox.out.join("loras/mine.ckpt"), [3; 5_000]).unwrap();
    let server = start(catalog, Knobs::default());

    let (cold, events) = scan(&server, &sandbox, &[]);
    cold.expect_code(0);
    assert_eq!(statuses(&events), (251, 1, 0), "{}", cold.stderr);
    assert_eq!(server.stats().requests_to(BATCH_ROUTE), 3);
    assert_eq!(server.stats().api_requests(), 3, "nothing but the batches");
    let first = identity(&events, "uniform_lora_0.safetensors");
    assert_eq!(
        (&first["status"], &first["model_id"], &first["version_id"]),
        (&"matched".into(), &1000.into(), &2000.into())
    );
    assert_eq!(first["file_id"], 3000);
    assert_eq!(first["model_name"], "Uniform LoRA 0");
    assert_eq!(first["version_name"], "v1.0");
    assert_eq!(first["matched_by"], "sha256");
    assert_eq!(identity(&events, "mine.ckpt")["status"], "unmatched");
    let identified = events.iter().filter(|e| e["event"] == "identified").count();
    assert_eq!(identified, 252, "one event per file asked about");
    assert_eq!(identity(&events, "copy.safetensors")["version_id"], 2000);

    let (warm, events) = scan(&server, &sandbox, &[]);
    warm.expect_code(0);
    assert_eq!(statuses(&events), (251, 1, 0));
    assert_eq!(
        server.stats().api_requests(),
        3,
        "a warm rescan asks nothing"
    );
    assert_eq!(
        identity(&events, "uniform_lora_9.safetensors")["model_name"],
        "Uniform LoRA 9",
        "names come from the index"
    );

    let (retry, events) = scan(&server, &sandbox, &["--retry-unmatched"]);
    retry.expect_code(0);
    assert_eq!(statuses(&events), (251, 1, 0));
    assert_eq!(
        server.stats().requests_to(BATCH_ROUTE),
        4,
        "only the unmatched file is asked again"
    );
}

#[test]
fn a_header_edited_safetensors_copy_is_matched_by_its_autov3() {
    let catalog = tensors_catalog();
    let published = catalog.models[0].versions[0].files[0].clone();
    let sandbox = Sandbox::new();
    local_copy(
        &published.header_edited("renamed in SwarmUI"),
        &sandbox.out.join("Lora/ink.safetensors"),
    );
    let server = start(catalog, Knobs::default());

    let (ran, events) = scan(&server, &sandbox, &[]);
    ran.expect_code(0);
    assert_eq!(statuses(&events), (1, 0, 0), "{}", ran.stderr);
    let found = identity(&events, "ink.safetensors");
    assert_eq!(found["matched_by"], "autov3");
    assert_eq!(
        (&found["version_id"], &found["file_id"]),
        (&70.into(), &700.into())
    );
    assert_eq!(
        (
            server.stats().requests_to(BATCH_ROUTE),
            server.stats().requests_to(SINGLE_ROUTE)
        ),
        (1, 1)
    );
    assert!(ran.stderr.contains("1 found by AutoV3"), "{}", ran.stderr);
}

/// A batch route that keeps failing the way `fault` does leaves every file pending; once it
/// answers again, the next scan matches them.
fn failing_batches_leave_files_pending(fault: BatchFault) {
    let sandbox = Sandbox::new();
    let (catalog, _) = uniform_copies(3, 1_000, &sandbox.out);
    // Every attempt of the first scan (the first try and one per retry wait) fails.
    let attempts = FAST_RETRIES.split(',').count() as u32 + 1;
    let server = start(
        catalog,
        Knobs {
            by_hash_batch_fault: Some(fault),
            by_hash_batch_faulty: attempts,
            retry_after_secs: 0,
            ..Knobs::default()
        },
    );

    let (first, events) = scan(&server, &sandbox, &[]);
    first.expect_code(0);
    assert_eq!(statuses(&events), (0, 0, 3), "{fault:?}: {}", first.stderr);
    assert_eq!(server.stats().requests_to(BATCH_ROUTE), u64::from(attempts));
    assert!(first.stderr.contains("pending"), "{}", first.stderr);
    assert_eq!(
        server.stats().requests_to(SINGLE_ROUTE),
        0,
        "{fault:?}: a failed batch is no reason to ask file by file"
    );

    let (second, events) = scan(&server, &sandbox, &[]);
    second.expect_code(0);
    assert_eq!(statuses(&events), (3, 0, 0), "{fault:?}: {}", second.stderr);
}

#[test]
fn a_429_on_the_batch_route_leaves_files_pending_and_the_next_scan_matches_them() {
    failing_batches_leave_files_pending(BatchFault::TooManyRequests);
}

#[test]
fn a_maintenance_page_or_a_server_error_leaves_files_pending() {
    failing_batches_leave_files_pending(BatchFault::MaintenancePage);
    failing_batches_leave_files_pending(BatchFault::ServerError);
}

#[test]
fn identify_names_a_file_and_a_hash_and_the_command_that_fetches_them() {
    let catalog = tensors_catalog();
    let published = catalog.models[0].versions[0].files[0].clone();
    let sandbox = Sandbox::new();
    let edited = sandbox.out.join("edited.safetensors");
    local_copy(&published.header_edited("retitled"), &edited);
    let server = start(catalog, Knobs::default());
    let sha256 = server.sha256_of(700).unwrap().to_owned();

    let mut cmd = against(&server, &sandbox, "identify", &[&sha256.to_lowercase()]);
    cmd.arg(&edited);
    let ran = run(cmd);
    ran.expect_code(0);
    let answer = ran.json();
    assert_eq!(answer["found"], 2, "{answer}");
    let by_hash = &answer["results"][0];
    assert_eq!(by_hash["model"], "Ink Style");
    assert_eq!(by_hash["version"], "v1.0");
    assert_eq!(by_hash["file_name"], "ink.safetensors");
    assert_eq!(by_hash["type"], "LORA");
    assert_eq!(
        by_hash["download"],
        "civitai-dl download 'https://civitai.com/models/7?modelVersionId=70'"
    );
    let by_file = &answer["results"][1];
    assert_eq!(by_file["matched_by"], "autov3", "{by_file}");
    assert_eq!(by_file["version_id"], 70);

    // The file's hashes are cached now: asking again reads nothing and a scan reuses them.
    let mut cmd = civitai_dl(&server.api_url(), &sandbox, FAST_RETRIES);
    cmd.arg("identify")
        .arg("--index")
        .arg(sandbox.root().join("index.sqlite"))
        .arg(&edited)
        .arg("0123456789AB");
    let ran = run(cmd);
    ran.expect_code(1);
    assert!(ran.stdout.contains("Ink Style / v1.0"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains(
            "fetch it: civitai-dl download 'https://civitai.com/models/7?modelVersionId=70'"
        ),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("0123456789AB: not found on Civitai"),
        "{}",
        ran.stdout
    );
    let (_, events) = scan(&server, &sandbox, &[]);
    assert_eq!(summary(&events)["reused"], 1);
    assert_eq!(statuses(&events), (1, 0, 0), "identify recorded the match");

    let mut cmd = civitai_dl(&server.api_url(), &sandbox, FAST_RETRIES);
    cmd.args(["identify", "not-a-file-or-hash"]);
    let ran = run(cmd);
    ran.expect_code(2);
    assert!(
        ran.stderr.contains("neither a file nor a hash"),
        "{}",
        ran.stderr
    );
}

#[test]
fn verify_takes_the_published_hash_from_civitai_when_no_sidecar_gives_one() {
    let sandbox = Sandbox::new();
    let (catalog, files) = uniform_copies(2, 2_000, &sandbox.out);
    let server = start(catalog, Knobs::default());
    let (ran, events) = scan(&server, &sandbox, &[]);
    ran.expect_code(0);
    assert_eq!(statuses(&events), (2, 0, 0));
    // One file damaged after the scan identified it.
    let damaged = sandbox.out.join(&files[1].name);
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[100] ^= 0xFF;
    std::fs::write(&damaged, bytes).unwrap();

    let mut cmd = against(&server, &sandbox, "verify", &[]);
    cmd.arg(&sandbox.out);
    let ran = run(cmd);
    ran.expect_code(1);
    let verdicts: Vec<Value> = ran
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "verdict")
        .collect();
    let of = |name: &str| {
        verdicts
            .iter()
            .find(|v| v["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("no verdict for {name}: {}", ran.stdout))
    };
    assert_eq!(of(&files[0].name)["verdict"], "ok", "{}", ran.stdout);
    assert_eq!(of(&files[0].name)["expected_from"], "api");
    assert_eq!(of(&files[1].name)["verdict"], "mismatch", "{}", ran.stdout);
    assert_eq!(
        server
            .stats()
            .requests_to("GET /api/v1/model-versions/{id}"),
        2,
        "one version lookup each"
    );

    let mut cmd = against(&server, &sandbox, "verify", &["--no-remote"]);
    cmd.arg(sandbox.out.join(&files[0].name));
    let ran = run(cmd);
    ran.expect_code(1);
    assert!(ran.stdout.contains("\"unknown\""), "{}", ran.stdout);
}

#[test]
fn write_sidecars_writes_every_missing_kind_and_never_touches_an_existing_one() {
    let sandbox = Sandbox::new();
    let dir = sandbox.out.join("Lora");
    let (mut catalog, _) = uniform_copies(2, 2_000, &dir);
    for model in &mut catalog.models {
        model.versions[0].images = 1;
        model.versions[0].image_formats = vec![ImageFormat::Png];
    }
    let own_preview = dir.join("uniform_lora_1.preview.jpeg");
    std::fs::write(&own_preview, b"\xFF\xD8\xFF\xE0 someone's preview").unwrap();
    let card = dir.join("uniform_lora_0.json");
    std::fs::write(&card, "{\"notes\": \"mine\"}").unwrap();
    let other_info = dir.join("uniform_lora_1.civitai.info");
    std::fs::write(&other_info, "{\"id\": 9999, \"name\": \"another tool's\"}").unwrap();
    let server = start(catalog, Knobs::default());
    let kinds = [
        "--write-sidecars",
        "civitai-info,a1111-json,lm-metadata,preview",
    ];

    let (ran, events) = scan(&server, &sandbox, &kinds);
    ran.expect_code(0);
    assert_eq!(statuses(&events), (2, 0, 0), "{}", ran.stderr);
    let sidecars = &summary(&events)["sidecars"];
    assert_eq!(
        (&sidecars["written"], &sidecars["failed"]),
        (&5.into(), &0.into()),
        "{sidecars}: 3 beside the first file, 2 beside the second"
    );
    assert!(
        dir.join("uniform_lora_0.preview.png").is_file(),
        "named by its bytes"
    );
    assert_eq!(
        std::fs::read(&own_preview).unwrap(),
        b"\xFF\xD8\xFF\xE0 someone's preview"
    );
    assert_eq!(
        std::fs::read_to_string(&card).unwrap(),
        "{\"notes\": \"mine\"}"
    );
    assert_eq!(
        std::fs::read_to_string(&other_info).unwrap(),
        "{\"id\": 9999, \"name\": \"another tool's\"}"
    );
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let info = read("uniform_lora_0.civitai.info");
    assert_eq!(info["id"], 2000);
    assert_eq!(info["model"]["name"], "Uniform LoRA 0");
    let lm = read("uniform_lora_1.metadata.json");
    assert_eq!(lm["sha256"], server.sha256_of(3001).unwrap().to_lowercase());
    assert_eq!(lm["size"], 2_000);
    let lm0 = read("uniform_lora_0.metadata.json");
    assert_eq!(lm0["model_name"], "Uniform LoRA 0");
    assert!(
        lm0["preview_url"]
            .as_str()
            .is_some_and(|p| p.ends_with("uniform_lora_0.preview.png")),
        "{lm0}"
    );
    assert!(read("uniform_lora_1.json").get("sd version").is_some());
    let after_first = server.stats().api_requests();
    assert_eq!(
        server
            .stats()
            .requests_to("GET /api/v1/model-versions/{id}"),
        0,
        "the lookup's answers give the version JSON"
    );

    let (again, events) = scan(&server, &sandbox, &kinds);
    again.expect_code(0);
    assert_eq!(summary(&events)["sidecars"]["written"], 0);
    assert_eq!(
        server.stats().api_requests(),
        after_first,
        "nothing missing, nothing asked"
    );

    std::fs::remove_file(dir.join("uniform_lora_0.metadata.json")).unwrap();
    let (refill, events) = scan(&server, &sandbox, &kinds);
    refill.expect_code(0);
    assert_eq!(summary(&events)["sidecars"]["written"], 1);
    assert_eq!(
        server
            .stats()
            .requests_to("GET /api/v1/model-versions/{id}"),
        1,
        "a file matched earlier has its version fetched once"
    );
    assert_eq!(
        read("uniform_lora_0.metadata.json")["model_name"],
        "Uniform LoRA 0"
    );
}

#[test]
fn the_same_bytes_in_two_versions_match_the_version_a_sidecar_names_else_the_lowest() {
    let twin = |id| FakeFile {
        seed: 5,
        ..FakeFile::new(id, "twin.safetensors", 3_000)
    };
    let catalog = Catalog {
        models: vec![FakeModel::new(
            1,
            "Twins",
            "LORA",
            vec![
                FakeVersion::new(11, "v2", vec![twin(110)]),
                FakeVersion::new(10, "v1", vec![twin(100)]),
            ],
        )],
        valid_keys: Vec::new(),
    };
    let sandbox = Sandbox::new();
    local_copy(&twin(100), &sandbox.out.join("a/twin.safetensors"));
    local_copy(&twin(100), &sandbox.out.join("b/twin.safetensors"));
    std::fs::write(sandbox.out.join("b/twin.civitai.info"), "{\"id\": 11}").unwrap();
    let server = start(catalog, Knobs::default());

    let (ran, events) = scan(&server, &sandbox, &[]);
    ran.expect_code(0);
    assert_eq!(statuses(&events), (2, 0, 0), "{}", ran.stderr);
    assert_eq!(identity(&events, "a/twin.safetensors")["version_id"], 10);
    assert_eq!(identity(&events, "b/twin.safetensors")["version_id"], 11);
    assert_eq!(server.stats().api_requests(), 1);
}

#[test]
fn after_a_batch_fails_past_its_retries_the_rest_wait_for_the_next_scan_unasked() {
    let sandbox = Sandbox::new();
    let (catalog, _) = uniform_copies(150, 500, &sandbox.out);
    let attempts = FAST_RETRIES.split(',').count() as u32 + 1;
    let server = start(
        catalog,
        Knobs {
            by_hash_batch_fault: Some(BatchFault::ServerError),
            by_hash_batch_faulty: attempts,
            ..Knobs::default()
        },
    );

    let (first, events) = scan(&server, &sandbox, &[]);
    first.expect_code(0);
    assert_eq!(statuses(&events), (0, 0, 150), "{}", first.stderr);
    assert_eq!(
        server.stats().requests_to(BATCH_ROUTE),
        u64::from(attempts),
        "the second batch is not sent into the same failure"
    );
    let (second, events) = scan(&server, &sandbox, &[]);
    second.expect_code(0);
    assert_eq!(statuses(&events), (150, 0, 0), "{}", second.stderr);
}

#[test]
fn scan_sends_the_key_to_the_api_only_and_writes_it_nowhere() {
    let sandbox = Sandbox::new();
    let (mut catalog, _) = uniform_copies(2, 500, &sandbox.out);
    catalog.models[0].versions[0].images = 1;
    let server = start(catalog, Knobs::default());
    let all = "civitai-info,a1111-json,lm-metadata,preview";
    let (ran, events) = scan(
        &server,
        &sandbox,
        &["--api-key", KEY, "-v", "--write-sidecars", all],
    );
    ran.expect_code(0);
    assert_eq!(statuses(&events), (2, 0, 0), "{}", ran.stderr);
    assert!(
        server.stats().auth_at_api() > 0,
        "the API host never got the key"
    );
    assert_eq!(
        server.stats().auth_at_storage(),
        0,
        "the key went to storage"
    );
    assert_key_written_nowhere(&ran, &sandbox);
}

// Issue 10 ("done when"): the commands work on the trees the apps keep. Each tree is built by
// `download --layout`, its sidecars are removed (so only Civitai can say what the files are), and
// `scan` must find every model file in the app's folders and identify it.
#[test]
fn scan_identifies_every_file_of_each_apps_tree() {
    use crate::support::model;
    let checkpoint = {
        let weights = FakeFile::new(60100, "tree_checkpoint.safetensors", 64 * 1024);
        let vae = FakeFile {
            file_type: "VAE".to_owned(),
            primary: false,
            ..FakeFile::new(60101, "tree_checkpoint_vae.safetensors", 32 * 1024)
        };
        FakeModel::new(
            601,
            "Tree Checkpoint",
            "Checkpoint",
            vec![FakeVersion::new(6010, "v1.0", vec![weights, vae])],
        )
    };
    let models = vec![
        checkpoint,
        model(602, "LORA", 48 * 1024),
        model(603, "TextualInversion", 16 * 1024),
    ];
    let server = crate::support::serve(models, Knobs::default());
    let trees = [
        (
            "a1111",
            ["models/Stable-diffusion", "models/Lora", "embeddings"],
        ),
        (
            "forge",
            ["models/Stable-diffusion", "models/Lora", "embeddings"],
        ),
        (
            "comfyui",
            ["models/checkpoints", "models/loras", "models/embeddings"],
        ),
        (
            "swarm",
            [
                "Models/Stable-Diffusion",
                "Models/Lora",
                "Models/Embeddings",
            ],
        ),
    ];
    for (layout, folders) in trees {
        let sandbox = Sandbox::new();
        let mut download = civitai_dl(&server.api_url(), &sandbox, FAST_RETRIES);
        download
            .arg("download")
            .arg("--root")
            .arg(&sandbox.out)
            .args(["601", "602", "603", "--all-files", "--layout", layout]);
        run(download).expect_code(0);
        for sidecar in sandbox
            .downloads()
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".civitai.info"))
        {
            std::fs::remove_file(sandbox.out.join(sidecar)).unwrap();
        }
        let (ran, events) = scan(&server, &sandbox, &[]);
        ran.expect_code(0);
        assert_eq!(statuses(&events), (4, 0, 0), "{layout}: {}", ran.stdout);
        for folder in folders {
            assert!(
                events.iter().any(|e| e["event"] == "identity"
                    && e["path"]
                        .as_str()
                        .is_some_and(|p| p.contains(&format!("/{folder}/")))),
                "{layout}: nothing identified in {folder}: {}",
                ran.stdout
            );
        }
    }
}

/// A `.civitai.info` for uniform file `file` (model `file.id - 2000`, version `file.id - 1000`),
/// listing `sha256` as its hash when given.
fn civitai_info(file: &FakeFile, beside: &Path, sha256: Option<&str>) {
    let hashes = sha256.map_or(json!({}), |sha| json!({"SHA256": sha}));
    let info = json!({"id": file.id - 1000, "modelId": file.id - 2000, "name": "v1.0",
        "model": {"name": "From the sidecar"},
        "files": [{"id": file.id, "name": file.name, "hashes": hashes}]});
    std::fs::write(beside.with_extension("civitai.info"), info.to_string()).unwrap();
}

/// The `identified` event of the file named `name`.
fn identified<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| {
            e["event"] == "identified" && e["path"].as_str().is_some_and(|p| p.ends_with(name))
        })
        .unwrap_or_else(|| panic!("no identified event for {name}"))
}

#[test]
fn no_remote_identifies_from_sidecars_that_list_the_files_hash_and_a_remote_scan_skips_them() {
    let sandbox = Sandbox::new();
    let dir = sandbox.out.join("loras");
    let (catalog, files) = uniform_copies(3, 1_000, &dir);
    let path = |i: usize| dir.join(&files[i].name);
    civitai_info(
        &files[0],
        &path(0),
        Some(&sha256_file(&path(0)).to_lowercase()),
    );
    civitai_info(&files[1], &path(1), None);
    let record = json!({"sha256": sha256_file(&path(2)).to_lowercase(), "model_name": "LM",
        "civitai": {"id": files[2].id - 1000, "modelId": files[2].id - 2000, "name": "v1.0"}});
    std::fs::write(dir.join("uniform_lora_2.metadata.json"), record.to_string()).unwrap();
    std::fs::write(dir.join("mine.ckpt"), [3; 5_000]).unwrap();
    let server = start(catalog, Knobs::default());

    let (offline, events) = scan(&server, &sandbox, &["--no-remote"]);
    offline.expect_code(0);
    assert_eq!(server.stats().api_requests(), 0, "--no-remote asks nothing");
    assert_eq!(statuses(&events), (2, 0, 2), "{}", offline.stderr);
    let first = identity(&events, "uniform_lora_0.safetensors");
    assert_eq!(first["matched_by"], "sidecar");
    assert_eq!(
        (&first["model_id"], &first["version_id"], &first["file_id"]),
        (&1000.into(), &2000.into(), &3000.into())
    );
    assert_eq!(first["model_name"], "From the sidecar");
    let third = identity(&events, "uniform_lora_2.safetensors");
    assert_eq!(
        (&third["matched_by"], &third["version_id"]),
        (&"sidecar".into(), &2002.into())
    );
    let unverified = identified(&events, "uniform_lora_1.safetensors");
    assert_eq!(
        unverified["status"], "pending",
        "a sidecar without a hash claims nothing"
    );
    assert!(
        unverified["reason"]
            .as_str()
            .unwrap()
            .starts_with("unverified-sidecar: "),
        "{unverified}"
    );
    assert!(
        offline.stderr.contains("unverified-sidecar"),
        "{}",
        offline.stderr
    );

    let (online, events) = scan(&server, &sandbox, &[]);
    online.expect_code(0);
    assert_eq!(statuses(&events), (3, 1, 0), "{}", online.stderr);
    assert_eq!(
        server.stats().api_requests(),
        1,
        "one batch for the two files no sidecar proved"
    );
    let asked = events.iter().filter(|e| e["event"] == "identified").count();
    assert_eq!(asked, 2, "the proven files are not asked about");
    assert_eq!(
        identity(&events, "uniform_lora_1.safetensors")["matched_by"],
        "sha256"
    );
    assert_eq!(
        identity(&events, "uniform_lora_0.safetensors")["matched_by"],
        "sidecar"
    );

    // Offline again: what Civitai said is in the index, and stays.
    let (cached, events) = scan(&server, &sandbox, &["--no-remote"]);
    cached.expect_code(0);
    assert_eq!(statuses(&events), (3, 1, 0), "{}", cached.stderr);
    assert_eq!(
        identity(&events, "uniform_lora_1.safetensors")["version_id"],
        2001
    );
    assert_eq!(server.stats().api_requests(), 1);
}

#[test]
fn a_file_with_a_sidecar_is_proven_without_a_request_on_a_remote_scan() {
    let sandbox = Sandbox::new();
    let dir = sandbox.out.join("loras");
    let (catalog, files) = uniform_copies(1, 1_000, &dir);
    let model = dir.join(&files[0].name);
    civitai_info(&files[0], &model, Some(&sha256_file(&model)));
    let server = start(catalog, Knobs::default());

    let (ran, events) = scan(&server, &sandbox, &[]);
    ran.expect_code(0);
    assert_eq!(statuses(&events), (1, 0, 0), "{}", ran.stderr);
    assert_eq!(server.stats().api_requests(), 0, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("1 proven by their sidecars"),
        "{}",
        ran.stderr
    );
}
