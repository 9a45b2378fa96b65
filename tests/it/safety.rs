//! Hostile file names from the API must land inside the output folder, distinct and valid.

use std::collections::BTreeSet;
use std::path::Component;

use civitai_dl_fake::{FakeFile, FakeModel, FakeVersion, Knobs, content_sha256};

use crate::support::{
    KEY, Sandbox, assert_key_written_nowhere, download, first_file, model, run, serve, sha256_file,
};

const KIB: u64 = 1024;
/// The longest file name Linux, macOS and Windows all accept, in bytes.
const MAX_NAME_BYTES: usize = 255;

fn hostile_model() -> FakeModel {
    let long_name = format!("{}.safetensors", "n".repeat(300 - ".safetensors".len()));
    let names = [
        "../../evil.safetensors",
        "/etc/passwd",
        "C:\\x\\y.safetensors",
        "CON.safetensors",
        long_name.as_str(),
        "twin.safetensors",
        "twin.safetensors",
    ];
    let files = names
        .iter()
        .enumerate()
        .map(|(i, name)| FakeFile {
            primary: i == 0,
            ..FakeFile::new(9100 + i as u64, name, 64 * KIB + i as u64)
        })
        .collect();
    FakeModel::new(
        91,
        "Hostile",
        "LORA",
        vec![FakeVersion::new(910, "v1", files)],
    )
}

#[test]
fn hostile_names_stay_inside_the_output_folder() {
    let m = hostile_model();
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["91", "--all-files"]);
    let ran = run(cmd);
    ran.expect_code(0);

    for path in sandbox.all_files() {
        assert!(
            path.starts_with("out"),
            "{} was written outside the output folder",
            path.display()
        );
    }
    let parent = sandbox.root().parent().expect("temp dir has a parent");
    assert!(!parent.join("evil.safetensors").exists(), "escaped with ..");

    let downloads = sandbox.downloads();
    for path in &downloads {
        for component in path.components() {
            let Component::Normal(name) = component else {
                panic!("odd component in {}", path.display());
            };
            assert!(
                name.len() <= MAX_NAME_BYTES,
                "{} bytes: {}",
                name.len(),
                path.display()
            );
            let stem = name.to_string_lossy().to_ascii_uppercase();
            assert!(
                !stem.starts_with("CON.") && stem != "CON",
                "reserved Windows name: {}",
                path.display()
            );
        }
    }

    let model_files: Vec<_> = downloads
        .iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            !name.ends_with(".civitai.info")
        })
        .collect();
    let got: BTreeSet<String> = model_files
        .iter()
        .map(|p| sha256_file(&sandbox.out.join(p)))
        .collect();
    let want: BTreeSet<String> = m.versions[0]
        .files
        .iter()
        .map(|f| content_sha256(f.seed, f.size))
        .collect();
    assert_eq!(
        got, want,
        "every file, the twins included, is on disk once: {model_files:?}"
    );
    assert_eq!(
        model_files.len(),
        m.versions[0].files.len(),
        "{model_files:?}"
    );
}

#[test]
fn the_api_key_is_written_nowhere() {
    let m = model(92, "LORA", 64 * KIB);
    let server = serve(vec![m.clone()], Knobs::default());
    let sandbox = Sandbox::new();
    let mut cmd = download(&server, &sandbox);
    cmd.args(["92", "--api-key", KEY, "--json", "-v"]);
    let ran = run(cmd);
    ran.expect_code(0);
    assert!(sandbox.out.join(&first_file(&m).name).is_file());
    assert_key_written_nowhere(&ran, &sandbox);
}
