//! File names and folders for downloaded files.
//!
//! Every name we write to disk comes from someone else: `files[].name` is computed by Civitai from
//! whatever the uploader typed (LoRA names keep spaces, Unicode and quotes), and the
//! `Content-Disposition` fallback comes straight from a storage host. Both are hostile until
//! sanitised here, so that no download can escape the output folder, collide with a sibling, or
//! produce a name Windows refuses. The folder layouts mirror where AUTOMATIC1111 and ComfyUI look for
//! each model type, so a download lands where the UI finds it.

use std::path::{Component, Path, PathBuf};

/// Used when nothing usable is left of a hostile name (`..`, empty, only control characters).
const FALLBACK_FILE_NAME: &str = "download";

/// The per-component limit of ext4, APFS and NTFS is 255 bytes (NTFS counts UTF-16 units, which is
/// never more than the UTF-8 byte count). Names are kept shorter than that because civitai-dl adds
/// to them: `.part.json`, `.unverified`, `_<file id>`, `.preview.10.jpeg`, `.civitai.info`.
const MAX_FILE_NAME_BYTES: usize = 255 - RESERVED_SUFFIX_BYTES;

/// Room left for the longest suffix civitai-dl appends to a sanitised name.
const RESERVED_SUFFIX_BYTES: usize = 40;

/// Extensions up to this length are kept when a name is shortened; a longer "extension" is just a
/// dot in the middle of a long name and is not worth preserving.
const MAX_KEPT_EXTENSION_BYTES: usize = 32;

/// Characters Windows refuses in file names (the path separators are handled before).
const WINDOWS_FORBIDDEN_CHARS: [char; 7] = ['<', '>', ':', '"', '|', '?', '*'];

/// Device names Windows reserves in every folder, with or without an extension (Microsoft's
/// "Naming Files, Paths, and Namespaces": `COM`/`LPT` with 0-9 and the superscript digits ¹²³,
/// and the console's `CONIN$`/`CONOUT$`).
const WINDOWS_DEVICE_NAMES: [&str; 32] = [
    "CON",
    "PRN",
    "AUX",
    "NUL",
    "CONIN$",
    "CONOUT$",
    "COM0",
    "COM1",
    "COM2",
    "COM3",
    "COM4",
    "COM5",
    "COM6",
    "COM7",
    "COM8",
    "COM9",
    "COM\u{b9}",
    "COM\u{b2}",
    "COM\u{b3}",
    "LPT0",
    "LPT1",
    "LPT2",
    "LPT3",
    "LPT4",
    "LPT5",
    "LPT6",
    "LPT7",
    "LPT8",
    "LPT9",
    "LPT\u{b9}",
    "LPT\u{b2}",
    "LPT\u{b3}",
];

/// Errors raised while placing a file under the output folder.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamingError {
    /// The relative path is absolute, has a drive prefix or climbs with `..`.
    #[error("refusing path '{}': it would leave the output folder", path.display())]
    Escapes {
        /// The offending relative path, as given.
        path: PathBuf,
    },
}

/// Turn an API- or header-supplied file name into one safe path component. Never returns an empty
/// string, never a path separator, never `.`/`..`.
///
/// Control characters are removed (they are invisible, so a `_` would only add noise); the
/// characters Windows forbids become `_`. Names longer than [`MAX_FILE_NAME_BYTES`] are shortened on a character
/// boundary, keeping a short extension such as `.safetensors`.
pub fn sanitize_file_name(raw: &str) -> String {
    let component = strip_drive_letter(last_component(raw));
    let cleaned: String = component
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| {
            if WINDOWS_FORBIDDEN_CHARS.contains(&c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let safe = avoid_device_name(trim_for_windows(&cleaned));
    let shortened = shorten(&safe);
    if shortened.is_empty() {
        FALLBACK_FILE_NAME.to_owned()
    } else {
        shortened
    }
}

/// Uploaders and headers may send a whole path; only its last component is a file name.
fn last_component(raw: &str) -> &str {
    raw.rsplit(['/', '\\']).next().unwrap_or(raw)
}

/// `C:name` is a drive-relative path on Windows, not a file name.
fn strip_drive_letter(name: &str) -> &str {
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(letter), Some(':')) if letter.is_ascii_alphabetic() => chars.as_str(),
        _ => name,
    }
}

/// Windows silently drops trailing dots and spaces, so `name. ` and `name` would be the same file;
/// trimming them also turns `.` and `..` into the empty string.
fn trim_for_windows(name: &str) -> &str {
    name.trim_start()
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
}

