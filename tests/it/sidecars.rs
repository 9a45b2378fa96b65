//! Sidecars and layouts: every app's folder tree gets a checkpoint and its bundled VAE where the
//! app looks, the three sidecar formats carry what their readers use, an existing sidecar is never
//! clobbered, and previews are named by their bytes (never WebP for SwarmUI, always `.preview.`).

use std::path::Path;
use std::process::Command;

use civitai_dl_fake::{FakeCivitai, FakeFile, FakeModel, FakeVersion, ImageFormat, Knobs};
use serde_json::Value;

use crate::support::*;

const KIB: u64 = 1024;

/// An SDXL checkpoint whose version ships its VAE as a second file.
fn checkpoint_with_vae(id: u64) -> FakeModel {
    let weights = FakeFile::new(id * 100, &format!("checkpoint_{id}.safetensors"), 64 * KIB);
    let vae = FakeFile {
        file_type: "VAE".to_owned(),
        primary: false,
        ..FakeFile::new(
            id * 100 + 1,
            &format!("checkpoint_{id}_vae.safetensors"),
            32 * KIB,
        )
    };
    FakeModel::new(
        id,
        &format!("Checkpoint {id}"),
        "Checkpoint",
        vec![FakeVersion::new(id * 10, "v1.0", vec![weights, vae])],
    )
}

/// A LoRA of `model` whose previews have these formats (every URL ends in `.jpeg`).
fn lora_with_previews(id: u64, formats: &[ImageFormat]) -> FakeModel {
    let mut m = model(id, "LORA", 64 * KIB);
    m.versions[0].images = formats.len() as u32;
    m.versions[0].image_formats = formats.to_vec();
    m
}

