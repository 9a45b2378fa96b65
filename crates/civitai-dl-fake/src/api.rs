//! The API origin's handlers: the gate in front of every request (latency and fault knobs), models,
//! versions, `by-hash`, `/me` and the listing with its cursors and paging rules.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};

use crate::content::mix64;
use crate::json::Endpoint;
use crate::knobs::{ApiFault, BatchFault};
use crate::query::{QueryParams, percent_encode};
use crate::response::{
    HTML_CONTENT_TYPE, LOGIN_PAGE, MSG_BY_HASH_BODY, MSG_PAGE_WITH_QUERY, MSG_TOO_MANY_PAGES,
    error_json, json_response, response,
};
use crate::state::Shared;
use crate::stats::ListingRequest;
use crate::{FakeFile, FakeModel, FakeVersion, lock};

/// Default and maximum `limit` on `/api/v1/models`.
const MAX_PAGE_LIMIT: usize = 100;
/// Page paging is refused once `page * limit` exceeds this, like the real API.
const PAGE_PAGING_CAP: usize = 1000;
/// Ids above this get 400 on `/api/v1/models/{id}` (Postgres int4 range).
const MAX_MODEL_ID: u64 = 2_147_483_647;
/// Hashes one `POST /by-hash` may carry (and one old `POST /by-hash/ids`).
const MAX_BY_HASH_BATCH: usize = 100;
/// Hashes one `POST /by-hash/ids` of today's server may carry.
const MAX_BY_HASH_IDS: usize = 10_000;
/// Characters of a SHA-256 in hex, the one thing the batch routes check.
const SHA256_HEX_LEN: usize = 64;
/// AutoV2 is the first 10 hex digits of the SHA-256.
const AUTOV2_HEX_LEN: usize = 10;

/// A `{"error": ...}` answer from a v1 endpoint.
#[derive(Debug, PartialEq, Eq)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: &str) -> ApiError {
        ApiError {
            status,
            message: message.to_owned(),
        }
    }

    fn response(&self) -> Response {
        error_json(self.status, &self.message)
    }
}

fn respond(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(error) => error.response(),
    }
}

/// Counts every API request and applies latency, outage and "first N" knobs before routing.
pub(crate) async fn api_gate(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let _open = shared.stats.api_open.enter();
    shared.stats.record_api_request(
        request.method().as_str(),
        request.uri().path(),
        request.headers(),
    );
    let (latency, fault) = {
        let mut state = shared.knob_state();
        let fault = state.next_api_fault(request.uri().path());
        (state.knobs.api_latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(fault) => fault.response(),
        None => next.run(request).await,
    }
}

pub(crate) async fn get_model(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Response {
    let result = match id.parse::<u64>() {
        Ok(n) if (1..=MAX_MODEL_ID).contains(&n) => shared
            .catalog
            .models
            .iter()
            .find(|m| m.id == n)
            .map(|m| shared.model_json(m, Endpoint::ModelById))
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, &format!("No model with id {n}"))),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            &format!("Invalid model id: {id}"),
        )),
    };
    respond(result)
}

fn version_body(
    shared: &Shared,
    found: Option<(&FakeModel, &FakeVersion)>,
) -> Result<Value, ApiError> {
    let (model, version) =
        found.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Model not found"))?;
    if version.files.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Missing model file"));
    }
    Ok(shared.version_json(model, version))
}