/// `CON`, `con.safetensors` or `NUL .txt` open a device on Windows instead of a file.
fn avoid_device_name(name: &str) -> String {
    let before_dot = name.split('.').next().unwrap_or(name).trim_end();
    let is_device = WINDOWS_DEVICE_NAMES
        .iter()
        .any(|device| device.eq_ignore_ascii_case(before_dot));
    if is_device {
        format!("_{name}")
    } else {
        name.to_owned()
    }
}

/// Fit a name into [`MAX_FILE_NAME_BYTES`], keeping its extension so the UI still recognises it.
fn shorten(name: &str) -> String {
    if name.len() <= MAX_FILE_NAME_BYTES {
        return name.to_owned();
    }
    let (stem, extension) = kept_extension(name);
    trim_for_windows(&fit(stem, extension)).to_owned()
}

/// The extension worth keeping through shortening, or none when it is implausibly long.
fn kept_extension(name: &str) -> (&str, &str) {
    let (stem, extension) = split_extension(name);
    if extension.len() <= MAX_KEPT_EXTENSION_BYTES {
        (stem, extension)
    } else {
        (name, "")
    }
}

/// `head` cut on a character boundary so that `head + tail` fits in [`MAX_FILE_NAME_BYTES`].
fn fit(head: &str, tail: &str) -> String {
    let budget = MAX_FILE_NAME_BYTES.saturating_sub(tail.len());
    let cut = (0..=budget.min(head.len()))
        .rev()
        .find(|&index| head.is_char_boundary(index))
        .unwrap_or(0);
    format!("{}{tail}", &head[..cut])
}

/// Split "name.ext" → ("name", ".ext"); multi-part model extensions are not special ("a.tar.gz" →
/// ("a.tar", ".gz")). A leading dot does not start an extension (".hidden" → (".hidden", "")).
pub fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    }
}

/// The path of a sidecar next to a model file: `<stem>.<suffix>`, e.g. `<stem>.civitai.info` or
/// `<stem>.preview.jpeg`, the names the A1111 Civitai Helper and ComfyUI LoRA managers look for.
pub fn sidecar_path(model_file: &Path, suffix: &str) -> PathBuf {
    let file_name = model_file
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    let (stem, _extension) = split_extension(&file_name);
    model_file.with_file_name(format!("{stem}.{suffix}"))
}

/// Make `name` unique among names already taken in the same folder by inserting the file id before the
/// extension: "flux_dev.safetensors" with id 42 → "flux_dev_42.safetensors". The result stays within
/// the file-name length limit. Compare names with [`file_name_key`] to decide whether this is needed.
pub fn disambiguate(name: &str, file_id: u64) -> String {
    let (stem, extension) = kept_extension(name);
    fit(stem, &format!("_{file_id}{extension}"))
}

/// The key under which two file names clash in one folder: Windows and macOS file systems ignore
/// case, so `Flux.safetensors` and `flux.safetensors` are the same file there.
pub fn file_name_key(name: &str) -> String {
    name.to_lowercase()
}

/// Folder layouts. Flat puts everything in the output dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Every file directly in the output folder.
    Flat,
    /// The folders of the AUTOMATIC1111 web UI (and Forge), output folder = web UI root.
    A1111,
    /// The folders of ComfyUI, output folder = ComfyUI root.
    Comfyui,
}

/// What a file is, as far as a UI's folder structure cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelKind {
    Checkpoint,
    Lora,
    TextualInversion,
    Hypernetwork,
    AestheticGradient,
    Vae,
    Controlnet,
    Upscaler,
    MotionModule,
    Poses,
    Wildcards,
    Workflows,
    TextEncoder,
    DiffusionModel,
    ClipVision,
    Detection,
    Other,
}

impl ModelKind {
    /// Recognise a model type or file type as the API spells it ("LORA", "Text Encoder"), ignoring
    /// case, spaces, `_` and `-`, since the two enums spell the same thing differently.
    fn from_api_name(name: &str) -> Option<Self> {
        let normalized: String = name
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let kind = match normalized.as_str() {
            "checkpoint" => Self::Checkpoint,
            "lora" | "locon" | "dora" | "lycoris" => Self::Lora,
            "textualinversion" => Self::TextualInversion,
            "hypernetwork" => Self::Hypernetwork,
            "aestheticgradient" => Self::AestheticGradient,
            "vae" => Self::Vae,
            "controlnet" => Self::Controlnet,
            "upscaler" => Self::Upscaler,
            "motionmodule" => Self::MotionModule,
            "poses" => Self::Poses,
            "wildcards" => Self::Wildcards,
            "workflows" | "comfyworkflows" => Self::Workflows,
            "textencoder" | "clip" => Self::TextEncoder,
            "unet" | "diffusionmodel" => Self::DiffusionModel,
            "clipvision" | "visionencoder" => Self::ClipVision,
            "detection" => Self::Detection,
            _ => return None,
        };
        Some(kind)
    }

