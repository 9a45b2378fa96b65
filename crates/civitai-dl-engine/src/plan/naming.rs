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

/// Folder layouts: where each kind of file goes under the app's folder (`--root`, or `-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Every file directly in the output folder.
    Flat,
    /// The folders of the AUTOMATIC1111 web UI, output folder = web UI root.
    A1111,
    /// The folders of Forge, output folder = Forge root: A1111's, and Forge also loads text
    /// encoders and UNet-only checkpoints from them.
    Forge,
    /// The folders of ComfyUI, output folder = ComfyUI root.
    Comfyui,
    /// The folders of SwarmUI under its model root `Models/`, output folder = SwarmUI root.
    Swarm,
    /// Our own tree `<type>/<base model>/` for InvokeAI to register in place: InvokeAI now owns
    /// its `models/` folder (it moves installs into `models/<random key>/`), so nothing else may
    /// write there.
    Invoke,
}

impl Layout {
    /// Every layout, in the order the help lists them.
    pub const ALL: [Layout; 6] = [
        Layout::Flat,
        Layout::A1111,
        Layout::Forge,
        Layout::Comfyui,
        Layout::Swarm,
        Layout::Invoke,
    ];

    /// The name on the command line and in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Flat => "flat",
            Layout::A1111 => "a1111",
            Layout::Forge => "forge",
            Layout::Comfyui => "comfyui",
            Layout::Swarm => "swarm",
            Layout::Invoke => "invoke",
        }
    }

    /// Whether this layout serves SwarmUI, which cannot show `.webp`, `.gif` or video previews.
    pub fn is_swarm(self) -> bool {
        self == Layout::Swarm
    }
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

/// What decides a file's folder: its model's type, its own type, its format and the base model.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileClass<'a> {
    /// `model.type` as the API spells it ("Checkpoint", "LORA", …).
    pub model_type: &'a str,
    /// `files[].type` ("Model", "VAE", "Text Encoder", "UNet", "Pruned Model", …).
    pub file_type: &'a str,
    /// `files[].metadata.format` ("SafeTensor", "GGUF", …), if any.
    pub format: Option<&'a str>,
    /// The version's `baseModel` ("SDXL 1.0", "Flux.1 D", …), if any.
    pub base_model: Option<&'a str>,
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

    /// The file's own type first: the VAE, text encoder or UNet shipped inside a checkpoint
    /// version belongs in that component's folder, not the model's, and training data (the
    /// uploader's dataset archive) is nothing any app loads. A GGUF "checkpoint" is a quantised
    /// UNet without VAE or text encoders: ComfyUI's checkpoint loader cannot read it, its GGUF
    /// loader looks in `diffusion_models`.
    fn of_file(file: &FileClass<'_>) -> Self {
        if file.file_type.eq_ignore_ascii_case("training data") {
            return Self::Other;
        }
        let component = Self::from_api_name(file.file_type).filter(|kind| {
            matches!(
                kind,
                Self::Vae | Self::TextEncoder | Self::DiffusionModel | Self::ClipVision
            )
        });
        let kind = component
            .or_else(|| Self::from_api_name(file.model_type))
            .unwrap_or(Self::Other);
        let gguf = file.format.is_some_and(|f| f.eq_ignore_ascii_case("gguf"));
        if kind == Self::Checkpoint && gguf {
            Self::DiffusionModel
        } else {
            kind
        }
    }

    /// A1111 and Forge read the same folders; Forge also loads the text encoders and UNet-only
    /// files that A1111 would ignore from them.
    fn a1111_folder(self) -> &'static str {
        match self {
            Self::Checkpoint | Self::DiffusionModel => "models/Stable-diffusion",
            Self::Lora => "models/Lora",
            Self::TextualInversion => "embeddings",
            Self::Hypernetwork => "models/hypernetworks",
            Self::AestheticGradient => {
                "extensions/stable-diffusion-webui-aesthetic-gradients/aesthetic_embeddings"
            }
            Self::Vae => "models/VAE",
            Self::Controlnet => "models/ControlNet",
            Self::Upscaler => "models/ESRGAN",
            Self::MotionModule => "extensions/sd-webui-animatediff/model",
            Self::Poses => "models/Poses",
            Self::Wildcards => "extensions/sd-dynamic-prompts/wildcards",
            Self::Workflows => "models/Workflows",
            Self::TextEncoder => "models/text_encoder",
            Self::ClipVision => "models/clip_vision",
            Self::Detection => "models/adetailer",
            Self::Other => "models/other",
        }
    }

    fn comfyui_folder(self) -> &'static str {
        match self {
            Self::Checkpoint => "models/checkpoints",
            Self::Lora => "models/loras",
            Self::TextualInversion => "models/embeddings",
            Self::Hypernetwork => "models/hypernetworks",
            Self::Vae => "models/vae",
            Self::Controlnet => "models/controlnet",
            Self::Upscaler => "models/upscale_models",
            Self::MotionModule => "models/animatediff_models",
            Self::AestheticGradient | Self::Other => "models/other",
            Self::Poses => "models/poses",
            Self::Wildcards => "custom_nodes/ComfyUI-Impact-Pack/custom_wildcards",
            Self::Workflows => "user/default/workflows",
            Self::TextEncoder => "models/text_encoders",
            Self::DiffusionModel => "models/diffusion_models",
            Self::ClipVision => "models/clip_vision",
            Self::Detection => "models/ultralytics/bbox",
        }
    }

    /// SwarmUI's defaults under its model root `Models/` (its `Settings.cs` folder names; the
    /// folders it forwards to its ComfyUI backend for the rest).
    fn swarm_folder(self) -> &'static str {
        match self {
            Self::Checkpoint => "Models/Stable-Diffusion",
            Self::DiffusionModel => "Models/diffusion_models",
            Self::Lora => "Models/Lora",
            Self::TextualInversion => "Models/Embeddings",
            Self::Hypernetwork => "Models/hypernetworks",
            Self::Vae => "Models/VAE",
            Self::Controlnet => "Models/controlnet",
            Self::Upscaler => "Models/upscale_models",
            Self::TextEncoder => "Models/text_encoders",
            Self::ClipVision => "Models/clip_vision",
            Self::Detection => "Models/yolov8",
            Self::Wildcards => "Data/Wildcards",
            Self::MotionModule
            | Self::Poses
            | Self::Workflows
            | Self::AestheticGradient
            | Self::Other => "Models/other",
        }
    }

    /// InvokeAI's model type names, so the tree reads like what InvokeAI will call the files.
    fn invoke_type(self) -> &'static str {
        match self {
            Self::Checkpoint | Self::DiffusionModel => "main",
            Self::Lora => "lora",
            Self::TextualInversion => "embedding",
            Self::Vae => "vae",
            Self::Controlnet => "controlnet",
            Self::TextEncoder => "text_encoder",
            Self::ClipVision => "clip_vision",
            Self::Upscaler => "upscaler",
            Self::Hypernetwork => "hypernetwork",
            Self::MotionModule => "motion_module",
            Self::Detection => "detection",
            Self::Poses
            | Self::Wildcards
            | Self::Workflows
            | Self::AestheticGradient
            | Self::Other => "other",
        }
    }
}

