//! From what the user asked for to the files to fetch: which versions, which files, which paths.
//!
//! Planning reads metadata only. Every name from the API is sanitised and joined under the output
//! directory with a check that it cannot escape it; two files that would land on the same path
//! are told apart by their file id, never overwritten.

mod batch;
mod error;
mod file;
mod job;
mod listing;
pub mod naming;
mod selection;

use batch::Prefetch;
pub use error::PlanError;
pub use file::{FileKind, PlannedFile, Source, model_file_label};
pub use job::{FileFacts, Job, PreviewImage, PreviewPlan, preview_candidates, preview_path};
pub use listing::{After, ListingPage, Step};
pub use selection::Selection;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::civitai::target::Target;
use crate::civitai::wire::{Model, ModelFile, ModelMode, ModelVersion};
use crate::civitai::{ApiClient, ApiError, WithRaw};
use crate::lock;
use crate::plan::naming::{
    FileClass, Layout, disambiguate, file_name_key, join_inside, layout_dir, sanitize_file_name,
    split_extension,
};
use crate::sidecar::{SidecarKind, SidecarPlan};
use crate::state::CatalogItem;

/// What planning one target gave: its jobs, the parts of it that failed (a creator's model
/// that is archived or matches no filter) while the rest went on, and the versions left out
/// because no file matched the filters while other versions of the model did.
#[derive(Debug, Default)]
pub struct Planned {
    pub jobs: Vec<Job>,
    pub failures: Vec<PlanError>,
    pub skipped: Vec<PlanError>,
    /// The next page of a creator's listing, planned as a step of its own so this page's
    /// downloads can start first.
    pub next: Option<ListingPage>,
}

impl Planned {
    /// Just these jobs.
    pub fn jobs(jobs: Vec<Job>) -> Planned {
        Planned {
            jobs,
            ..Planned::default()
        }
    }
}

/// Turns targets into jobs. Shared by both drivers; remembers the paths it handed out.
pub struct Planner {
    api: Arc<ApiClient>,
    selection: Selection,
    output: PathBuf,
    layout: Layout,
    sidecars: Vec<SidecarKind>,
    /// The paths handed out, as [`path_key`]s: 16 bytes each instead of a path (a run of
    /// 100,000 files held 100,000 paths here; issue 9, item 6).
    taken_paths: Mutex<HashSet<u128>>,
    /// The (version id, file id) of each file planned.
    planned_files: Mutex<HashSet<(u64, u64)>>,
    /// Models fetched ahead in batches; an async lock, so a plan that needs the batch under way
    /// waits for it instead of asking again.
    prefetch: tokio::sync::Mutex<Prefetch>,
}

impl Planner {
    /// A planner writing under `output`.
    pub fn new(
        api: Arc<ApiClient>,
        selection: Selection,
        output: PathBuf,
        layout: Layout,
        sidecars: Vec<SidecarKind>,
    ) -> Planner {
        Planner {
            api,
            selection,
            output,
            layout,
            sidecars,
            taken_paths: Mutex::new(HashSet::new()),
            planned_files: Mutex::new(HashSet::new()),
            prefetch: tokio::sync::Mutex::new(Prefetch::default()),
        }
    }

    /// Everything besides the target that decides which files a plan gives and where they go,
    /// as 16 hex digits of a SHA-256 (it is stored with every file of the state). Taken from
    /// Debug output, so a setting added later changes it by itself (and only makes a rerun ask
    /// Civitai again, never trust a record it should not).
    pub fn settings_key(&self) -> String {
        use sha2::Digest;
        let settings = format!(
            "{:?}/{:?}/{:?}/{}",
            self.selection,
            self.layout,
            self.sidecars,
            self.output.display()
        );
        crate::fetch::hex(&sha2::Sha256::digest(settings.as_bytes())[..8])
    }

    /// Tell the planner which targets it will plan, so the models they name can be fetched
    /// 100 at a time.
    pub async fn expect(&self, targets: &[Target]) {
        let ids = targets.iter().filter_map(|target| match target {
            Target::Model { id, .. } => Some(*id),
            _ => None,
        });
        self.prefetch.lock().await.expect(ids);
    }