    /// A file whose type names a separate component (the VAE or text encoder shipped with a
    /// checkpoint) belongs in that component's folder, not the model's.
    fn of_file(model_type: &str, file_type: &str) -> Self {
        let component = Self::from_api_name(file_type).filter(|kind| {
            matches!(
                kind,
                Self::Vae | Self::TextEncoder | Self::DiffusionModel | Self::ClipVision
            )
        });
        component
            .or_else(|| Self::from_api_name(model_type))
            .unwrap_or(Self::Other)
    }

    /// The folder (A1111, ComfyUI) each UI or its usual extension reads this kind from.
    fn folders(self) -> (&'static str, &'static str) {
        match self {
            Self::Checkpoint => ("models/Stable-diffusion", "models/checkpoints"),
            Self::Lora => ("models/Lora", "models/loras"),
            Self::TextualInversion => ("embeddings", "models/embeddings"),
            Self::Hypernetwork => ("models/hypernetworks", "models/hypernetworks"),
            Self::AestheticGradient => (
                "extensions/stable-diffusion-webui-aesthetic-gradients/aesthetic_embeddings",
                "models/other",
            ),
            Self::Vae => ("models/VAE", "models/vae"),
            Self::Controlnet => ("models/ControlNet", "models/controlnet"),
            Self::Upscaler => ("models/ESRGAN", "models/upscale_models"),
            Self::MotionModule => (
                "extensions/sd-webui-animatediff/model",
                "models/animatediff_models",
            ),
            Self::Poses => ("models/Poses", "models/poses"),
            Self::Wildcards => (
                "extensions/sd-dynamic-prompts/wildcards",
                "custom_nodes/ComfyUI-Impact-Pack/custom_wildcards",
            ),
            Self::Workflows => ("models/Workflows", "user/default/workflows"),
            Self::TextEncoder => ("models/text_encoder", "models/text_encoders"),
            Self::DiffusionModel => ("models/Stable-diffusion", "models/diffusion_models"),
            Self::ClipVision => ("models/clip_vision", "models/clip_vision"),
            Self::Detection => ("models/adetailer", "models/ultralytics/bbox"),
            Self::Other => ("models/other", "models/other"),
        }
    }
}

/// Sub-directory (relative) for a model type string as the API spells it ("Checkpoint", "LORA",
/// "LoCon", "TextualInversion", …; unknown types go to `models/other`) and the file type: a "VAE",
/// "Text Encoder", "UNet" or "CLIPVision" file of a checkpoint goes to that component's folder.
/// [`Layout::Flat`] gives the empty path.
pub fn layout_dir(layout: Layout, model_type: &str, file_type: &str) -> PathBuf {
    let (a1111, comfyui) = ModelKind::of_file(model_type, file_type).folders();
    match layout {
        Layout::Flat => PathBuf::new(),
        Layout::A1111 => PathBuf::from(a1111),
        Layout::Comfyui => PathBuf::from(comfyui),
    }
}