/// `download` with the app's folder given as `--root` instead of `-o`.
fn download_into_root(server: &FakeCivitai, sandbox: &Sandbox, root: &Path) -> Command {
    let mut cmd = civitai_dl(&server.api_url(), sandbox, FAST_RETRIES);
    cmd.arg("download").arg("--root").arg(root);
    cmd
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[test]
fn each_layout_puts_a_checkpoint_and_its_vae_where_the_app_looks() {
    let m = checkpoint_with_vae(301);
    let (weights, vae) = (&m.versions[0].files[0], &m.versions[0].files[1]);
    let server = serve(vec![m.clone()], Knobs::default());
    let cases = [
        ("a1111", "models/Stable-diffusion", "models/VAE"),
        ("forge", "models/Stable-diffusion", "models/VAE"),
        ("comfyui", "models/checkpoints", "models/vae"),
        ("swarm", "Models/Stable-Diffusion", "Models/VAE"),
        ("invoke", "main/sdxl", "vae/sdxl"),
    ];
    for (layout, model_dir, vae_dir) in cases {
        let sandbox = Sandbox::new();
        let mut cmd = download_into_root(&server, &sandbox, &sandbox.out);
        cmd.args(["301", "--all-files", "--layout", layout]);
        let ran = run(cmd);
        ran.expect_code(0);
        assert_verified(&sandbox.out.join(model_dir).join(&weights.name), weights);
        assert_verified(&sandbox.out.join(vae_dir).join(&vae.name), vae);
        assert!(
            sandbox
                .out
                .join(model_dir)
                .join("checkpoint_301.civitai.info")
                .is_file(),
            "{layout}: {:?}",
            sandbox.downloads()
        );
    }
}

#[test]
fn output_and_root_together_are_a_usage_error() {
    let server = serve(vec![model(302, "LORA", KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("302").arg("--root").arg(sandbox.root().join("app"));
    let ran = run(cmd);
    ran.expect_code(2);
    assert!(sandbox.downloads().is_empty());
    assert_eq!(server.stats().api_requests(), 0, "{}", ran.stderr);
}

#[test]
fn sidecars_writes_all_three_formats_with_the_fields_their_readers_use() {
    let m = lora_with_previews(303, &[ImageFormat::Png]);
    let file = first_file(&m).clone();
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["303", "--images", "1", "--layout", "comfyui"])
        .args(["--sidecars", "civitai-info,a1111-json,lm-metadata"])
        .args(["--api-key", KEY]);
    run(cmd).expect_code(0);
    let dir = sandbox.out.join("models/loras");
    let model_path = dir.join(&file.name);
    assert_verified(&model_path, &file);
    let sha256 = sha256_file(&model_path).to_ascii_lowercase();

    let info = read_json(&dir.join("model_303.civitai.info"));
    assert_eq!(info["id"], 3030);
    assert_eq!(info["modelId"], 303);
    assert_eq!(info["model"]["description"], "<p>Model 303 (fake)</p>");
    assert_eq!(info["model"]["tags"], serde_json::json!(["fake", "lora"]));
    assert_eq!(
        info["model"]["allowCommercialUse"],
        serde_json::json!(["Image", "RentCivit"])
    );
    assert_eq!(info["creator"]["username"], "tester");
    let ours = &info["extensions"]["civitai_dl"];
    assert_eq!(ours["sha256"], sha256);
    assert_eq!(ours["sha256_verified"], true);
    assert_eq!(ours["file_id"], file.id);
    let source = ours["source_url"].as_str().expect("source_url");
    assert!(source.contains("/api/download/models/3030"), "{source}");
    assert!(
        ours["downloaded_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let card = read_json(&dir.join("model_303.json"));
    assert_eq!(card["description"], "<p>Model 303 (fake)</p>");
    assert_eq!(card["activation text"], "model303");
    assert_eq!(card["sd version"], "SDXL");
    assert_eq!(card["preferred weight"], 0);
    assert_eq!(card["notes"], "");

    let record = read_json(&dir.join("model_303.metadata.json"));
    assert_eq!(record["sha256"], sha256);
    assert_eq!(record["size"], file.size);
    assert_eq!(record["file_name"], "model_303");
    assert_eq!(record["model_name"], "Model 303");
    assert_eq!(record["base_model"], "SDXL 1.0");
    assert_eq!(record["hash_status"], "completed");
    assert_eq!(record["metadata_source"], "civitai_api");
    assert_eq!(record["usage_tips"], "{}");
    assert_eq!(record["civitai"]["id"], 3030);
    let file_path = record["file_path"].as_str().expect("file_path");
    assert!(
        Path::new(file_path).is_absolute()
            && file_path.ends_with("models/loras/model_303.safetensors"),
        "{file_path}"
    );
    let preview = record["preview_url"].as_str().expect("preview_url");
    assert!(preview.ends_with("model_303.preview.png"), "{preview}");
    assert!(Path::new(preview).is_file());

    let text = std::fs::read_to_string(dir.join("model_303.civitai.info")).unwrap();
    assert!(!text.contains(KEY), "the API key is in a sidecar");
}

#[test]
fn a_checkpoint_card_names_the_vae_downloaded_with_it() {
    let m = checkpoint_with_vae(304);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args([
        "304",
        "--all-files",
        "--layout",
        "forge",
        "--sidecars",
        "a1111-json",
    ]);
    run(cmd).expect_code(0);
    let card = read_json(
        &sandbox
            .out
            .join("models/Stable-diffusion/checkpoint_304.json"),
    );
    assert_eq!(card["vae"], "checkpoint_304_vae.safetensors");
    assert!(card.get("preferred weight").is_none());
    assert!(
        !sandbox
            .out
            .join("models/Stable-diffusion/checkpoint_304.civitai.info")
            .exists(),
        "only the sidecars asked for"
    );
}

#[test]
fn an_existing_civitai_info_of_another_version_is_left_alone_with_a_warning() {
    let m = model(305, "LORA", 64 * KIB);
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let info = sandbox.out.join("model_305.civitai.info");
    let theirs = "{\"id\": 999, \"name\": \"somebody else's\"}";
    std::fs::write(&info, theirs).unwrap();
    let mut cmd = download(&server, &sandbox);
    cmd.arg("305");
    let ran = run(cmd);
    ran.expect_code(0);
    assert_eq!(std::fs::read_to_string(&info).unwrap(), theirs);
    assert!(
        ran.stderr.contains("describes version 999, not 3050"),
        "{}",
        ran.stderr
    );
}

#[test]
fn an_existing_a1111_card_keeps_its_keys_and_gains_the_missing_ones() {
    let m = model(306, "LORA", 64 * KIB);
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let card_path = sandbox.out.join("model_306.json");
    std::fs::write(
        &card_path,
        "{\"activation text\": \"my trigger\", \"preferred weight\": 0.7, \"negative text\": \"blurry\"}",
    )
    .unwrap();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["306", "--sidecars", "a1111-json"]);
    run(cmd).expect_code(0);
    let card = read_json(&card_path);
    assert_eq!(card["activation text"], "my trigger");
    assert_eq!(card["preferred weight"], 0.7);
    assert_eq!(card["negative text"], "blurry");
    assert_eq!(card["sd version"], "SDXL");
    assert_eq!(card["description"], "<p>Model 306 (fake)</p>");
}

#[test]
fn a_sidecar_that_cannot_be_written_is_a_warning_and_the_model_file_a_success() {
    let m = model(307, "LORA", 64 * KIB);
    let file = first_file(&m).clone();
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.out.join("model_307.metadata.json")).unwrap();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["307", "--sidecars", "lm-metadata,civitai-info"]);
    let ran = run(cmd);
    ran.expect_code(0);
    assert_verified(&sandbox.out.join(&file.name), &file);
    assert!(sandbox.out.join("model_307.civitai.info").is_file());
    assert!(ran.stderr.contains("sidecar not written"), "{}", ran.stderr);
}

#[test]
fn previews_are_named_by_their_bytes_and_swarm_never_gets_webp() {
    let m = lora_with_previews(308, &[ImageFormat::Webp, ImageFormat::Jpeg]);
    let server = serve(vec![m], Knobs::default());

    let flat = Sandbox::new();
    let mut cmd = download(&server, &flat);
    cmd.args(["308", "--images", "1"]);
    run(cmd).expect_code(0);
    assert!(
        flat.out.join("model_308.preview.webp").is_file(),
        "{:?}",
        flat.downloads()
    );
    assert!(!flat.out.join("model_308.preview.jpeg").exists());

    let swarm = Sandbox::new();
    let mut cmd = download(&server, &swarm);
    cmd.args(["308", "--images", "1", "--layout", "swarm"]);
    let ran = run(cmd);
    ran.expect_code(0);
    let dir = swarm.out.join("Models/Lora");
    assert!(
        dir.join("model_308.preview.jpeg").is_file(),
        "{:?}",
        swarm.downloads()
    );
    let webp = swarm
        .downloads()
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains("webp") || p.to_string_lossy().contains(".download")
        })
        .collect::<Vec<_>>();
    assert!(webp.is_empty(), "{webp:?}");
    assert!(ran.stderr.contains("SwarmUI cannot show"), "{}", ran.stderr);
}