    /// The jobs for one step (files already planned by an earlier step are left out). A
    /// creator's listing gives one page's jobs and the next page as [`Planned::next`].
    pub async fn plan(&self, step: &Step) -> Result<Planned, PlanError> {
        match step {
            Step::Target(Target::Model { id, version }) => self.plan_model(*id, *version).await,
            Step::Target(Target::Version { id, file }) => {
                self.plan_version(*id, *file).await.map(Planned::jobs)
            }
            Step::Target(Target::User { username }) => {
                self.plan_page(&ListingPage::first(username)).await
            }
            Step::Page(page) => self.plan_page(page).await,
        }
    }

    async fn plan_model(&self, id: u64, version: Option<u64>) -> Result<Planned, PlanError> {
        let batched = self.prefetch.lock().await.take(&self.api, id).await;
        let model = match batched {
            Some(model) => model,
            None => self.api.model(id).await.map_err(|source| PlanError::Api {
                what: format!("model {id}"),
                source,
            })?,
        };
        if let Some(version_id) = version
            && !model
                .value
                .model_versions
                .iter()
                .any(|v| v.id == version_id)
        {
            let found = self.fetch_version(version_id).await?;
            if found.value.model_id.is_some_and(|m| m != id) {
                return Err(PlanError::VersionNotInModel {
                    version: version_id,
                    model: id,
                });
            }
            return self
                .jobs_for_version(&self.model_view(&model), &found, None)
                .map(Planned::jobs);
        }
        self.plan_listed_model(&model, version)
    }

    /// Jobs for a model whose versions came with it (`/models/{id}` or a listing).
    fn plan_listed_model(
        &self,
        model: &WithRaw<Model>,
        only_version: Option<u64>,
    ) -> Result<Planned, PlanError> {
        let view = self.model_view(model);
        if matches!(model.value.mode, Some(ModelMode::Archived)) {
            return Err(PlanError::Archived {
                model: view.label(),
            });
        }
        let raw_versions = model.raw.get("modelVersions").and_then(Value::as_array);
        let chosen: Vec<usize> = match only_version {
            Some(id) => model
                .value
                .model_versions
                .iter()
                .position(|v| v.id == id)
                .into_iter()
                .collect(),
            None if self.selection.all_versions => (0..model.value.model_versions.len()).collect(),
            None => (!model.value.model_versions.is_empty())
                .then_some(0)
                .into_iter()
                .collect(),
        };
        if chosen.is_empty() {
            return Err(PlanError::NoVersions {
                model: view.label(),
            });
        }
        let mut planned = Planned::default();
        let several = chosen.len() > 1;
        let mut matched = 0;
        for index in chosen {
            let version = WithRaw {
                value: model.value.model_versions[index].clone(),
                raw: raw_versions
                    .and_then(|v| v.get(index))
                    .cloned()
                    .unwrap_or(Value::Null),
            };
            match self.jobs_for_version(&view, &version, None) {
                Ok(more) => {
                    matched += 1;
                    planned.jobs.extend(more);
                }
                // Among several versions, one without a matching file (an old version that
                // ships only a .ckpt) is skipped; the model fails only if none matches.
                Err(error @ PlanError::NoMatchingFile { .. }) if several => {
                    tracing::warn!("{error}; skipping that version");
                    planned.skipped.push(error);
                }
                Err(error) => return Err(error),
            }
        }
        if matched == 0
            && let Some(error) = planned.skipped.pop()
        {
            return Err(error);
        }
        Ok(planned)
    }

    async fn plan_version(&self, id: u64, file: Option<u64>) -> Result<Vec<Job>, PlanError> {
        let version = self.fetch_version(id).await?;
        let model = version.value.model.as_ref();
        let view = ModelView {
            id: version.value.model_id.unwrap_or(0),
            name: model.and_then(|m| m.name.clone()).unwrap_or_default(),
            model_type: model
                .and_then(|m| m.model_type.as_ref())
                .map(|t| t.to_string())
                .unwrap_or_default(),
            nsfw: model.is_some_and(|m| m.nsfw),
            poi: model.is_some_and(|m| m.poi),
            raw: None,
        };
        if model.is_some_and(|m| matches!(m.mode, Some(ModelMode::Archived))) {
            return Err(PlanError::Archived {
                model: view.label(),
            });
        }
        self.jobs_for_version(&view, &version, file)
    }

