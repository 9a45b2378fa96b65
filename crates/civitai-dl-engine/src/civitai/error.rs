//! Every failure state Civitai really produces, as its own variant with a message that says what
//! the user can do; [`classify_failure`] maps a status and its body to one of them
//! (`docs/civitai-api.md#error-states`).

use std::time::Duration;

use reqwest::StatusCode;

use crate::civitai::wire::parse_error_body;
use crate::http::retry::{RetryClass, Retryable};
use crate::http::{Cause, snippet};

/// A failed API request, one variant per failure state Civitai really produces.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404.
    #[error("not found on Civitai ({message})")]
    NotFound {
        /// Civitai's message.
        message: String,
    },
    /// 401 on the download route: a login (API key) is required.
    #[error(
        "Civitai requires you to be logged in to download this: pass an API key with --api-key or \
         CIVITAI_API_KEY (create one at https://civitai.com/user/account)"
    )]
    LoginRequired,
    /// 401 from `/api/v1/me`: the key is invalid (Civitai would otherwise treat it as anonymous).
    #[error(
        "API key rejected by Civitai: check --api-key / CIVITAI_API_KEY, or create a new key at \
         https://civitai.com/user/account"
    )]
    KeyRejected,
    /// 403 "Early Access".
    #[error("in Early Access{}: it can be downloaded for free after that, or bought on civitai.com", deadline.as_ref().map(|d| format!(" until {d}")).unwrap_or_default())]
    EarlyAccess {
        /// When early access ends, as Civitai sent it.
        deadline: Option<String>,
    },
    /// 401 "disabled downloads".
    #[error("the creator has disabled downloads of this file (it can only be used on-site)")]
    DownloadsDisabled,
    /// Other 403s.
    #[error("access denied by Civitai: {message}")]
    Forbidden {
        /// Civitai's message.
        message: String,
    },
    /// 410.
    #[error("the model is archived and can no longer be downloaded")]
    Archived,
    /// 429 that is not the download quota: wait and retry.
    #[error("rate limited by Civitai (429)")]
    RateLimited {
        /// `Retry-After`, if sent.
        retry_after: Option<Duration>,
    },
    /// 429 "unusual amount of downloading": the rolling 24-hour download quota.
    #[error(
        "Civitai's 24-hour download quota is exhausted ({message}); progress is saved: rerun the \
         same command in a few hours to continue"
    )]
    QuotaExhausted {
        /// Civitai's message.
        message: String,
    },
    /// 429 for deep page numbers (never retried: it is deterministic).
    #[error("Civitai refused a deep page number: {message}")]
    TooManyPages {
        /// Civitai's message.
        message: String,
    },
    /// A body that is not JSON where JSON was expected (maintenance or challenge pages).
    #[error("Civitai answered {status} with {content_type} instead of JSON: \"{snippet}\"")]
    NotJson {
        /// HTTP status.
        status: u16,
        /// The `Content-Type` sent.
        content_type: String,
        /// The start of the body.
        snippet: String,
    },
    /// 5xx.
    #[error("Civitai server error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Civitai's message or the start of the body.
        message: String,
        /// `Retry-After`, if sent.
        retry_after: Option<Duration>,
    },
    /// 400 and other statuses with no meaning of their own.
    #[error("Civitai answered {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Civitai's message.
        message: String,
    },
    /// Connection, TLS, timeout or body errors.
    #[error("network error talking to {host}: {}", Cause::of(source))]
    Network {
        /// The host (never a full URL: it could hold secrets).
        host: String,
        /// The underlying error, with its URL removed.
        source: reqwest::Error,
    },
    /// JSON that does not fit even our lenient models.
    #[error("could not understand Civitai's answer: {message}")]
    Decode {
        /// serde's message.
        message: String,
    },
    /// Ctrl-C or an emergency stop while waiting.
    #[error("interrupted")]
    Cancelled,
    /// A listing whose cursor went round in a circle.
    #[error("Civitai's listing repeated cursor {cursor}; stopped paging to avoid a loop")]
    CursorLoop {
        /// The repeated cursor.
        cursor: String,
    },
}

impl ApiError {
    /// Whether this failure came from a timeout (for metrics and the failsafe).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ApiError::Network { source, .. } if source.is_timeout())
    }

    /// Whether another API host might answer where this one failed.
    pub(crate) fn warrants_failover(&self) -> bool {
        matches!(self, ApiError::Network { .. } | ApiError::Server { .. })
    }
}