pub(crate) async fn get_version(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Response {
    let found = id.parse().ok().and_then(|id| shared.version(id));
    respond(version_body(&shared, found))
}

pub(crate) async fn get_version_by_hash(
    State(shared): State<Arc<Shared>>,
    Path(hash): Path<String>,
) -> Response {
    let wanted = hash.to_uppercase();
    // Like the real `findFirst`, one version whatever the number of files that match: here the
    // lowest version id, as every fake version is published in id order.
    let found = shared
        .files_where(|file| shared.published_hashes(file).contains(&wanted))
        .into_iter()
        .map(|(_, version, _)| version.id)
        .min()
        .and_then(|version_id| shared.version(version_id));
    respond(version_body(&shared, found))
}

/// `POST /api/v1/model-versions/by-hash`: one version per catalogue file whose published
/// SHA-256 is in the body, in an order of the fake's own (never the body's).
pub(crate) async fn post_versions_by_hashes(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Response {
    let fault = shared.knob_state().next_by_hash_batch_fault();
    if let Some(fault) = fault {
        return shared.batch_fault_response(fault);
    }
    let result = sha256_list(&body, MAX_BY_HASH_BATCH).map(|wanted| {
        let versions: Vec<Value> = shared
            .files_with_sha256(&wanted)
            .into_iter()
            .map(|(model, version, _)| shared.version_json(model, version))
            .collect();
        Value::Array(versions)
    });
    respond(result)
}

/// `POST /api/v1/model-versions/by-hash/ids`: what the batch route finds, as ids only. Today's
/// server answers `[{modelVersionId, modelId, hash}]` (one per matching file, up to 10,000
/// hashes); the old one a bare array of distinct version ids for at most 100 hashes
/// ([`Knobs::by_hash_ids_legacy`](crate::Knobs::by_hash_ids_legacy)).
pub(crate) async fn post_version_ids_by_hashes(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Response {
    let legacy = shared.knob_state().knobs.by_hash_ids_legacy;
    let max = if legacy {
        MAX_BY_HASH_BATCH
    } else {
        MAX_BY_HASH_IDS
    };
    let result = sha256_list(&body, max).map(|wanted| {
        let found = shared.files_with_sha256(&wanted);
        if legacy {
            let mut ids: Vec<u64> = Vec::new();
            for (_, version, _) in found {
                if !ids.contains(&version.id) {
                    ids.push(version.id);
                }
            }
            json!(ids)
        } else {
            let entries: Vec<Value> = found
                .into_iter()
                .map(|(model, version, file)| {
                    json!({
                        "modelVersionId": version.id,
                        "modelId": model.id,
                        "hash": shared.published_sha256(file),
                    })
                })
                .collect();
            Value::Array(entries)
        }
    });
    respond(result)
}

/// The body rule of both batch routes: a bare JSON array of at most `max` strings of exactly 64
/// characters (the length is all the real server checks), uppercased.
fn sha256_list(body: &[u8], max: usize) -> Result<Vec<String>, ApiError> {
    let bad = |detail: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            &format!("{MSG_BY_HASH_BODY} {detail}"),
        )
    };
    let items = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items,
        Ok(other) => {
            return Err(bad(&format!(
                "Expected array, received {}",
                json_kind(&other)
            )));
        }
        Err(_) => return Err(bad("Expected array, received undefined")),
    };
    if items.len() > max {
        return Err(bad(&format!("Array must contain at most {max} element(s)")));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(hash) if hash.chars().count() == SHA256_HEX_LEN => {
                Ok(hash.to_uppercase())
            }
            Value::String(_) => Err(bad("String must contain exactly 64 character(s)")),
            other => Err(bad(&format!(
                "Expected string, received {}",
                json_kind(other)
            ))),
        })
        .collect()
}

/// The type name zod uses in its messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Shared {
    /// Every catalogue file that `keep` accepts, with its model and version, in catalogue order.
    fn files_where(
        &self,
        keep: impl Fn(&FakeFile) -> bool,
    ) -> Vec<(&FakeModel, &FakeVersion, &FakeFile)> {
        self.catalog
            .models
            .iter()
            .flat_map(|m| m.versions.iter().map(move |v| (m, v)))
            .flat_map(|(m, v)| v.files.iter().map(move |f| (m, v, f)))
            .filter(|(_, _, file)| keep(file))
            .collect()
    }

    /// The files whose published SHA-256 is one of `wanted`, one entry per file, shuffled by a
    /// fixed function of the file id: the real server's order is unspecified, and a client that
    /// relied on the input order would break on it.
    fn files_with_sha256(&self, wanted: &[String]) -> Vec<(&FakeModel, &FakeVersion, &FakeFile)> {
        let wanted: HashSet<&str> = wanted.iter().map(String::as_str).collect();
        let mut found = self.files_where(|file| {
            self.published_sha256(file)
                .is_some_and(|sha| wanted.contains(sha.as_str()))
        });
        found.sort_by_key(|(_, _, file)| mix64(file.id));
        found
    }

    /// Every hash the API publishes for the file (SHA256, AutoV2, AutoV3), as GET by-hash
    /// matches them.
    fn published_hashes(&self, file: &FakeFile) -> Vec<String> {
        let Some(sha256) = self.published_sha256(file) else {
            return Vec::new();
        };
        let mut hashes = vec![sha256[..AUTOV2_HEX_LEN].to_owned(), sha256];
        hashes.extend(self.published_autov3(file).map(str::to_owned));
        hashes
    }

    fn batch_fault_response(&self, fault: BatchFault) -> Response {
        let retry_after_secs = self.knob_state().knobs.retry_after_secs;
        match fault {
            BatchFault::TooManyRequests => {
                ApiFault::TooManyRequests { retry_after_secs }.response()
            }
            BatchFault::ServerError => error_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            ),
            BatchFault::MaintenancePage => ApiFault::MaintenancePage.response(),
            BatchFault::Absent => error_json(StatusCode::NOT_FOUND, "Not found"),
        }
    }
}