    /// One page of a creator's listing: the jobs of its models, and the page after it.
    async fn plan_page(&self, page: &ListingPage) -> Result<Planned, PlanError> {
        let listed = self
            .api
            .creator_page(
                &page.username,
                self.selection.include_nsfw,
                page.cursor.as_deref(),
                page.limit,
            )
            .await
            .map_err(|source| PlanError::Api {
                what: page.to_string(),
                source,
            })?;
        if page.number == 1 && listed.models.is_empty() && listed.next.is_none() {
            return Err(PlanError::NoModels {
                username: page.username.clone(),
                sfw_only: !self.selection.include_nsfw,
            });
        }
        let mut planned = Planned::default();
        for model in &listed.models {
            match self.plan_listed_model(model, None) {
                Ok(more) => {
                    planned.jobs.extend(more.jobs);
                    planned.skipped.extend(more.skipped);
                }
                // One archived or empty model must not hide the creator's other models, nor be
                // forgotten: it fails the run like a failed target.
                Err(error) => planned.failures.push(error),
            }
        }
        match page.after(listed.next, listed.limit) {
            After::Page(next) => planned.next = Some(next),
            After::Done => {}
            After::Loop(cursor) => planned.failures.push(PlanError::Api {
                what: page.to_string(),
                source: ApiError::CursorLoop { cursor },
            }),
        }
        Ok(planned)
    }

    async fn fetch_version(&self, id: u64) -> Result<WithRaw<ModelVersion>, PlanError> {
        self.api.version(id).await.map_err(|source| PlanError::Api {
            what: format!("version {id}"),
            source,
        })
    }

    fn jobs_for_version(
        &self,
        model: &ModelView,
        version: &WithRaw<ModelVersion>,
        only_file: Option<u64>,
    ) -> Result<Vec<Job>, PlanError> {
        let files = self.choose_files(model, &version.value, only_file)?;
        let mut placed = Vec::new();
        for file in files {
            let key = format!("{}:{}", version.value.id, file.id);
            if lock(&self.planned_files).insert((version.value.id, file.id)) {
                let dest = self.destination(model, &version.value, file)?;
                if self.layout.is_swarm() && !swarm_loads(&file.name) {
                    tracing::warn!(
                        "model {} file {}: SwarmUI loads only .safetensors, .sft and .gguf files; \
                         this one will not show up there",
                        model.label(),
                        file.name
                    );
                }
                placed.push((file, key, dest));
            }
        }
        // A checkpoint's preferred VAE in A1111 is a file name from its VAE list: the VAE of the
        // same version, when this run downloads it too.
        let vae = placed
            .iter()
            .find(|(file, ..)| file.file_type.as_str().eq_ignore_ascii_case("vae"))
            .and_then(|(_, _, dest)| dest.file_name())
            .map(|name| name.to_string_lossy().into_owned());
        let info = (!self.sidecars.is_empty()).then(|| Arc::new(sidecar_json(model, &version.raw)));
        let mut jobs = Vec::new();
        for (i, (file, key, dest)) in placed.into_iter().enumerate() {
            let sidecars = info.as_ref().map(|info| SidecarPlan {
                kinds: self.sidecars.clone(),
                version: info.clone(),
                model: model.raw.clone(),
                file_id: file.id,
                vae: vae.clone(),
            });
            // Previews belong to the first file of a version, so --all-files does not fetch
            // the same images once per file.
            let previews = if i == 0 {
                self.preview_plan(&version.value)
            } else {
                PreviewPlan::default()
            };
            jobs.push(self.job(model, &version.value, file, key, dest, sidecars, previews));
        }
        Ok(jobs)
    }

    /// The previews wanted for a version, with every image as a candidate.
    fn preview_plan(&self, version: &ModelVersion) -> PreviewPlan {
        if self.selection.images == 0 {
            return PreviewPlan::default();
        }
        PreviewPlan {
            wanted: self.selection.images,
            candidates: preview_candidates(version),
            swarm: self.layout.is_swarm(),
        }
    }