#[test]
fn swarm_with_only_webp_previews_skips_them_with_a_note() {
    let m = lora_with_previews(309, &[ImageFormat::Webp]);
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["309", "--images", "1", "--layout", "swarm"]);
    let ran = run(cmd);
    ran.expect_code(0);
    let previews: Vec<_> = sandbox
        .downloads()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("preview"))
        .collect();
    assert!(previews.is_empty(), "{previews:?}");
    assert!(
        ran.stderr.contains("no other PNG or JPEG"),
        "{}",
        ran.stderr
    );
}

#[test]
fn embeddings_get_preview_names_a1111_does_not_take_for_embeddings() {
    let mut m = model(310, "TextualInversion", 8 * KIB);
    m.versions[0].images = 2;
    m.versions[0].image_formats = vec![ImageFormat::Png, ImageFormat::Webp];
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["310", "--images", "2", "--layout", "a1111"]);
    run(cmd).expect_code(0);
    let dir = sandbox.out.join("embeddings");
    assert!(
        dir.join("model_310.preview.png").is_file(),
        "{:?}",
        sandbox.downloads()
    );
    assert!(
        dir.join("model_310.preview.2.webp").is_file(),
        "{:?}",
        sandbox.downloads()
    );
    for image in sandbox.downloads() {
        let name = image.to_string_lossy().to_string();
        if name.ends_with(".png") || name.ends_with(".webp") {
            assert!(
                name.contains(".preview."),
                "{name} would be probed as an embedding"
            );
        }
    }
}