pub(crate) async fn get_me(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = QueryParams::parse(query.as_deref());
    if shared.signed_in(&headers, &params) {
        json_response(
            StatusCode::OK,
            &json!({"id": 1, "username": "tester", "tier": "free", "status": "active",
                    "isMember": false, "subscriptions": []}),
        )
    } else {
        error_json(StatusCode::UNAUTHORIZED, "Unauthorized")
    }
}

/// Where a `/models` page starts: a cursor (the default) or a page number.
#[derive(Debug, PartialEq, Eq)]
enum PageStart {
    Cursor { after_id: Option<u64>, page: u64 },
    Page(usize),
}

/// The validated query of `GET /api/v1/models`.
#[derive(Debug)]
struct ModelQuery<'a> {
    limit: usize,
    start: PageStart,
    nsfw: bool,
    username: Option<String>,
    types: Vec<&'a str>,
    search: Option<String>,
    /// `ids=1,2,3` and `ids=1&ids=2` alike, as Civitai accepts both.
    ids: Vec<u64>,
}

impl<'a> ModelQuery<'a> {
    fn parse(params: &'a QueryParams) -> Result<ModelQuery<'a>, ApiError> {
        let bad = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, message);
        let limit = match params.get("limit") {
            None => MAX_PAGE_LIMIT,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
                .ok_or_else(|| bad("limit must be an integer between 1 and 100"))?,
        };
        let search = params.get("query").map(str::to_lowercase);
        let start = match (params.get("page"), params.get("cursor")) {
            (Some(_), _) if search.is_some() => return Err(bad(MSG_PAGE_WITH_QUERY)),
            (Some(raw), _) => {
                let page: usize = raw
                    .parse()
                    .ok()
                    .filter(|&p| p >= 1)
                    .ok_or_else(|| bad("page must be a positive integer"))?;
                if page.saturating_mul(limit) > PAGE_PAGING_CAP {
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        MSG_TOO_MANY_PAGES,
                    ));
                }
                PageStart::Page(page)
            }
            (None, Some(cursor)) => parse_cursor(cursor).ok_or_else(|| bad("Invalid cursor"))?,
            (None, None) => PageStart::Cursor {
                after_id: None,
                page: 1,
            },
        };
        Ok(ModelQuery {
            limit,
            start,
            nsfw: matches!(params.get("nsfw"), Some("true" | "1")),
            username: params.get("username").map(str::to_lowercase),
            types: params.all("types"),
            search,
            ids: params
                .all("ids")
                .iter()
                .flat_map(|v| v.split(','))
                .map(|id| id.trim().parse().map_err(|_| bad("ids must be integers")))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The "SQL" part: filters applied before the LIMIT.
    fn selects(&self, model: &FakeModel) -> bool {
        self.username
            .as_ref()
            .is_none_or(|u| model.creator.to_lowercase() == *u)
            && (self.types.is_empty() || self.types.contains(&model.model_type.as_str()))
            && (self.ids.is_empty() || self.ids.contains(&model.id))
    }

    /// Filters the real server applies after the LIMIT, which is why pages can come up short.
    fn keeps(&self, model: &FakeModel) -> bool {
        (self.nsfw || !model.nsfw)
            && self
                .search
                .as_ref()
                .is_none_or(|q| model.name.to_lowercase().contains(q))
    }
}

/// Parses a `"{lastId}|{page}"` cursor.
fn parse_cursor(cursor: &str) -> Option<PageStart> {
    let (last, page) = cursor.split_once('|')?;
    Some(PageStart::Cursor {
        after_id: Some(last.parse().ok()?),
        page: page.parse().ok()?,
    })
}

impl Shared {
    fn models_page(&self, params: &QueryParams, signed_in: bool) -> Result<Value, ApiError> {
        if (params.has("favorites") || params.has("hidden")) && !signed_in {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
        }
        let query = ModelQuery::parse(params)?;
        let mut candidates: Vec<&FakeModel> = self
            .catalog
            .models
            .iter()
            .filter(|m| query.selects(m))
            .collect();
        candidates.sort_by_key(|m| m.id);
        let first = match query.start {
            PageStart::Page(page) => (page - 1) * query.limit,
            PageStart::Cursor { after_id, .. } => {
                after_id.map_or(0, |last| candidates.partition_point(|m| m.id <= last))
            }
        };
        let window = candidates
            .get(first..(first + query.limit).min(candidates.len()))
            .unwrap_or_default();
        let more = first + query.limit < candidates.len();
        let items: Vec<Value> = window
            .iter()
            .filter(|m| query.keeps(m))
            .map(|m| self.model_json(m, Endpoint::ModelList))
            .collect();
        let mut metadata = serde_json::Map::new();
        match query.start {
            PageStart::Page(page) => {
                metadata.insert("currentPage".to_owned(), json!(page));
                metadata.insert("pageSize".to_owned(), json!(query.limit));
                if more {
                    let next = self.next_page_url(params, "page", &(page + 1).to_string());
                    metadata.insert("nextPage".to_owned(), json!(next));
                }
            }
            PageStart::Cursor { page, .. } => {
                if let (true, Some(last)) = (more, window.last()) {
                    let cursor = format!("{}|{}", last.id, page + 1);
                    let next = self.next_page_url(params, "cursor", &cursor);
                    if !self.knob_state().knobs.omit_next_cursor {
                        metadata.insert("nextCursor".to_owned(), json!(cursor));
                    }
                    metadata.insert("nextPage".to_owned(), json!(next));
                }
            }
        }
        Ok(json!({ "items": items, "metadata": metadata }))
    }

    /// The request's own URL with the paging parameter replaced, like `metadata.nextPage`.
    fn next_page_url(&self, params: &QueryParams, key: &str, value: &str) -> String {
        let query: Vec<String> = params
            .0
            .iter()
            .filter(|(k, _)| k != "cursor" && k != "page")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([(key, value)])
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        format!("{}/api/v1/models?{}", self.api_url, query.join("&"))
    }
}

pub(crate) async fn list_models(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = QueryParams::parse(query.as_deref());
    lock(&shared.stats.listings).push(ListingRequest {
        cursor: params.get("cursor").map(str::to_owned),
        limit: params.get("limit").map(str::to_owned),
        ids: params.all("ids").join(","),
        storage_requests_before: shared.stats.storage_requests(),
    });
    if let Some(fault) = shared.listing_fault(&params) {
        return respond(Err(fault));
    }
    let signed_in = shared.signed_in(&headers, &params);
    respond(shared.models_page(&params, signed_in))
}

impl Shared {
    /// The 503 of the listing knobs, if this page gets one.
    fn listing_fault(&self, params: &QueryParams) -> Option<ApiError> {
        let knobs = self.knob_state().knobs.clone();
        let page = match params.get("cursor").and_then(parse_cursor) {
            Some(PageStart::Cursor { page, .. }) => page,
            _ => 1,
        };
        let limit = params.get("limit").and_then(|l| l.parse::<usize>().ok());
        let broken = knobs
            .listing_fails_from_page
            .is_some_and(|from| page >= from)
            || knobs
                .listing_max_limit
                .is_some_and(|max| limit.is_none_or(|l| l > max));
        broken.then(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"))
    }
}

pub(crate) async fn login_page() -> Response {
    response(StatusCode::OK, HTML_CONTENT_TYPE, LOGIN_PAGE)
}

pub(crate) async fn api_not_found() -> Response {
    error_json(StatusCode::NOT_FOUND, "Not found")
}

pub(crate) async fn method_not_allowed() -> Response {
    error_json(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}
