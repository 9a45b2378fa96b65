//! Which versions and files of a model the user asked for: the `--all-*`, `--file-type`,
//! `--format`, `--fp`, `--size` and `--quant-type` flags as one value the planner consults.

use crate::civitai::wire::ModelFile;

/// Which versions and files of each model to take.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Every version instead of the newest.
    pub all_versions: bool,
    /// Every file instead of the primary one.
    pub all_files: bool,
    /// Only these file types (as the API spells them, case-insensitive).
    pub file_types: Vec<String>,
    /// Only this format.
    pub format: Option<String>,
    /// Only this precision.
    pub fp: Option<String>,
    /// Only pruned or full.
    pub size: Option<String>,
    /// Only this GGUF quantisation (`Q4_K_M`, `Q8_0`, …).
    pub quant_type: Option<String>,
    /// Preview images per version.
    pub images: usize,
    /// Ask listings for NSFW models too.
    pub include_nsfw: bool,
}

impl Selection {
    pub(super) fn has_filters(&self) -> bool {
        !self.file_types.is_empty()
            || self.format.is_some()
            || self.fp.is_some()
            || self.size.is_some()
            || self.quant_type.is_some()
    }

    pub(super) fn describe_filters(&self) -> String {
        let mut parts: Vec<String> = self
            .file_types
            .iter()
            .map(|t| format!("file-type={t}"))
            .collect();
        for (name, value) in [
            ("format", &self.format),
            ("fp", &self.fp),
            ("size", &self.size),
            ("quant-type", &self.quant_type),
        ] {
            if let Some(value) = value {
                parts.push(format!("{name}={value}"));
            }
        }
        parts.join(" ")
    }

    pub(super) fn accepts(&self, file: &ModelFile) -> bool {
        let same = |want: &Option<String>, got: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| got.as_ref().is_some_and(|g| g.eq_ignore_ascii_case(w)))
        };
        (self.file_types.is_empty()
            || self
                .file_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(file.file_type.as_str())))
            && same(&self.format, &file.metadata.format)
            && same(&self.fp, &file.metadata.fp)
            && same(&self.size, &file.metadata.size)
            && same(&self.quant_type, &file.metadata.quant_type)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn selection_filters_match_case_insensitively() {
        let file: ModelFile = serde_json::from_value(json!({
            "id": 1, "name": "a.safetensors", "type": "Pruned Model",
            "metadata": {"format": "SafeTensor", "fp": "fp16", "size": "pruned"}
        }))
        .unwrap();
        let mut selection = Selection {
            format: Some("safetensor".into()),
            fp: Some("FP16".into()),
            ..Selection::default()
        };
        assert!(selection.accepts(&file));
        selection.file_types = vec!["pruned model".into()];
        assert!(selection.accepts(&file));
        selection.size = Some("full".into());
        assert!(!selection.accepts(&file));
    }
}
