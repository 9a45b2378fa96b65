//! Scan roots from ComfyUI's `extra_model_paths.yaml`, read the way ComfyUI reads it
//! (`utils/extra_config.py`), so a user who already told ComfyUI where the models are does not
//! have to tell us again.
//!
//! The file has named sections (`a1111:`, `comfyui:`, anything). Each may set `base_path` (`~` and
//! `$VARS` expanded, relative to the yaml file's folder), `is_default`, and `folder_key: path`
//! pairs whose value may hold several paths, one per line. Each path is joined to `base_path`, or,
//! without one, taken relative to the yaml file's folder. `custom_nodes` names code, not models,
//! and is left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

/// Keys of a section that are settings, not model folders.
const SETTINGS_KEYS: [&str; 2] = ["base_path", "is_default"];

/// Keys naming folders that hold no models of their own.
const NOT_MODEL_FOLDERS: [&str; 1] = ["custom_nodes"];

/// One model folder the yaml names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComfyFolder {
    /// The section it is in (`a1111`, `comfyui`, …).
    pub section: String,
    /// Its ComfyUI folder key (`loras`, `checkpoints`, …).
    pub key: String,
    /// The folder, absolute.
    pub path: PathBuf,
}

/// The yaml could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ComfyYamlError {
    /// Reading it failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The yaml file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// It is not YAML, or not ComfyUI's layout of sections and folders.
    #[error("{} is not a ComfyUI extra_model_paths.yaml: {reason}", path.display())]
    Format {
        /// The yaml file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The model folders named in the yaml file at `path`, in file order. `env` looks up environment
/// variables (for `$VAR` in `base_path`); `home` is `~`.
pub fn folders(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<Vec<ComfyFolder>, ComfyYamlError> {
    let text = std::fs::read_to_string(path).map_err(|source| ComfyYamlError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let yaml_dir = civitai_dl_engine::fs::parent_dir(&absolute);
    parse(&text, yaml_dir, env, home).map_err(|reason| ComfyYamlError::Format {
        path: path.to_path_buf(),
        reason,
    })
}

/// [`folders`] on the yaml's text, with `yaml_dir` the folder relative paths start from.
pub fn parse(
    text: &str,
    yaml_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<Vec<ComfyFolder>, String> {
    let document: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let sections = match document {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(sections) => sections,
        _ => return Err("the top level must be named sections".into()),
    };
    let mut found = Vec::new();
    for (name, section) in sections {
        let name = scalar(&name).ok_or("a section name must be text")?;
        let entries: BTreeMap<String, Value> = match section {
            Value::Null => continue,
            Value::Mapping(entries) => entries
                .into_iter()
                .filter_map(|(k, v)| scalar(&k).map(|k| (k, v)))
                .collect(),
            _ => return Err(format!("section {name} must hold `key: path` pairs")),
        };
        let base = entries
            .get("base_path")
            .and_then(scalar)
            .map(|base| yaml_dir.join(expand(&base, env, home)));
        // File order matters to ComfyUI only for which folder is the default; ours is sorted
        // within a section, which is stable across runs.
        for (key, value) in &entries {
            if SETTINGS_KEYS.contains(&key.as_str()) || NOT_MODEL_FOLDERS.contains(&key.as_str()) {
                continue;
            }
            let Some(value) = scalar(value) else {
                return Err(format!(
                    "{name}.{key} must be a path (or paths, one per line)"
                ));
            };
            for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let folder = match &base {
                    Some(base) => base.join(line),
                    None => yaml_dir.join(line),
                };
                found.push(ComfyFolder {
                    section: name.clone(),
                    key: key.clone(),
                    path: normalize(&folder),
                });
            }
        }
    }
    Ok(found)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `~` and `$VAR` / `${VAR}` as Python's `expanduser` and `expandvars` do: an unknown variable
/// is left as written.
fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>, home: Option<&Path>) -> String {
    let text = match (text.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with(['/', '\\']) => {
            format!("{}{rest}", home.display())
        }
        _ => text.to_string(),
    };
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match env(name).filter(|_| !name.is_empty()) {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[at..rest.len() - tail.len()]),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// `a/./b/../c` → `a/c`, without touching the disk (the folder may not exist).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "MODELS").then(|| "/srv/models".to_string())
    }

    fn paths(text: &str) -> Vec<(String, String)> {
        parse(
            text,
            Path::new("/home/u/ComfyUI"),
            &env,
            Some(Path::new("/home/u")),
        )
        .unwrap()
        .into_iter()
        .map(|f| (f.key, f.path.display().to_string()))
        .collect()
    }

    #[test]
    fn the_shipped_a1111_example_gives_its_folders() {
        let yaml = "
a1111:
    base_path: path/to/stable-diffusion-webui/
    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    upscale_models: |
                  models/ESRGAN
                  models/RealESRGAN
                  models/SwinIR
    embeddings: embeddings
    hypernetworks: models/hypernetworks
    controlnet: models/ControlNet
";
        let found = paths(yaml);
        let webui = "/home/u/ComfyUI/path/to/stable-diffusion-webui";
        assert!(found.contains(&("loras".into(), format!("{webui}/models/LyCORIS"))));
        assert!(found.contains(&("embeddings".into(), format!("{webui}/embeddings"))));
        assert_eq!(found.len(), 11);
    }

    #[test]
    fn base_paths_expand_home_and_variables_and_custom_nodes_are_left_out() {
        let yaml = "
shared:
    base_path: $MODELS/sd
    is_default: true
    loras: loras
    custom_nodes: nodes
mine:
    base_path: ~/store
    checkpoints: ../elsewhere/ckpt
other:
    base_path: ${UNSET}/x
    vae: vae
plain:
    vae: /abs/vae
empty:
";
        assert_eq!(
            paths(yaml),
            [
                ("loras".to_string(), "/srv/models/sd/loras".to_string()),
                ("checkpoints".into(), "/home/u/elsewhere/ckpt".into()),
                ("vae".into(), "/home/u/ComfyUI/${UNSET}/x/vae".into()),
                ("vae".into(), "/abs/vae".into()),
            ]
        );
    }

    #[test]
    fn a_file_that_is_not_sections_of_paths_is_refused_with_a_reason() {
        for bad in [
            "- a\n- b\n",
            "a1111: [1, 2]\n",
            "a1111:\n  loras: [x]\n",
            "a: b: c",
        ] {
            assert!(parse(bad, Path::new("/"), &env, None).is_err(), "{bad}");
        }
        assert!(parse("", Path::new("/"), &env, None).unwrap().is_empty());
    }
}
