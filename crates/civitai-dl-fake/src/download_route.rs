//! The download route, the one hop from the API to storage: validates the file-choosing parameters,
//! picks a file the way the real handler scores them, checks access and redirects to a signed URL.
//! Section numbers (§) are those of `docs/civitai-api.md`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::query::{QueryParams, percent_encode};
use crate::response::{
    MSG_ARCHIVED, MSG_DOWNLOADS_DISABLED, MSG_EARLY_ACCESS, MSG_FILE_NOT_FOUND, MSG_LOGIN_REQUIRED,
    MSG_NO_GRANT, MSG_QUOTA, json_response, response, set_header,
};
use crate::state::{Shared, header_str};
use crate::{Access, FakeFile, FakeVersion};

/// `files[].type` values that count as weights when the download route scores files (§6.2).
const WEIGHT_FILE_TYPES: [&str; 4] = ["Model", "Pruned Model", "Diffusion Model", "UNet"];
/// `type=` values the download route accepts (§4.2); anything else is a 400.
const MODEL_FILE_TYPES: [&str; 17] = [
    "Model",
    "Text Encoder",
    "Vision Encoder",
    "Pruned Model",
    "Negative",
    "Training Data",
    "VAE",
    "Config",
    "Archive",
    "UNet",
    "Diffusion Model",
    "CLIPVision",
    "ControlNet",
    "Workflow",
    "Upscaler",
    "Enhancement LoRA",
    "Other",
];
/// `format=` values the download route accepts (§4.3).
const FILE_FORMATS: [&str; 7] = [
    "SafeTensor",
    "PickleTensor",
    "GGUF",
    "Diffusers",
    "Core ML",
    "ONNX",
    "Other",
];
/// The longest `fp=` value the download route accepts.
const MAX_FP_CHARS: usize = 64;
/// Path prefix of the download route, the one hop from the API to storage.
pub(crate) const DOWNLOAD_ROUTE_PREFIX: &str = "/api/download/models/";

/// Why the download route refuses, in the order the real handler checks (§6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Quota,
    BadParameter(String),
    FileNotFound,
    Archived,
    DownloadsDisabled,
    LoginRequired,
    EarlyAccess { deadline: String },
    NoGrant,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Quota => StatusCode::TOO_MANY_REQUESTS,
            Refusal::BadParameter(_) => StatusCode::BAD_REQUEST,
            Refusal::FileNotFound => StatusCode::NOT_FOUND,
            Refusal::Archived => StatusCode::GONE,
            Refusal::DownloadsDisabled | Refusal::LoginRequired => StatusCode::UNAUTHORIZED,
            Refusal::EarlyAccess { .. } | Refusal::NoGrant => StatusCode::FORBIDDEN,
        }
    }

    fn json(&self) -> Value {
        match self {
            Refusal::Quota => json!({ "error": MSG_QUOTA }),
            Refusal::BadParameter(message) => json!({ "error": message }),
            Refusal::FileNotFound => json!({ "error": MSG_FILE_NOT_FOUND }),
            Refusal::Archived => json!({ "error": MSG_ARCHIVED }),
            Refusal::DownloadsDisabled => {
                json!({ "error": "Unauthorized", "message": MSG_DOWNLOADS_DISABLED })
            }
            Refusal::LoginRequired => {
                json!({ "error": "Unauthorized", "message": MSG_LOGIN_REQUIRED })
            }
            Refusal::EarlyAccess { deadline } => {
                json!({ "error": "Early Access", "deadline": deadline, "message": MSG_EARLY_ACCESS })
            }
            Refusal::NoGrant => json!({ "error": MSG_NO_GRANT }),
        }
    }

    /// The plain-text body a browser gets: the most specific message of the JSON body.
    fn text(&self) -> String {
        let body = self.json();
        body.get("message")
            .or_else(|| body.get("error"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    fn response(&self, browser: bool, login_url: &str) -> Response {
        match (browser, self) {
            (false, _) => json_response(self.status(), &self.json()),
            (true, Refusal::LoginRequired) => {
                let mut res = Response::new(Body::empty());
                *res.status_mut() = StatusCode::FOUND;
                set_header(&mut res, header::LOCATION, login_url);
                res
            }
            (true, _) => response(self.status(), "text/plain; charset=utf-8", self.text()),
        }
    }
}

/// The file-choosing parameters of the download route.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FileSelection {
    file_id: Option<u64>,
    file_type: Option<String>,
    format: Option<String>,
    size: Option<String>,
    fp: Option<String>,
}

impl FileSelection {
    pub(crate) fn parse(params: &QueryParams) -> Result<FileSelection, Refusal> {
        let bad = |name: &str, value: &str| {
            Refusal::BadParameter(format!("Invalid value for {name}: {value}"))
        };
        let file_id = params
            .get("fileId")
            .map(|raw| raw.parse().map_err(|_| bad("fileId", raw)))
            .transpose()?;
        let checked = |name: &str, allowed: &dyn Fn(&str) -> bool| {
            params
                .get(name)
                .map(|v| {
                    if allowed(v) {
                        Ok(v.to_owned())
                    } else {
                        Err(bad(name, v))
                    }
                })
                .transpose()
        };
        Ok(FileSelection {
            file_id,
            file_type: checked("type", &|v| MODEL_FILE_TYPES.contains(&v))?,
            format: checked("format", &|v| FILE_FORMATS.contains(&v))?,
            size: checked("size", &|v| v == "full" || v == "pruned")?,
            fp: checked("fp", &|v| v.chars().count() <= MAX_FP_CHARS)?,
        })
    }

    fn has_preferences(&self) -> bool {
        self.file_type.is_some()
            || self.format.is_some()
            || self.size.is_some()
            || self.fp.is_some()
    }

    /// Score of §6.2: weights first, then format, size and fp against the wanted values.
    fn score(&self, file: &FakeFile) -> i32 {
        let vote = |wanted: &str, actual: &Option<String>, weight: i32| {
            if actual.as_deref() == Some(wanted) {
                weight
            } else {
                -weight
            }
        };
        let weights = if WEIGHT_FILE_TYPES.contains(&file.file_type.as_str()) {
            1000
        } else {
            0
        };
        1000 + weights
            + vote(
                self.format.as_deref().unwrap_or("SafeTensor"),
                &file.format,
                100,
            )
            + vote(
                self.size.as_deref().unwrap_or("pruned"),
                &file.size_kind,
                10,
            )
            + vote(self.fp.as_deref().unwrap_or("fp16"), &file.fp, 1)
    }

    fn matches_every_given(&self, file: &FakeFile) -> bool {
        let same =
            |wanted: &Option<String>, actual: &Option<String>| wanted.is_none() || wanted == actual;
        self.file_type.as_ref().is_none_or(|t| *t == file.file_type)
            && same(&self.format, &file.format)
            && same(&self.size, &file.size_kind)
            && same(&self.fp, &file.fp)
    }

    /// The file the route would serve, or `None` for a 404.
    pub(crate) fn choose<'v>(&self, version: &'v FakeVersion) -> Option<&'v FakeFile> {
        if let Some(id) = self.file_id {
            return version.files.iter().find(|f| f.id == id);
        }
        if !self.has_preferences() {
            return version
                .files
                .iter()
                .find(|f| f.primary)
                .or(version.files.first());
        }
        let mut best: Option<&FakeFile> = None;
        for file in version
            .files
            .iter()
            .filter(|f| self.file_type.as_ref().is_none_or(|t| *t == f.file_type))
        {
            if best.is_none_or(|b| self.score(file) > self.score(b)) {
                best = Some(file);
            }
        }
        best.filter(|f| self.matches_every_given(f))
    }
}