impl Retryable for ApiError {
    fn retry_class(&self) -> RetryClass {
        match self {
            // A request that could not even be built (a key with control characters, a bad
            // URL) will not build next time either.
            ApiError::Network { source, .. } if source.is_builder() => RetryClass::Fatal,
            // A refused certificate or a name that does not exist fails the same way again.
            ApiError::Network { source, .. } if Cause::of(source).is_permanent() => {
                RetryClass::Fatal
            }
            ApiError::Network { .. } | ApiError::NotJson { .. } => {
                RetryClass::Transient { retry_after: None }
            }
            ApiError::RateLimited { retry_after } | ApiError::Server { retry_after, .. } => {
                RetryClass::Transient {
                    retry_after: *retry_after,
                }
            }
            _ => RetryClass::Fatal,
        }
    }
}

/// Map a failed status and its body to the failure state it means (`docs/civitai-api.md#download-route-refusals`, `#retry-policy`).
pub fn classify_failure(status: StatusCode, retry_after: Option<Duration>, body: &str) -> ApiError {
    let parsed = parse_error_body(body);
    let error_text = parsed
        .as_ref()
        .and_then(|b| b.error.clone())
        .unwrap_or_default();
    let message = parsed
        .as_ref()
        .map(|b| b.summary())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| snippet(body));
    let lower = message.to_lowercase();
    match status.as_u16() {
        404 => ApiError::NotFound { message },
        410 => ApiError::Archived,
        401 if lower.contains("disabled downloads") => ApiError::DownloadsDisabled,
        401 => ApiError::LoginRequired,
        403 if error_text.eq_ignore_ascii_case("early access") => ApiError::EarlyAccess {
            deadline: parsed.and_then(|b| b.deadline),
        },
        403 => ApiError::Forbidden { message },
        429 if lower.contains("unusual amount of downloading") => {
            ApiError::QuotaExhausted { message }
        }
        429 if lower.contains("too many pages") => ApiError::TooManyPages { message },
        429 => ApiError::RateLimited { retry_after },
        500..=599 => ApiError::Server {
            status: status.as_u16(),
            message,
            retry_after,
        },
        code => ApiError::Rejected {
            status: code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn classify(status: u16, body: &str) -> ApiError {
        classify_failure(StatusCode::from_u16(status).unwrap(), None, body)
    }

    /// Every real error body Civitai sends maps to its own failure state.
    #[test]
    fn sample_error_bodies_map_to_their_failure_state() {
        let samples: Vec<Value> = serde_json::from_str(include_str!(
            "../../tests/fixtures/civitai-samples/error_bodies.json"
        ))
        .unwrap();
        for sample in samples {
            let status = sample["status"].as_u64().unwrap() as u16;
            let body = sample["body"].to_string();
            let error = classify(status, &body);
            let ok = match status {
                404 => matches!(error, ApiError::NotFound { .. }),
                410 => matches!(error, ApiError::Archived),
                401 => matches!(error, ApiError::LoginRequired | ApiError::DownloadsDisabled),
                403 => matches!(
                    error,
                    ApiError::EarlyAccess { .. } | ApiError::Forbidden { .. }
                ),
                429 => matches!(
                    error,
                    ApiError::QuotaExhausted { .. } | ApiError::TooManyPages { .. }
                ),
                500..=599 => matches!(error, ApiError::Server { .. }),
                _ => matches!(error, ApiError::Rejected { .. }),
            };
            assert!(ok, "{status} {body} -> {error:?}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn the_download_route_states() {
        let disabled = r#"{"error":"Unauthorized","message":"The creator of this asset has disabled downloads on this file"}"#;
        assert!(matches!(
            classify(401, disabled),
            ApiError::DownloadsDisabled
        ));
        let login = r#"{"error":"Unauthorized","message":"The creator of this asset requires you to be logged in to download it"}"#;
        let error = classify(401, login);
        assert!(error.to_string().contains("--api-key"), "{error}");
        let early =
            r#"{"error":"Early Access","deadline":"2026-08-20T00:00:00.000Z","message":"x"}"#;
        assert!(classify(403, early).to_string().contains("2026-08-20"));
        let quota =
            r#"{"error":"We've noticed an unusual amount of downloading from your account."}"#;
        assert!(matches!(
            classify(429, quota),
            ApiError::QuotaExhausted { .. }
        ));
        assert_eq!(classify(429, quota).retry_class(), RetryClass::Fatal);
        let pages = r#"{"error":"You've requested too many pages, please use cursors instead"}"#;
        assert_eq!(classify(429, pages).retry_class(), RetryClass::Fatal);
        assert_ne!(classify(429, "").retry_class(), RetryClass::Fatal);
        assert_ne!(
            classify(503, "<html>busy</html>").retry_class(),
            RetryClass::Fatal
        );
        assert_eq!(classify(404, "{}").retry_class(), RetryClass::Fatal);
    }
}
