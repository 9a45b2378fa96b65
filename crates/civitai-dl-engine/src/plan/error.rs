//! Why a target could not be planned, in words that name the model or version and what to
//! change; and which of those failures may pass, so the drivers try the target again later.

use crate::civitai::ApiError;
use crate::http::retry::{RetryClass, Retryable};
use crate::plan::naming::NamingError;

/// Why a target could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The API refused or failed.
    #[error("{what}: {source}")]
    Api {
        /// Which object.
        what: String,
        source: ApiError,
    },
    /// An archived model has no files left.
    #[error("model {model}: archived on Civitai; its files can no longer be downloaded")]
    Archived {
        /// Model id and name.
        model: String,
    },
    /// A creator's listing is empty from its first page on.
    #[error(
        "creator {username} has no models on Civitai{}, or there is no such creator: check the \
         name as it appears in civitai.com/user/NAME",
        if *sfw_only { " that are safe for work (--sfw-only)" } else { "" }
    )]
    NoModels {
        username: String,
        /// The listing left NSFW models out.
        sfw_only: bool,
    },
    /// No published version.
    #[error("model {model}: has no published version")]
    NoVersions {
        /// Model id and name.
        model: String,
    },
    /// `?modelVersionId=` names a version of another model.
    #[error("version {version} does not belong to model {model}")]
    VersionNotInModel {
        /// Version id.
        version: u64,
        /// Model id.
        model: u64,
    },
    /// The selection flags matched nothing.
    #[error("{what}: no file matches {wanted}; available: {available}")]
    NoMatchingFile {
        /// Which version.
        what: String,
        /// The filters.
        wanted: String,
        /// What the version has.
        available: String,
    },
    /// A name that would escape the output directory.
    #[error(transparent)]
    Path(#[from] NamingError),
}

impl PlanError {
    /// Whether the failure may pass (a network error or a server error after the API client's
    /// retries), so that trying the target again later can help.
    pub fn is_transient(&self) -> bool {
        matches!(self, PlanError::Api { source, .. } if source.retry_class() != RetryClass::Fatal)
    }
}
