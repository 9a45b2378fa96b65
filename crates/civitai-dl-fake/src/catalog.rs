//! The catalogue: what the fake serves (models, versions, files, their access gates, published
//! hashes and per-file storage faults), and the ready-made catalogues of `demo` and `bench`.

/// One mebibyte, for catalogue file sizes.
pub(crate) const MIB: u64 = 1024 * 1024;

/// What the fake serves: models, their versions and files, and the API keys it accepts.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Every model, in any order (listings sort by id).
    pub models: Vec<FakeModel>,
    /// Keys accepted as `Authorization: Bearer K` or `?token=K`.
    pub valid_keys: Vec<String>,
}

/// One model page on the fake site.
#[derive(Debug, Clone)]
pub struct FakeModel {
    /// Model id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// `ModelType` string, e.g. "LORA", "Checkpoint".
    pub model_type: String,
    /// Creator username.
    pub creator: String,
    /// Hidden from `/models` unless the caller sends `nsfw=true`.
    pub nsfw: bool,
    /// `Some("Archived")` empties every version's files and makes downloads answer 410.
    pub mode: Option<String>,
    /// Versions, newest first (`index` 0 is the first element).
    pub versions: Vec<FakeVersion>,
}

/// One model version.
#[derive(Debug, Clone)]
pub struct FakeVersion {
    /// Version id, the id the download route takes.
    pub id: u64,
    /// Version name, e.g. "v1.0".
    pub name: String,
    /// Base model, e.g. "SDXL 1.0".
    pub base_model: String,
    /// Who may download it.
    pub access: Access,
    /// Files of the version.
    pub files: Vec<FakeFile>,
    /// Number of preview images.
    pub images: u32,
    /// The format of each preview image, by index; images past the end are JPEG. Every URL ends
    /// in `.jpeg` whatever the format, as Civitai's image CDN serves WebP or PNG under `.jpeg`.
    pub image_formats: Vec<ImageFormat>,
}

/// What a preview image's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    /// JPEG (the default).
    #[default]
    Jpeg,
    /// PNG.
    Png,
    /// WebP.
    Webp,
    /// GIF.
    Gif,
    /// An MP4 video, listed with `"type": "video"`.
    Mp4,
}

impl ImageFormat {
    /// The `Content-Type` the CDN sends.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Gif => "image/gif",
            ImageFormat::Mp4 => "video/mp4",
        }
    }

    /// The first bytes of a file of this format.
    pub(crate) fn magic(self) -> &'static [u8] {
        match self {
            ImageFormat::Jpeg => &crate::content::JPEG_MAGIC,
            ImageFormat::Png => b"\x89PNG\r\n\x1a\n",
            ImageFormat::Webp => b"RIFF\0\0\0\0WEBPVP8 ",
            ImageFormat::Gif => b"GIF89a",
            ImageFormat::Mp4 => b"\0\0\0\x20ftypisom",
        }
    }
}

/// Download gate of a version, mirroring the download route's refusal cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone may download.
    Public,
    /// Needs a valid key (401 otherwise).
    LoginRequired,
    /// Paid early access not bought: always 403 with the deadline.
    EarlyAccess {
        /// ISO 8601 end of the early-access window.
        deadline: String,
    },
    /// Generation-only resource: always 401 "disabled downloads".
    DownloadsDisabled,
    /// Gated resource the caller has no grant for: always 403.
    NoGrant,
}

/// One downloadable file; its bytes are generated from `seed`.
#[derive(Debug, Clone)]
pub struct FakeFile {
    /// File id (`?fileId=`).
    pub id: u64,
    /// Download name (`files[].name` and `Content-Disposition`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Seed of the generated content.
    pub seed: u64,
    /// `ModelFileType`, e.g. "Model".
    pub file_type: String,
    /// `metadata.format`, e.g. "SafeTensor".
    pub format: Option<String>,
    /// `metadata.fp`, e.g. "fp16".
    pub fp: Option<String>,
    /// `metadata.size`: "pruned" or "full".
    pub size_kind: Option<String>,
    /// GGUF quantisation (`Q4_K_M`, `Q8_0`, …), sent as `metadata.quantType`.
    pub quant_type: Option<String>,
    /// Whether this is the version's primary file.
    pub primary: bool,
    /// What the API publishes as the SHA-256.
    pub published_hash: PublishedHash,
    /// Storage misbehaviour for the first attempts.
    pub faults: FileFaults,
}