#[test]
fn a_changed_layout_moves_every_sidecar_and_refreshes_lora_managers_path() {
    let m = lora_with_previews(311, &[ImageFormat::Png]);
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let all = [
        "--sidecars",
        "civitai-info,a1111-json,lm-metadata",
        "--images",
        "1",
    ];
    let mut first = download(&server, &sandbox);
    first.arg("311").args(all);
    run(first).expect_code(0);
    let mut rerun = download(&server, &sandbox);
    rerun.arg("311").args(all).args(["--layout", "swarm"]);
    let ran = run(rerun);
    ran.expect_code(0);
    let dir = sandbox.out.join("Models/Lora");
    for name in [
        "model_311.safetensors",
        "model_311.civitai.info",
        "model_311.json",
        "model_311.metadata.json",
        "model_311.preview.png",
    ] {
        assert!(
            dir.join(name).is_file(),
            "{name}: {:?}\n{}",
            sandbox.downloads(),
            ran.stderr
        );
        assert!(!sandbox.out.join(name).exists(), "{name} left behind");
    }
    let record = read_json(&dir.join("model_311.metadata.json"));
    let file_path = record["file_path"].as_str().unwrap();
    assert!(
        file_path.ends_with("Models/Lora/model_311.safetensors"),
        "{file_path}"
    );
}

#[test]
fn a_file_kept_as_unverified_gets_no_sidecars() {
    let mut m = model(312, "LORA", 64 * KIB);
    m.versions[0].files[0].published_hash = civitai_dl_fake::PublishedHash::Wrong;
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["312", "--sidecars", "civitai-info,a1111-json,lm-metadata"]);
    let ran = run(cmd);
    ran.expect_code(1);
    assert_eq!(
        sandbox.downloads(),
        [Path::new("model_312.safetensors.unverified")],
        "{}",
        ran.stderr
    );
}

#[test]
fn swarm_warns_about_a_pickle_file_it_will_not_load() {
    let mut m = model(313, "LORA", 8 * KIB);
    m.versions[0].files[0].name = "model_313.ckpt".to_owned();
    m.versions[0].files[0].format = Some("PickleTensor".to_owned());
    let server = serve(vec![m], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["313", "--layout", "swarm"]);
    let ran = run(cmd);
    ran.expect_code(0);
    assert!(sandbox.out.join("Models/Lora/model_313.ckpt").is_file());
    assert!(
        ran.stderr.contains("SwarmUI loads only .safetensors"),
        "{}",
        ran.stderr
    );
}

#[test]
fn invoke_never_writes_into_invokeais_own_models_folder() {
    let server = serve(vec![model(314, "LORA", KIB)], Knobs::default());
    let sandbox = Sandbox::new();
    let invokeai = sandbox.root().join("invokeai");
    std::fs::create_dir_all(invokeai.join("models")).unwrap();
    std::fs::write(invokeai.join("invokeai.yaml"), "schema_version: 4.0.2\n").unwrap();
    for root in [invokeai.join("models"), invokeai.join("models/sub")] {
        let mut cmd = download_into_root(&server, &sandbox, &root);
        cmd.args(["314", "--layout", "invoke"]);
        let ran = run(cmd);
        ran.expect_code(2);
        assert!(
            ran.stderr.contains("InvokeAI's own models folder"),
            "{}",
            ran.stderr
        );
    }
    assert_eq!(server.stats().api_requests(), 0);
    let mut cmd = download_into_root(&server, &sandbox, &invokeai.join("civitai-dl"));
    cmd.args(["314", "--layout", "invoke"]);
    run(cmd).expect_code(0);
    assert!(
        invokeai
            .join("civitai-dl/lora/sdxl/model_314.safetensors")
            .is_file()
    );
    assert_eq!(
        files_under(&invokeai.join("models")),
        Vec::<std::path::PathBuf>::new()
    );
}