/// InvokeAI's base-model names for Civitai's `baseModel` families (`sd-1`, `sdxl`, `flux`, …);
/// a family it does not know keeps a folder of its own rather than being filed under another.
fn invoke_base(base_model: Option<&str>) -> String {
    let Some(base) = base_model.map(str::trim).filter(|b| !b.is_empty()) else {
        return "any".to_owned();
    };
    let lower = base.to_ascii_lowercase();
    let family = if lower.starts_with("sd 1") {
        "sd-1"
    } else if lower.starts_with("sd 2") {
        "sd-2"
    } else if lower.starts_with("sd 3") {
        "sd-3"
    } else if lower.starts_with("sdxl") || is_sdxl_family(&lower) {
        "sdxl"
    } else if lower.starts_with("flux") {
        "flux"
    } else {
        return sanitize_file_name(&lower.replace([' ', '.'], "-"));
    };
    family.to_owned()
}

/// Base models built on the SDXL architecture under another name (spec'd as SDXL for A1111's
/// `sd version` too): their LoRAs load with SDXL checkpoints.
pub fn is_sdxl_family(base_model_lowercase: &str) -> bool {
    ["pony", "illustrious", "noobai"]
        .iter()
        .any(|family| base_model_lowercase.starts_with(family))
}

/// Sub-directory (relative) for a file: by its own type first (a "VAE", "Text Encoder", "UNet"
/// or "CLIPVision" file of a checkpoint goes to that component's folder), then its model's type
/// as the API spells it ("Checkpoint", "LORA", …; unknown types go to an `other` folder).
/// [`Layout::Flat`] gives the empty path; [`Layout::Invoke`] gives `<type>/<base model>`.
pub fn layout_dir(layout: Layout, file: &FileClass<'_>) -> PathBuf {
    let kind = ModelKind::of_file(file);
    match layout {
        Layout::Flat => PathBuf::new(),
        Layout::A1111 | Layout::Forge => PathBuf::from(kind.a1111_folder()),
        Layout::Comfyui => PathBuf::from(kind.comfyui_folder()),
        Layout::Swarm => PathBuf::from(kind.swarm_folder()),
        Layout::Invoke => Path::new(kind.invoke_type()).join(invoke_base(file.base_model)),
    }
}