/// Join a relative path under `root` refusing anything that would escape it (absolute paths, `..`,
/// prefixes). Returns an error (`NamingError::Escapes { path }`) instead of a path outside.
///
/// The check is lexical: symlinks inside `root` are trusted, as they were put there by the user.
pub fn join_inside(root: &Path, relative: &Path) -> Result<PathBuf, NamingError> {
    let mut joined = root.to_path_buf();
    for component in relative.components() {
        match component {
            Component::Normal(part) => joined.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(NamingError::Escapes {
                    path: relative.to_path_buf(),
                });
            }
        }
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_file_name_table() {
        let cases = [
            ("flux_dev.safetensors", "flux_dev.safetensors"),
            ("../../x", "x"),
            ("/etc/passwd", "passwd"),
            ("C:\\Windows\\x.dll", "x.dll"),
            ("C:x.dll", "x.dll"),
            ("C:", FALLBACK_FILE_NAME),
            ("dir/", FALLBACK_FILE_NAME),
            ("..", FALLBACK_FILE_NAME),
            (".", FALLBACK_FILE_NAME),
            ("", FALLBACK_FILE_NAME),
            ("   ", FALLBACK_FILE_NAME),
            ("\u{7}\u{7f}", FALLBACK_FILE_NAME),
            ("CON", "_CON"),
            ("con.safetensors", "_con.safetensors"),
            ("LPT9.ckpt", "_LPT9.ckpt"),
            ("COM1.txt", "_COM1.txt"),
            ("nul .txt", "_nul .txt"),
            ("CONSOLE.txt", "CONSOLE.txt"),
            ("COM10.txt", "COM10.txt"),
            ("COM0.txt", "_COM0.txt"),
            ("lpt0", "_lpt0"),
            ("COM\u{b9}.pt", "_COM\u{b9}.pt"),
            ("lpt\u{b3}.ckpt", "_lpt\u{b3}.ckpt"),
            ("CONIN$", "_CONIN$"),
            ("conout$.txt", "_conout$.txt"),
            ("a\u{7}b", "ab"),
            ("a\u{7f}b\u{85}c\u{9f}d", "abcd"),
            ("tab\there", "tabhere"),
            ("name. ", "name"),
            ("name...", "name"),
            ("  padded.pt  ", "padded.pt"),
            ("a<b>c:d\"e|f?g*h.pt", "a_b_c_d_e_f_g_h.pt"),
            ("美少女 LoRA v2.safetensors", "美少女 LoRA v2.safetensors"),
            (".hidden", ".hidden"),
        ];
        for (raw, expected) in cases {
            assert_eq!(sanitize_file_name(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn long_names_are_shortened_keeping_the_extension() {
        let cases = [
            format!("{}.safetensors", "a".repeat(300)),
            format!("{}.safetensors", "美".repeat(100)),
            format!("{}.safetensors", "ä".repeat(150)),
        ];
        for raw in cases {
            let sanitized = sanitize_file_name(&raw);
            assert!(
                sanitized.len() <= MAX_FILE_NAME_BYTES,
                "{} bytes",
                sanitized.len()
            );
            assert!(sanitized.ends_with(".safetensors"), "{sanitized}");
            assert!(sanitized.len() > MAX_FILE_NAME_BYTES - 4, "cut too much");
            assert!(raw.starts_with(sanitized.trim_end_matches(".safetensors")));
        }
    }

    #[test]
    fn long_names_without_a_short_extension_are_cut_and_stay_valid() {
        let cases = [
            ("x".repeat(300), "x".repeat(MAX_FILE_NAME_BYTES)),
            (
                format!("a.{}", "b".repeat(300)),
                format!("a.{}", "b".repeat(MAX_FILE_NAME_BYTES - 2)),
            ),
            (
                format!("{}{}", ".".repeat(260), "x".repeat(40)),
                FALLBACK_FILE_NAME.into(),
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(sanitize_file_name(&raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn split_extension_table() {
        let cases = [
            ("name.ext", ("name", ".ext")),
            ("a.tar.gz", ("a.tar", ".gz")),
            ("noext", ("noext", "")),
            (".hidden", (".hidden", "")),
            ("", ("", "")),
        ];
        for (name, expected) in cases {
            assert_eq!(split_extension(name), expected, "name {name:?}");
        }
    }

    #[test]
    fn sidecar_path_replaces_the_extension() {
        let cases = [
            (
                "out/lora.safetensors",
                "civitai.info",
                "out/lora.civitai.info",
            ),
            (
                "out/lora.safetensors",
                "preview.jpeg",
                "out/lora.preview.jpeg",
            ),
            ("a.b.ckpt", "civitai.info", "a.b.civitai.info"),
            ("noext", "preview.png", "noext.preview.png"),
        ];
        for (model, suffix, expected) in cases {
            assert_eq!(
                sidecar_path(Path::new(model), suffix),
                PathBuf::from(expected)
            );
        }
    }

    #[test]
    fn disambiguate_inserts_the_file_id() {
        let cases = [
            ("flux_dev.safetensors", 42, "flux_dev_42.safetensors"),
            ("noext", 7, "noext_7"),
            ("a.tar.gz", 1, "a.tar_1.gz"),
        ];
        for (name, id, expected) in cases {
            assert_eq!(disambiguate(name, id), expected);
        }
    }

    #[test]
    fn disambiguate_keeps_long_names_within_the_limit() {
        let name = sanitize_file_name(&format!("{}.safetensors", "美".repeat(100)));
        let unique = disambiguate(&name, 123_456);
        assert!(unique.len() <= MAX_FILE_NAME_BYTES);
        assert!(unique.ends_with("_123456.safetensors"), "{unique}");
    }

    #[test]
    fn file_name_key_ignores_case() {
        assert_eq!(
            file_name_key("Flux.SafeTensors"),
            file_name_key("flux.safetensors")
        );
        assert_ne!(file_name_key("flux_a.pt"), file_name_key("flux_b.pt"));
    }

    #[test]
    fn layout_dir_table() {
        let cases = [
            (Layout::Flat, "Checkpoint", "Model", ""),
            (Layout::Flat, "LORA", "VAE", ""),
            (
                Layout::A1111,
                "Checkpoint",
                "Model",
                "models/Stable-diffusion",
            ),
            (
                Layout::A1111,
                "Checkpoint",
                "Pruned Model",
                "models/Stable-diffusion",
            ),
            (Layout::A1111, "Checkpoint", "VAE", "models/VAE"),
            (Layout::A1111, "LORA", "Model", "models/Lora"),
            (Layout::A1111, "LoCon", "Model", "models/Lora"),
            (Layout::A1111, "DoRA", "Model", "models/Lora"),
            (Layout::A1111, "TextualInversion", "Negative", "embeddings"),
            (
                Layout::A1111,
                "Hypernetwork",
                "Model",
                "models/hypernetworks",
            ),
            (Layout::A1111, "VAE", "Model", "models/VAE"),
            (Layout::A1111, "Controlnet", "Model", "models/ControlNet"),
            (Layout::A1111, "Upscaler", "Model", "models/ESRGAN"),
            (Layout::A1111, "Poses", "Archive", "models/Poses"),
            (Layout::A1111, "SomethingNew", "Model", "models/other"),
            (Layout::Comfyui, "Checkpoint", "Model", "models/checkpoints"),
            (Layout::Comfyui, "Checkpoint", "VAE", "models/vae"),
            (
                Layout::Comfyui,
                "Checkpoint",
                "Text Encoder",
                "models/text_encoders",
            ),
            (
                Layout::Comfyui,
                "Checkpoint",
                "UNet",
                "models/diffusion_models",
            ),
            (Layout::Comfyui, "lora", "Model", "models/loras"),
            (
                Layout::Comfyui,
                "TextualInversion",
                "Model",
                "models/embeddings",
            ),
            (
                Layout::Comfyui,
                "Hypernetwork",
                "Model",
                "models/hypernetworks",
            ),
            (Layout::Comfyui, "Controlnet", "Model", "models/controlnet"),
            (
                Layout::Comfyui,
                "Upscaler",
                "Model",
                "models/upscale_models",
            ),
            (
                Layout::Comfyui,
                "MotionModule",
                "Model",
                "models/animatediff_models",
            ),
            (
                Layout::Comfyui,
                "Workflows",
                "Archive",
                "user/default/workflows",
            ),
            (
                Layout::Comfyui,
                "ComfyWorkflows",
                "Archive",
                "user/default/workflows",
            ),
            (Layout::Comfyui, "", "", "models/other"),
        ];
        for (layout, model_type, file_type, expected) in cases {
            assert_eq!(
                layout_dir(layout, model_type, file_type),
                PathBuf::from(expected),
                "{layout:?} {model_type:?} {file_type:?}"
            );
        }
    }

    #[test]
    fn layout_parses_from_config_spelling() {
        let cases = [
            ("flat", Layout::Flat),
            ("a1111", Layout::A1111),
            ("comfyui", Layout::Comfyui),
        ];
        for (text, expected) in cases {
            let parsed: Layout = serde_json::from_str(&format!("\"{text}\"")).expect(text);
            assert_eq!(parsed, expected);
            #[cfg(feature = "clap")]
            assert_eq!(
                <Layout as clap::ValueEnum>::from_str(text, false),
                Ok(expected)
            );
        }
    }

    #[test]
    fn join_inside_accepts_relative_paths() {
        let cases = [
            ("models/Lora", "/out/models/Lora"),
            ("./a/./b.pt", "/out/a/b.pt"),
            ("", "/out"),
        ];
        for (relative, expected) in cases {
            let joined = join_inside(Path::new("/out"), Path::new(relative));
            assert_eq!(joined, Ok(PathBuf::from(expected)), "relative {relative:?}");
        }
    }

    #[test]
    fn join_inside_rejects_escapes() {
        for relative in ["../x", "a/../../x", "a/..", "/etc/passwd", "/"] {
            let joined = join_inside(Path::new("/out"), Path::new(relative));
            assert_eq!(
                joined,
                Err(NamingError::Escapes {
                    path: PathBuf::from(relative)
                }),
                "relative {relative:?}"
            );
        }
    }
}