/// The SHA-256 the API publishes for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishedHash {
    /// The real hash of the served bytes.
    Correct,
    /// `hashes` is `{}` (hashing still pending).
    Missing,
    /// A valid-looking hash that does not match the (consistent) bytes.
    Wrong,
}

/// Per-file storage faults; each applies to GET attempts `1..=N` of that file.
#[derive(Debug, Default, Clone)]
pub struct FileFaults {
    /// First N GETs flip one byte in the body.
    pub corrupt_attempts: u32,
    /// `(bytes, attempts)`: the first N GETs cut the connection after K body bytes.
    pub reset_after: Option<(u64, u32)>,
    /// `(bytes, attempts)`: the first N GETs stop sending (without closing) after K body bytes.
    pub stall_after: Option<(u64, u32)>,
    /// First N GETs answer 200 `text/html` instead of the file.
    pub html_attempts: u32,
    /// Always answer 200 with the whole file, even to a Range request.
    pub ignore_range: bool,
    /// First N GETs answer 200 `application/octet-stream` with a JSON error body, sent chunked
    /// without `Content-Length`: an error page that only its first bytes give away.
    pub json_error_attempts: u32,
    /// Ranged GETs among the first N attempts answer 416 `Content-Range: bytes */<size>`, whatever
    /// the range asked for.
    pub unsatisfiable_range_attempts: u32,
    /// Ranged GETs from a non-zero offset among the first N attempts answer 206 with the bytes of a
    /// range starting one byte earlier than asked, and a `Content-Range` saying so.
    pub misplaced_range_attempts: u32,
    /// First N GETs answer 403 `AccessDenied` for a reason that has nothing to do with the
    /// signature (a firewall rule, a blocked region): a fresh URL does not help.
    pub forbidden_attempts: u32,
}

impl FakeModel {
    /// A healthy, SFW model by "tester"; adjust fields with struct-update syntax.
    pub fn new(id: u64, name: &str, model_type: &str, versions: Vec<FakeVersion>) -> FakeModel {
        FakeModel {
            id,
            name: name.to_owned(),
            model_type: model_type.to_owned(),
            creator: "tester".to_owned(),
            nsfw: false,
            mode: None,
            versions,
        }
    }
}

impl FakeVersion {
    /// A public "SDXL 1.0" version without previews.
    pub fn new(id: u64, name: &str, files: Vec<FakeFile>) -> FakeVersion {
        FakeVersion {
            id,
            name: name.to_owned(),
            base_model: "SDXL 1.0".to_owned(),
            access: Access::Public,
            files,
            images: 0,
            image_formats: Vec::new(),
        }
    }
}

impl FakeFile {
    /// A primary SafeTensor "Model" file seeded with its id, correct hash, no faults.
    pub fn new(id: u64, name: &str, size: u64) -> FakeFile {
        FakeFile {
            id,
            name: name.to_owned(),
            size,
            seed: id,
            file_type: "Model".to_owned(),
            format: Some("SafeTensor".to_owned()),
            fp: None,
            size_kind: None,
            quant_type: None,
            primary: true,
            published_hash: PublishedHash::Correct,
            faults: FileFaults::default(),
        }
    }
}

impl FakeVersion {
    /// The format of preview image `index`.
    pub fn image_format(&self, index: u32) -> ImageFormat {
        self.image_formats
            .get(index as usize)
            .copied()
            .unwrap_or_default()
    }
}