    /// The model as a job needs it, with its JSON (minus the versions) when sidecars want it.
    fn model_view(&self, model: &WithRaw<Model>) -> ModelView {
        let raw = match &model.raw {
            Value::Object(map) if !self.sidecars.is_empty() => Some(Arc::new(Value::Object(
                map.iter()
                    .filter(|(key, _)| key.as_str() != "modelVersions")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ))),
            _ => None,
        };
        ModelView {
            raw,
            ..model_view(&model.value)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn job(
        &self,
        model: &ModelView,
        version: &ModelVersion,
        file: &ModelFile,
        key: String,
        dest: PathBuf,
        sidecars: Option<SidecarPlan>,
        previews: PreviewPlan,
    ) -> Job {
        let sha256 = file.sha256().map(str::to_string);
        Job {
            key,
            model: CatalogItem::new(model.id, model.name.clone()),
            version: CatalogItem::new(version.id, version.name.clone()),
            file_id: file.id,
            file_name: file.name.clone(),
            file: PlannedFile {
                label: model_file_label(model.id, &model.name, version.id, &file.name),
                source: Source::Civitai {
                    version_id: version.id,
                    file_id: file.id,
                },
                dest: dest.clone(),
                known_sha256: None,
                expected_size: file.size_bytes(),
                expected_sha256: sha256.clone(),
                kind: FileKind::of_file_name(&file.name),
                replace_existing: false,
            },
            facts: FileFacts {
                model_id: model.id,
                model_name: model.name.clone(),
                model_type: model.model_type.clone(),
                version_id: version.id,
                version_name: version.name.clone(),
                base_model: version.base_model.clone(),
                file_id: file.id,
                file_name: file.name.clone(),
                file_type: file.file_type.to_string(),
                format: file.metadata.format.clone(),
                fp: file.metadata.fp.clone(),
                size_kind: file.metadata.size.clone(),
                quant_type: file.metadata.quant_type.clone(),
                size_bytes: file.size_bytes(),
                sha256,
                primary: file.primary,
                early_access: version.is_early_access(),
                previews: previews
                    .first()
                    .iter()
                    .enumerate()
                    .map(|(n, image)| preview_path(&dest, n, &image.url_extension))
                    .collect(),
                path: dest,
            },
            sidecars,
            previews,
            pin: None,
        }
    }

    fn choose_files<'v>(
        &self,
        model: &ModelView,
        version: &'v ModelVersion,
        only_file: Option<u64>,
    ) -> Result<Vec<&'v ModelFile>, PlanError> {
        let what = format!("model {} version {}", model.label(), version.id);
        if version.files.is_empty() {
            return Err(PlanError::NoMatchingFile {
                what,
                wanted: "any file".into(),
                available: "none (the version has no downloadable files)".into(),
            });
        }
        let chosen: Vec<&ModelFile> = if let Some(file_id) = only_file {
            version.files.iter().filter(|f| f.id == file_id).collect()
        } else if self.selection.all_files {
            version
                .files
                .iter()
                .filter(|f| self.selection.accepts(f))
                .collect()
        } else if self.selection.has_filters() {
            version
                .files
                .iter()
                .filter(|f| self.selection.accepts(f))
                .min_by_key(|f| f.preference())
                .into_iter()
                .collect()
        } else {
            version.preferred_file().into_iter().collect()
        };
        if chosen.is_empty() {
            let wanted = match only_file {
                Some(id) => format!("file id {id}"),
                None => self.selection.describe_filters(),
            };
            return Err(PlanError::NoMatchingFile {
                what,
                wanted,
                available: describe_files(&version.files),
            });
        }
        Ok(chosen)
    }

    /// The final path of a file: layout folder, sanitised name, unique within the run.
    fn destination(
        &self,
        model: &ModelView,
        version: &ModelVersion,
        file: &ModelFile,
    ) -> Result<PathBuf, PlanError> {
        let class = FileClass {
            model_type: &model.model_type,
            file_type: file.file_type.as_str(),
            format: file.metadata.format.as_deref(),
            base_model: version.base_model.as_deref(),
        };
        let folder = layout_dir(self.layout, &class);
        let name = sanitize_file_name(&file.name);
        let mut path = join_inside(&self.output, &folder.join(&name))?;
        let mut taken = lock(&self.taken_paths);
        if taken.contains(&path_key(&path)) {
            path = join_inside(&self.output, &folder.join(disambiguate(&name, file.id)))?;
        }
        taken.insert(path_key(&path));
        Ok(path)
    }
}

