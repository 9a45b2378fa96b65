//! Pinned versions a rerun does not ask Civitai about again.
//!
//! A published version's files do not change, so once a run has finished every file a pinned
//! target (`4201@130072`, a version URL, a version id) planned, asking Civitai about it again
//! only learns what the state already says. Archivists rerun lists of 100,000 pinned versions
//! after a crash; one metadata request per target put minutes of requests between the rerun and
//! its first download. A target is trusted when every file it planned last time, under the same
//! settings, is recorded as done and is on disk with the recorded size. Anything else plans it
//! again as before: a file gone or resized, fewer finished records than the plan had files (the
//! run stopped mid-version), other settings (another layout, filter or output folder). A model id
//! without a version is never pinned: its newest version may have changed since.

use std::hash::{BuildHasher, RandomState};
use std::path::Path;

use crate::civitai::target::Target;
use crate::plan::naming::join_inside;
use crate::plan::{FileFacts, FileKind, Job, PlannedFile, PreviewPlan, Source, model_file_label};
use crate::state::{FileRecord, RecordStatus, StateStore};

/// Finished files of pinned targets, by the target and settings that planned them.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// (hash of the record's `pin_prefix`, the record's position in the state), sorted: the
    /// records of one target are a run of equal hashes. 16 bytes a record; a map from prefixes
    /// to lists of keys held a copy of both strings (issue 9, item 6). A hash two targets share
    /// costs nothing but time: the records' own pins are compared before any is trusted.
    by_target: Vec<(u64, u32)>,
    hasher: RandomState,
}

impl Settled {
    /// Index the records an earlier run left (built once per run: the lookups are per target).
    pub(crate) fn index(state: &StateStore) -> Settled {
        let hasher = RandomState::new();
        let mut by_target: Vec<(u64, u32)> = state
            .pins()
            .filter_map(|(position, pin)| {
                let (prefix, _) = pin.and_then(split_pin)?;
                Some((hasher.hash_one(prefix), u32::try_from(position).ok()?))
            })
            .collect();
        by_target.sort_unstable();
        by_target.shrink_to_fit();
        Settled { by_target, hasher }
    }

    /// The jobs of a trusted target, rebuilt from its records (they settle as already present
    /// without a request), or `None` when it must be planned.
    pub(crate) fn jobs(&self, prefix: &str, state: &StateStore, output: &Path) -> Option<Vec<Job>> {
        let hash = self.hasher.hash_one(prefix);
        let start = self.by_target.partition_point(|&(h, _)| h < hash);
        // In the order they were recorded; the first one's plan gives the file count.
        let mut records = self.by_target[start..]
            .iter()
            .take_while(|&&(h, _)| h == hash)
            .filter_map(|&(_, position)| state.record_at(position as usize))
            .filter(|record| {
                record
                    .pin
                    .as_deref()
                    .and_then(split_pin)
                    .is_some_and(|(p, _)| p == prefix)
            })
            .peekable();
        let files = split_pin(records.peek()?.pin.as_deref()?)?.1;
        let pin = pin(prefix, files);
        let records: Vec<FileRecord> = records
            .filter(|record| record.pin.as_deref() == Some(pin.as_str()))
            .collect();
        if records.len() != files {
            return None;
        }
        records
            .into_iter()
            .map(|record| {
                let dest = join_inside(output, &record.relative_path).ok()?;
                let intact = record.status == RecordStatus::Done
                    && record.local_sha256.is_some()
                    && std::fs::metadata(&dest).is_ok_and(|m| m.len() == record.bytes_on_disk);
                intact.then(|| job_from(&record, dest, pin.clone()))
            })
            .collect()
    }
}

/// What names a pinned target's plan: the target and the settings (`Planner::settings_key`);
/// `None` for targets that are not pinned.
pub(crate) fn pin_prefix(target: &Target, settings: &str) -> Option<String> {
    match target {
        Target::Model {
            version: Some(_), ..
        }
        | Target::Version { .. } => Some(format!("{target} {settings}")),
        Target::Model { version: None, .. } | Target::User { .. } => None,
    }
}

/// The pin recorded with each file of a plan that gave `files` files.
pub(crate) fn pin(prefix: &str, files: usize) -> String {
    format!("{prefix} {files}")
}