impl Catalog {
    /// A handful of models for `demo` / `fake-server`, about 230 MiB in all: a two-version
    /// checkpoint, a LoRA with fp16 and fp32 files, a small TextualInversion whose first download
    /// is corrupted, and a VAE; all public, with previews.
    pub fn demo() -> Catalog {
        let checkpoint = FakeModel {
            creator: "dreamsmith".to_owned(),
            ..FakeModel::new(
                101,
                "Dreamscape XL",
                "Checkpoint",
                vec![
                    FakeVersion {
                        images: 3,
                        ..FakeVersion::new(
                            201,
                            "v2.0",
                            vec![FakeFile {
                                fp: Some("fp16".to_owned()),
                                size_kind: Some("pruned".to_owned()),
                                ..FakeFile::new(301, "dreamscapeXL_v20.safetensors", 120 * MIB)
                            }],
                        )
                    },
                    FakeVersion {
                        images: 2,
                        ..FakeVersion::new(
                            202,
                            "v1.0",
                            vec![FakeFile {
                                fp: Some("fp16".to_owned()),
                                size_kind: Some("pruned".to_owned()),
                                ..FakeFile::new(302, "dreamscapeXL_v10.safetensors", 48 * MIB)
                            }],
                        )
                    },
                ],
            )
        };
        let lora = FakeModel {
            creator: "inkwell".to_owned(),
            ..FakeModel::new(
                102,
                "Ink Wash Style",
                "LORA",
                vec![FakeVersion {
                    images: 2,
                    ..FakeVersion::new(
                        203,
                        "v1.0",
                        vec![
                            FakeFile {
                                fp: Some("fp16".to_owned()),
                                ..FakeFile::new(303, "ink wash style.safetensors", 20 * MIB)
                            },
                            FakeFile {
                                fp: Some("fp32".to_owned()),
                                primary: false,
                                ..FakeFile::new(304, "ink wash style.safetensors", 40 * MIB)
                            },
                        ],
                    )
                }],
            )
        };
        let embedding = FakeModel::new(
            103,
            "Glimmer Eyes",
            "TextualInversion",
            vec![FakeVersion {
                base_model: "SD 1.5".to_owned(),
                images: 1,
                ..FakeVersion::new(
                    204,
                    "v1.0",
                    vec![FakeFile {
                        faults: FileFaults {
                            corrupt_attempts: 1,
                            ..FileFaults::default()
                        },
                        ..FakeFile::new(305, "glimmereyes.safetensors", 200 * 1024)
                    }],
                )
            }],
        );
        let vae = FakeModel::new(
            104,
            "Clear VAE",
            "VAE",
            vec![FakeVersion {
                images: 1,
                ..FakeVersion::new(
                    205,
                    "v1.0",
                    vec![FakeFile {
                        file_type: "VAE".to_owned(),
                        ..FakeFile::new(306, "clearVae_v10.safetensors", 16 * MIB)
                    }],
                )
            }],
        );
        Catalog {
            models: vec![checkpoint, lora, embedding, vae],
            valid_keys: vec!["demo-key".to_owned()],
        }
    }

    /// `n` simple public LORA models (ids 1000.., versions 2000.., files 3000..), each with one
    /// primary file of `file_size` bytes and no previews, creator "tester".
    pub fn uniform(n: usize, file_size: u64) -> Catalog {
        let models = (0..n as u64)
            .map(|i| {
                let file = FakeFile::new(
                    3000 + i,
                    &format!("uniform_lora_{i}.safetensors"),
                    file_size,
                );
                let version = FakeVersion::new(2000 + i, "v1.0", vec![file]);
                FakeModel::new(
                    1000 + i,
                    &format!("Uniform LoRA {i}"),
                    "LORA",
                    vec![version],
                )
            })
            .collect();
        Catalog {
            models,
            valid_keys: vec!["test-key".to_owned()],
        }
    }

    /// The model with this id.
    pub fn model(&self, id: u64) -> Option<&FakeModel> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The version with this id and its model.
    pub fn version(&self, id: u64) -> Option<(&FakeModel, &FakeVersion)> {
        self.models
            .iter()
            .flat_map(|m| m.versions.iter().map(move |v| (m, v)))
            .find(|(_, v)| v.id == id)
    }

    /// The file with this id.
    pub fn file(&self, id: u64) -> Option<&FakeFile> {
        self.models
            .iter()
            .flat_map(|m| &m.versions)
            .flat_map(|v| &v.files)
            .find(|f| f.id == id)
    }
}
