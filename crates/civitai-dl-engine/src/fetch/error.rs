//! Why a file could not be fetched, one variant per failure the storage hosts and the file system
//! really produce, and which of them the retry policy may try again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::civitai::ApiError;
use crate::fs::WriteError;
use crate::http::Cause;
use crate::http::retry::{RetryClass, Retryable};

/// A failed attempt that wrote at least this much counts as progress (see `Retryable::made_progress`).
const PROGRESS_BYTES: u64 = 1024 * 1024;

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The download route refused (login needed, early access, not found, quota, …).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The storage host answered with an error status.
    #[error("storage host {host} answered {status}")]
    Storage {
        host: String,
        status: u16,
        /// `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The storage host refused the signed URL (expired): resolved again on the next attempt.
    #[error("storage host {host} refused the signed URL ({status}); it has likely expired")]
    Expired { host: String, status: u16 },
    /// A freshly signed URL was refused too: not an expiry, so not worth more of the quota.
    #[error(
        "storage host {host} refused a freshly signed URL as well ({status}: {reason}); the file \
         is skipped rather than spend more of Civitai's download quota on it"
    )]
    Refused {
        host: String,
        status: u16,
        /// The start of the storage host's answer.
        reason: String,
    },
    /// The answer was a web page or an error document, not the file.
    #[error("expected the file but got a web page or error document ({content_type}){}", if snippet.is_empty() { String::new() } else { format!(": \"{snippet}\"") })]
    NotAFile {
        content_type: String,
        /// The start of the body.
        snippet: String,
    },
    /// `Content-Range` did not match the request.
    #[error(
        "the server's Content-Range ({got}) does not match the requested range from byte {offset}"
    )]
    BadRange {
        got: String,
        /// Where we asked to start.
        offset: u64,
    },
    /// The length is not the size the API publishes.
    #[error("the server sends {got} bytes but Civitai lists the file at about {expected} bytes")]
    SizeMismatch { expected: u64, got: u64 },
    /// The remote file changed since the `.part` was started (another ETag).
    #[error("the remote file changed since the partial download began; starting over")]
    RemoteChanged,
    /// Connection, timeout or body error.
    #[error("transfer failed: {}", Cause::of(source))]
    Network {
        /// The error (its URL removed).
        source: reqwest::Error,
        /// Bytes written by this attempt.
        written: u64,
    },
    /// The body ended early.
    #[error("transfer ended at byte {got} of {expected}")]
    Truncated {
        got: u64,
        expected: u64,
        /// Bytes written by this attempt.
        written: u64,
    },
    /// Slower than `--min-speed` over its window.
    #[error("transfer slower than the minimum speed ({bytes_per_sec} B/s over the window)")]
    TooSlow {
        bytes_per_sec: u64,
        /// Bytes written by this attempt.
        written: u64,
    },
    /// The bytes do not match the published SHA-256; the file is fetched again from scratch.
    #[error("SHA-256 mismatch: Civitai publishes {expected}, the download is {actual}")]
    Checksum { expected: String, actual: String },
    /// Local file system trouble (disk full, permission denied, …).
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The storage host refused parallel ranges: the file continues as one stream.
    #[error("storage host {host} refused parallel connections ({status}); continuing with one")]
    RangesRefused {
        host: String,
        /// Status of the refused range request.
        status: u16,
    },
    /// A complete-looking `.part` whose bytes the server does not confirm.
    #[error("the partial file does not match the server's bytes; starting over")]
    StalePart,
    /// The `.part` is not the length that was hashed when it was about to be renamed.
    #[error(
        "the partial file changed after it was verified ({got} bytes, {expected} hashed); fetching it again"
    )]
    PartChanged { got: u64, expected: u64 },
    /// Another process holds this file's `.part` (a second run on the same folder).
    #[error(
        "another civitai-dl run is downloading {} right now; this run leaves it alone: rerun \
         this command once that run has finished",
        path.display()
    )]
    Busy {
        /// The final path both runs want.
        path: PathBuf,
    },
    /// Stopped by Ctrl-C or an emergency stop; the `.part` is kept.
    #[error("interrupted; the partial file is kept for the next run")]
    Cancelled,
}

impl DownloadError {
    /// A hash mismatch, both hashes spelled alike so they can be compared by eye.
    pub(crate) fn checksum(expected: &str, actual: String) -> DownloadError {
        DownloadError::Checksum {
            expected: expected.to_ascii_uppercase(),
            actual: actual.to_ascii_uppercase(),
        }
    }

    /// Whether this failure was a timeout (metrics, failsafe).
    pub fn is_timeout(&self) -> bool {
        match self {
            DownloadError::Network { source, .. } => source.is_timeout(),
            DownloadError::Api(api) => api.is_timeout(),
            _ => false,
        }
    }

    /// This error with `written` as the bytes its attempt wrote: an attempt over several
    /// segments moved the file forward by what all of them wrote, not just the one that failed.
    pub(crate) fn with_written(mut self, total: u64) -> DownloadError {
        if let DownloadError::Network { written, .. }
        | DownloadError::Truncated { written, .. }
        | DownloadError::TooSlow { written, .. } = &mut self
        {
            *written = total;
        }
        self
    }

    pub(crate) fn written(&self) -> u64 {
        match self {
            DownloadError::Network { written, .. }
            | DownloadError::Truncated { written, .. }
            | DownloadError::TooSlow { written, .. } => *written,
            _ => 0,
        }
    }
}

impl Retryable for DownloadError {
    fn retry_class(&self) -> RetryClass {
        let transient = RetryClass::Transient { retry_after: None };
        match self {
            // The API client already retried the resolve under the same policy.
            DownloadError::Api(_) | DownloadError::SizeMismatch { .. } => RetryClass::Fatal,
            DownloadError::Storage {
                status,
                retry_after,
                ..
            } if *status == 429 || *status >= 500 => RetryClass::Transient {
                retry_after: *retry_after,
            },
            DownloadError::Expired { .. } => RetryClass::Renewed,
            // A refused range is handled by switching to one stream, never by retrying it.
            DownloadError::Storage { .. }
            | DownloadError::Refused { .. }
            | DownloadError::Busy { .. }
            | DownloadError::Cancelled
            | DownloadError::RangesRefused { .. } => RetryClass::Fatal,
            DownloadError::Network { source, .. } if Cause::of(source).is_permanent() => {
                RetryClass::Fatal
            }
            DownloadError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut => transient,
                _ => RetryClass::Fatal,
            },
            _ => transient,
        }
    }

    fn made_progress(&self) -> bool {
        self.written() >= PROGRESS_BYTES
    }
}

impl From<WriteError> for DownloadError {
    fn from(error: WriteError) -> Self {
        DownloadError::Io {
            action: error.action,
            path: error.path,
            source: error.source,
        }
    }
}

pub(crate) fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> DownloadError {
    DownloadError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A transfer error, with its URL removed (a signed URL is a credential).
pub(crate) fn network(source: reqwest::Error, written: u64) -> DownloadError {
    DownloadError::Network {
        source: source.without_url(),
        written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksum_mismatch_shows_both_hashes_in_one_case() {
        let error = DownloadError::checksum("ab12", "CD34".into());
        assert_eq!(
            error.to_string(),
            "SHA-256 mismatch: Civitai publishes AB12, the download is CD34"
        );
    }
}