/// Whether files of this model and file type land in a folder A1111 scans for embeddings, where
/// any image not named `.preview.` is taken for an image embedding.
pub fn is_embedding(file: &FileClass<'_>) -> bool {
    ModelKind::of_file(file) == ModelKind::TextualInversion
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
            let class = FileClass {
                model_type,
                file_type,
                ..FileClass::default()
            };
            assert_eq!(
                layout_dir(layout, &class),
                PathBuf::from(expected),
                "{layout:?} {model_type:?} {file_type:?}"
            );
        }
    }

    #[test]
    fn new_layouts_route_a_checkpoint_and_its_components() {
        let cases = [
            (Layout::Forge, "Model", None, "models/Stable-diffusion"),
            (Layout::Forge, "VAE", None, "models/VAE"),
            (Layout::Forge, "Text Encoder", None, "models/text_encoder"),
            (Layout::Forge, "UNet", None, "models/Stable-diffusion"),
            (
                Layout::Forge,
                "Model",
                Some("GGUF"),
                "models/Stable-diffusion",
            ),
            (Layout::Swarm, "Model", None, "Models/Stable-Diffusion"),
            (
                Layout::Swarm,
                "Pruned Model",
                None,
                "Models/Stable-Diffusion",
            ),
            (Layout::Swarm, "VAE", None, "Models/VAE"),
            (Layout::Swarm, "Text Encoder", None, "Models/text_encoders"),
            (
                Layout::Swarm,
                "Diffusion Model",
                None,
                "Models/diffusion_models",
            ),
            (
                Layout::Swarm,
                "Model",
                Some("GGUF"),
                "Models/diffusion_models",
            ),
            (
                Layout::Comfyui,
                "Model",
                Some("GGUF"),
                "models/diffusion_models",
            ),
            (
                Layout::Comfyui,
                "Model",
                Some("SafeTensor"),
                "models/checkpoints",
            ),
            (Layout::Comfyui, "Training Data", None, "models/other"),
            (Layout::A1111, "Training Data", None, "models/other"),
            (Layout::A1111, "Config", None, "models/Stable-diffusion"),
            (Layout::Invoke, "Model", None, "main/sdxl"),
            (Layout::Invoke, "VAE", None, "vae/sdxl"),
            (Layout::Invoke, "Text Encoder", None, "text_encoder/sdxl"),
        ];
        for (layout, file_type, format, expected) in cases {
            let class = FileClass {
                model_type: "Checkpoint",
                file_type,
                format,
                base_model: Some("SDXL 1.0"),
            };
            assert_eq!(
                layout_dir(layout, &class),
                PathBuf::from(expected),
                "{layout:?} {file_type:?} {format:?}"
            );
        }
    }

    #[test]
    fn swarm_and_invoke_folders_by_model_type() {
        let cases = [
            (Layout::Swarm, "LORA", "Models/Lora"),
            (Layout::Swarm, "LoCon", "Models/Lora"),
            (Layout::Swarm, "TextualInversion", "Models/Embeddings"),
            (Layout::Swarm, "Controlnet", "Models/controlnet"),
            (Layout::Swarm, "Upscaler", "Models/upscale_models"),
            (Layout::Swarm, "Wildcards", "Data/Wildcards"),
            (Layout::Swarm, "Poses", "Models/other"),
            (Layout::Forge, "LORA", "models/Lora"),
            (Layout::Forge, "TextualInversion", "embeddings"),
            (Layout::Invoke, "LORA", "lora/sdxl"),
            (Layout::Invoke, "TextualInversion", "embedding/sdxl"),
            (Layout::Invoke, "Workflows", "other/sdxl"),
        ];
        for (layout, model_type, expected) in cases {
            let class = FileClass {
                model_type,
                file_type: "Model",
                format: None,
                base_model: Some("Pony"),
            };
            assert_eq!(
                layout_dir(layout, &class),
                PathBuf::from(expected),
                "{layout:?} {model_type:?}"
            );
        }
    }

    #[test]
    fn invoke_base_folders_follow_invokeai_names() {
        let cases = [
            (Some("SD 1.5"), "sd-1"),
            (Some("SD 2.1 768"), "sd-2"),
            (Some("SDXL 1.0"), "sdxl"),
            (Some("Illustrious"), "sdxl"),
            (Some("NoobAI"), "sdxl"),
            (Some("SD 3.5 Large"), "sd-3"),
            (Some("Flux.1 D"), "flux"),
            (Some("Wan Video 14B t2v"), "wan-video-14b-t2v"),
            (Some("../up"), "up"),
            (Some(""), "any"),
            (None, "any"),
        ];
        for (base, expected) in cases {
            assert_eq!(invoke_base(base), expected, "{base:?}");
        }
    }

    #[test]
    fn embeddings_are_recognised_by_model_type() {
        let class = |model_type| FileClass {
            model_type,
            file_type: "Model",
            ..FileClass::default()
        };
        assert!(is_embedding(&class("TextualInversion")));
        assert!(!is_embedding(&class("LORA")));
    }

    #[test]
    fn layout_parses_from_config_spelling() {
        for expected in Layout::ALL {
            let text = expected.name();
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