fn split_pin(pin: &str) -> Option<(&str, usize)> {
    let (prefix, files) = pin.rsplit_once(' ')?;
    Some((prefix, files.parse().ok()?))
}

/// A job for a finished file, from its record: no sidecar or previews to write (the run that
/// finished it wrote them), the recorded hash to recognise the file by.
fn job_from(record: &FileRecord, dest: std::path::PathBuf, pin: String) -> Job {
    let (version_id, file_id) = (record.version.id, record.file.id);
    Job {
        key: record.key.clone(),
        model: record.model.clone(),
        version: record.version.clone(),
        file_id,
        file_name: record.file.name.clone(),
        file: PlannedFile {
            label: model_file_label(
                record.model.id,
                &record.model.name,
                version_id,
                &record.file.name,
            ),
            source: Source::Civitai {
                version_id,
                file_id,
            },
            dest: dest.clone(),
            expected_size: record.expected_size,
            expected_sha256: record.expected_sha256.clone(),
            known_sha256: record.local_sha256.clone(),
            kind: FileKind::of_file_name(&record.file.name),
            replace_existing: true,
        },
        facts: FileFacts {
            model_id: record.model.id,
            model_name: record.model.name.clone(),
            model_type: String::new(),
            version_id,
            version_name: record.version.name.clone(),
            base_model: None,
            file_id,
            file_name: record.file.name.clone(),
            file_type: String::new(),
            format: None,
            fp: None,
            size_kind: None,
            quant_type: None,
            size_bytes: record.expected_size,
            sha256: record.expected_sha256.clone(),
            primary: false,
            early_access: false,
            path: dest,
            previews: Vec::new(),
        },
        sidecars: None,
        previews: PreviewPlan::default(),
        pin: Some(pin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CatalogItem;

    fn done(key: &str, version: u64, path: &str, pin: Option<&str>) -> FileRecord {
        let mut record = FileRecord::new(
            key,
            CatalogItem::new(1, "m"),
            CatalogItem::new(version, "v"),
            CatalogItem::new(version * 10, format!("{key}.safetensors")),
            path,
        );
        record.status = RecordStatus::Done;
        record.local_sha256 = Some("ab".into());
        record.bytes_on_disk = 3;
        record.pin = pin.map(str::to_string);
        record
    }

    #[test]
    fn only_versions_are_pinned() {
        let pinned = Target::Model {
            id: 1,
            version: Some(2),
        };
        assert!(pin_prefix(&pinned, "s").is_some_and(|p| p.ends_with(" s")));
        assert!(pin_prefix(&Target::Version { id: 2, file: None }, "s").is_some());
        assert_eq!(
            pin_prefix(
                &Target::Model {
                    id: 1,
                    version: None
                },
                "s"
            ),
            None
        );
        assert_eq!(split_pin(&pin("a b c", 3)), Some(("a b c", 3)));
    }

    #[test]
    fn a_target_is_trusted_only_with_every_planned_file_done_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateStore::open(&dir.path().join("state.json")).unwrap();
        let (prefix, other) = ("t settings", "u settings");
        let full = pin(prefix, 2);
        std::fs::write(dir.path().join("a"), b"abc").unwrap();
        std::fs::write(dir.path().join("b"), b"abc").unwrap();
        state.upsert(done("a", 7, "a", Some(&full))).unwrap();
        state.upsert(done("b", 7, "b", Some(&full))).unwrap();
        state
            .upsert(done("c", 8, "a", Some(&pin(other, 2))))
            .unwrap();
        let settled = Settled::index(&state);
        let jobs = settled.jobs(prefix, &state, dir.path()).expect("trusted");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].file.known_sha256.as_deref(), Some("ab"));
        assert!(
            settled.jobs(other, &state, dir.path()).is_none(),
            "one of two files recorded: the run stopped mid-version"
        );
        assert!(settled.jobs("never seen", &state, dir.path()).is_none());

        std::fs::write(dir.path().join("b"), b"abcd").unwrap();
        assert!(
            settled.jobs(prefix, &state, dir.path()).is_none(),
            "a file of another size is checked again"
        );
        std::fs::remove_file(dir.path().join("b")).unwrap();
        assert!(
            settled.jobs(prefix, &state, dir.path()).is_none(),
            "a file gone"
        );
    }
}
