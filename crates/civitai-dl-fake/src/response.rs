//! Response builders, and the texts the real service answers with: its error messages, HTML pages
//! and content types.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::knobs::ApiFault;

pub(crate) const MSG_LOGIN_REQUIRED: &str =
    "The creator of this asset requires you to be logged in to download it";
pub(crate) const MSG_DOWNLOADS_DISABLED: &str =
    "The creator of this asset has disabled downloads on this file";
pub(crate) const MSG_EARLY_ACCESS: &str =
    "This asset is in Early Access. You can use Buzz access it now!";
pub(crate) const MSG_NO_GRANT: &str = "You do not have access to download this file";
pub(crate) const MSG_FILE_NOT_FOUND: &str = "File not found";
pub(crate) const MSG_ARCHIVED: &str = "Model archived, not available for download";
pub(crate) const MSG_QUOTA: &str = "We've noticed an unusual amount of downloading from your account. Contact support@civitai.com or come back later.";
pub(crate) const MSG_TOO_MANY_PAGES: &str =
    "You've requested too many pages, please use cursors instead";
pub(crate) const MSG_PAGE_WITH_QUERY: &str =
    "Cannot use page param with query search. Use cursor-based pagination.";
/// The start of the batch by-hash routes' 400; zod's message follows it.
pub(crate) const MSG_BY_HASH_BODY: &str = "Request must include an array of SHA256 Hashes.";
pub(crate) const MSG_SERVER_BUSY: &str = "Server busy, please retry shortly.";
pub(crate) const MAINTENANCE_PAGE: &str = "<!DOCTYPE html><html><head><title>Civitai | Maintenance</title></head><body><h1>We're adjusting a few things, be back in a few minutes...</h1></body></html>";
pub(crate) const OUTAGE_PAGE: &str = "<!DOCTYPE html><html><head><title>503 Service Temporarily Unavailable</title></head><body><h1>503 Service Temporarily Unavailable</h1><p>cloudflare</p></body></html>";
pub(crate) const STORAGE_ERROR_PAGE: &str = "<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>";
pub(crate) const LOGIN_PAGE: &str = "<!DOCTYPE html><html><head><title>Sign in | Civitai</title></head><body><h1>Sign in to Civitai</h1></body></html>";
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
pub(crate) const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";

pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    response(status, JSON_CONTENT_TYPE, body.to_string())
}

pub(crate) fn error_json(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

/// Sets a header built from our own data; values that are not valid header text are skipped
/// rather than turned into a panic.
pub(crate) fn set_header(res: &mut Response, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        res.headers_mut().insert(name, value);
    }
}

fn with_retry_after(mut res: Response, secs: u64) -> Response {
    set_header(&mut res, header::RETRY_AFTER, &secs.to_string());
    res
}

impl ApiFault {
    pub(crate) fn response(self) -> Response {
        match self {
            ApiFault::Outage => outage_response(),
            ApiFault::Unavailable { retry_after_secs } => with_retry_after(
                error_json(StatusCode::SERVICE_UNAVAILABLE, MSG_SERVER_BUSY),
                retry_after_secs,
            ),
            ApiFault::TooManyRequests { retry_after_secs } => with_retry_after(
                error_json(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
                retry_after_secs,
            ),
            ApiFault::TooManyRequestsPage => response(
                StatusCode::TOO_MANY_REQUESTS,
                HTML_CONTENT_TYPE,
                "<html><body><h1>429 Too Many Requests</h1></body></html>",
            ),
            ApiFault::MaintenancePage => {
                response(StatusCode::OK, HTML_CONTENT_TYPE, MAINTENANCE_PAGE)
            }
        }
    }
}

pub(crate) fn outage_response() -> Response {
    response(
        StatusCode::SERVICE_UNAVAILABLE,
        HTML_CONTENT_TYPE,
        OUTAGE_PAGE,
    )
}

/// An S3-style XML error, as the storage hosts behind Civitai send.
pub(crate) fn storage_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    response(status, "application/xml", body)
}