fn is_browser(headers: &HeaderMap) -> bool {
    let agent = header_str(headers, &header::USER_AGENT)
        .unwrap_or_default()
        .to_lowercase();
    ["mozilla", "chrome", "safari", "firefox", "opera", "edge"]
        .iter()
        .any(|marker| agent.contains(marker))
}

impl Shared {
    /// The download route's decision: a signed storage URL, or why not.
    fn resolve(
        &self,
        version_id: &str,
        params: &QueryParams,
        signed_in: bool,
    ) -> Result<String, Refusal> {
        if self.knob_state().quota_reached() {
            return Err(Refusal::Quota);
        }
        let version_id: u64 = version_id
            .parse()
            .map_err(|_| Refusal::BadParameter(format!("Invalid modelVersionId: {version_id}")))?;
        let selection = FileSelection::parse(params)?;
        let (model, version) = self.version(version_id).ok_or(Refusal::FileNotFound)?;
        let file = selection.choose(version).ok_or(Refusal::FileNotFound)?;
        match model.mode.as_deref() {
            Some("Archived") => return Err(Refusal::Archived),
            Some(_) => return Err(Refusal::FileNotFound),
            None => {}
        }
        match &version.access {
            Access::Public => {}
            Access::LoginRequired if signed_in => {}
            Access::LoginRequired => return Err(Refusal::LoginRequired),
            Access::DownloadsDisabled => return Err(Refusal::DownloadsDisabled),
            Access::EarlyAccess { deadline } => {
                return Err(Refusal::EarlyAccess {
                    deadline: deadline.clone(),
                });
            }
            Access::NoGrant => return Err(Refusal::NoGrant),
        }
        let ttl = {
            let mut state = self.knob_state();
            state.resolves += 1;
            state.knobs.url_ttl
        };
        self.stats.resolves.fetch_add(1, Ordering::SeqCst);
        Ok(self.signed_url(file, ttl))
    }
}

pub(crate) async fn resolve_download(
    State(shared): State<Arc<Shared>>,
    Path(version_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = QueryParams::parse(query.as_deref());
    let signed_in = shared.signed_in(&headers, &params);
    match shared.resolve(&version_id, &params, signed_in) {
        Ok(location) => {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            set_header(&mut res, header::LOCATION, &location);
            set_header(&mut res, header::CACHE_CONTROL, "no-store");
            res
        }
        Err(refusal) => {
            let return_url = percent_encode(&format!("/api/download/models/{version_id}"));
            let login_url = format!("{}/login?returnUrl={return_url}", shared.api_url);
            refusal.response(is_browser(&headers), &login_url)
        }
    }
}