/// The parts of a model a job needs, from whichever endpoint supplied them.
struct ModelView {
    id: u64,
    name: String,
    model_type: String,
    nsfw: bool,
    poi: bool,
    /// The model's JSON without its versions, when it was fetched and sidecars want it.
    raw: Option<Arc<Value>>,
}

impl ModelView {
    fn label(&self) -> String {
        if self.name.is_empty() {
            self.id.to_string()
        } else {
            format!("{} \"{}\"", self.id, self.name)
        }
    }
}

fn model_view(model: &Model) -> ModelView {
    ModelView {
        id: model.id,
        name: model.name.clone(),
        model_type: model.model_type.to_string(),
        nsfw: model.nsfw,
        poi: false,
        raw: None,
    }
}

/// The version JSON as `/model-versions/{id}` gives it, which is what Civitai Helper and similar
/// extensions read from `.civitai.info`: versions nested in a model lack `modelId` and `model`.
fn sidecar_json(model: &ModelView, raw: &Value) -> Value {
    let mut info = raw.clone();
    if let Value::Object(map) = &mut info {
        map.entry("modelId").or_insert(json!(model.id));
        map.entry("model").or_insert(json!({
            "name": model.name,
            "type": model.model_type,
            "nsfw": model.nsfw,
            "poi": model.poi,
        }));
    }
    info
}

/// Whether SwarmUI loads a model file of this name: it refuses pickle formats (`.ckpt`, `.pt`, …)
/// for the code they can run.
fn swarm_loads(file_name: &str) -> bool {
    let (_, extension) = split_extension(file_name);
    [".safetensors", ".sft", ".gguf"]
        .iter()
        .any(|known| extension.eq_ignore_ascii_case(known))
}

fn describe_files(files: &[ModelFile]) -> String {
    files
        .iter()
        .map(|f| {
            let details: Vec<&str> = [
                Some(f.file_type.as_str()),
                f.metadata.format.as_deref(),
                f.metadata.fp.as_deref(),
                f.metadata.size.as_deref(),
                f.metadata.quant_type.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect();
            format!("{} (id {}: {})", f.name, f.id, details.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What identifies a planned path among the others: the first 128 bits of the SHA-256 of the
/// path with its file name case-folded. Two paths share one only by a collision of SHA-256, far
/// less likely than a disk error; the cost of one would be a name with the file id added.
fn path_key(path: &Path) -> u128 {
    use sha2::Digest;
    // Windows and macOS file systems ignore case: two names differing only in case collide.
    let name = path
        .file_name()
        .map(|n| file_name_key(&n.to_string_lossy()))
        .unwrap_or_default();
    let digest = sha2::Sha256::digest(path.with_file_name(name).as_os_str().as_encoded_bytes());
    let mut first = [0; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_one_file_system_would_confuse_share_a_key() {
        let key = |path: &str| path_key(Path::new(path));
        assert_eq!(key("out/Lora/a.safetensors"), key("out/Lora/A.SafeTensors"));
        assert_ne!(key("out/Lora/a.safetensors"), key("out/lora/a.safetensors"));
        assert_ne!(key("out/Lora/a.safetensors"), key("out/Lora/b.safetensors"));
    }

    #[test]
    fn sidecar_gains_model_fields_without_overwriting() {
        let view = ModelView {
            id: 7,
            name: "M".into(),
            model_type: "LORA".into(),
            nsfw: false,
            poi: false,
            raw: None,
        };
        let info = sidecar_json(&view, &json!({"id": 1, "modelId": 9}));
        assert_eq!(info["modelId"], 9);
        assert_eq!(info["model"]["type"], "LORA");
    }

    #[test]
    fn swarm_loads_only_safe_formats() {
        for (name, loads) in [
            ("a.safetensors", true),
            ("a.SFT", true),
            ("a.gguf", true),
            ("a.ckpt", false),
            ("a.pt", false),
            ("a", false),
        ] {
            assert_eq!(swarm_loads(name), loads, "{name}");
        }
    }
}
