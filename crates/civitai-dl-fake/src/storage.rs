//! The storage origin: signed, expiring object URLs, Range, paced generated bodies and the per-file
//! faults (corrupt bytes, resets, stalls, HTML and disguised JSON errors, range faults), plus
//! preview images.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use crate::content::{CHUNK_BYTES, FileBytes, image_bytes};
use crate::query::{QueryParams, percent_encode};
use crate::response::{
    HTML_CONTENT_TYPE, MSG_FILE_NOT_FOUND, STORAGE_ERROR_PAGE, outage_response, response,
    set_header, storage_error,
};
use crate::state::{Shared, header_str, unix_ms};
use crate::stats::OpenResponse;
use crate::{FakeFile, FileFaults, lock};

/// Paced connections send about this many chunks per second, so a low bandwidth cap stays smooth.
const PACED_CHUNKS_PER_SEC: u64 = 20;
/// Smallest paced chunk, so a tiny bandwidth cap does not degrade into one-byte writes.
const MIN_PACED_CHUNK_BYTES: u64 = 1024;
/// Pause before a reset so hyper flushes the headers and the bytes already produced; an error in
/// the same poll would drop them and the client would see no response at all.
const RESET_FLUSH_DELAY: Duration = Duration::from_millis(20);

/// What part of a file a storage GET asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteSpan {
    Whole,
    /// Inclusive byte positions.
    Partial {
        first: u64,
        last: u64,
    },
    Unsatisfiable,
}

/// Reads `bytes=N-` / `bytes=N-M`; anything else is ignored (whole file), like S3 does with a
/// Range it cannot parse.
pub(crate) fn parse_range(header: Option<&str>, size: u64) -> ByteSpan {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteSpan::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return ByteSpan::Whole;
    };
    let Ok(first) = first.trim().parse::<u64>() else {
        return ByteSpan::Whole;
    };
    let last = match last.trim() {
        "" => None,
        text => match text.parse::<u64>() {
            Ok(last) if last >= first => Some(last),
            _ => return ByteSpan::Whole,
        },
    };
    if first >= size {
        return ByteSpan::Unsatisfiable;
    }
    ByteSpan::Partial {
        first,
        last: last.map_or(size - 1, |l| l.min(size - 1)),
    }
}

/// How a faulty attempt ends its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyCut {
    Reset { after: u64 },
    Stall { after: u64 },
}

impl BodyCut {
    fn after(self) -> u64 {
        match self {
            BodyCut::Reset { after } | BodyCut::Stall { after } => after,
        }
    }

    /// The cut that applies to this attempt; a reset wins over a stall if both are configured.
    fn for_attempt(faults: &FileFaults, attempt: u32) -> Option<BodyCut> {
        let active = |fault: Option<(u64, u32)>| fault.filter(|&(_, n)| attempt <= n);
        active(faults.reset_after)
            .map(|(after, _)| BodyCut::Reset { after })
            .or_else(|| active(faults.stall_after).map(|(after, _)| BodyCut::Stall { after }))
    }
}

/// Marks one file GET as open, for `storage_refuses_ranges_when_concurrent` and
/// `storage_max_open_per_file`.
struct OpenFileGet {
    shared: Arc<Shared>,
    file_id: u64,
}

impl OpenFileGet {
    fn new(shared: &Arc<Shared>, file_id: u64) -> OpenFileGet {
        *lock(&shared.open_file_gets).entry(file_id).or_default() += 1;
        OpenFileGet {
            shared: Arc::clone(shared),
            file_id,
        }
    }
}

impl Drop for OpenFileGet {
    fn drop(&mut self) {
        if let Some(open) = lock(&self.shared.open_file_gets).get_mut(&self.file_id) {
            *open = open.saturating_sub(1);
        }
    }
}

/// A generated file body being streamed, with its faults and pacing.
struct FileStream {
    shared: Arc<Shared>,
    bytes: FileBytes,
    next: u64,
    end: u64,
    sent: u64,
    corrupt_at: Option<u64>,
    cut: Option<BodyCut>,
    bandwidth: Option<u64>,
    started: Instant,
    finished: bool,
    _open: (OpenResponse, OpenFileGet),
}

impl FileStream {
    fn chunk_limit(&self) -> u64 {
        self.bandwidth.map_or(CHUNK_BYTES, |bps| {
            (bps / PACED_CHUNKS_PER_SEC).clamp(MIN_PACED_CHUNK_BYTES, CHUNK_BYTES)
        })
    }

    async fn next_chunk(mut self) -> Option<(io::Result<Bytes>, FileStream)> {
        if self.finished || self.next >= self.end {
            return None;
        }
        let mut len = self.chunk_limit().min(self.end - self.next);
        if let Some(cut) = self.cut {
            if self.sent >= cut.after() {
                self.finished = true;
                match cut {
                    BodyCut::Stall { .. } => self.shared.shutdown.cancelled().await,
                    BodyCut::Reset { .. } => tokio::time::sleep(RESET_FLUSH_DELAY).await,
                }
                let error = io::Error::new(io::ErrorKind::ConnectionReset, "fault: body cut");
                return Some((Err(error), self));
            }
            len = len.min(cut.after() - self.sent);
        }
        if let Some(bps) = self.bandwidth {
            let due = Duration::from_secs_f64((self.sent + len) as f64 / bps as f64);
            tokio::select! {
                () = tokio::time::sleep_until((self.started + due).into()) => {}
                () = self.shared.shutdown.cancelled() => {}
            }
        }
        if self.shared.shutdown.is_cancelled() {
            // A dropped server must not keep feeding slow bodies: cut them like a dying host.
            self.finished = true;
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, "fake server stopped");
            return Some((Err(error), self));
        }
        let mut buf = vec![0u8; len as usize];
        self.bytes.fill(self.next, &mut buf);
        if let Some(at) = self
            .corrupt_at
            .filter(|at| (self.next..self.next + len).contains(at))
        {
            buf[(at - self.next) as usize] ^= 0xFF;
        }
        self.next += len;
        self.sent += len;
        self.shared
            .stats
            .storage_bytes
            .fetch_add(len, Ordering::SeqCst);
        Some((Ok(Bytes::from(buf)), self))
    }
}

/// `Content-Disposition` with an ASCII fallback and, for other names, the RFC 5987 form.
pub(crate) fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '_',
        })
        .collect();
    if fallback == name {
        format!("attachment; filename=\"{name}\"")
    } else {
        format!(
            "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
            percent_encode(name)
        )
    }
}

/// Why storage refuses a request before serving anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageRefusal {
    Outage,
    NoSuchKey,
    InvalidSignature,
    Expired,
}

impl StorageRefusal {
    fn response(self) -> Response {
        let denied = |message| storage_error(StatusCode::FORBIDDEN, "AccessDenied", message);
        match self {
            StorageRefusal::Outage => outage_response(),
            StorageRefusal::NoSuchKey => storage_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            ),
            StorageRefusal::InvalidSignature => denied("Invalid signature"),
            StorageRefusal::Expired => denied("Request has expired"),
        }
    }
}

impl Shared {
    /// Counts a storage request and refuses it during an outage; the guard keeps it counted as
    /// open for as long as the caller holds it.
    fn begin_storage_request(&self, headers: &HeaderMap) -> Result<OpenResponse, StorageRefusal> {
        let open = self.stats.storage_open.enter();
        self.stats.storage_requests.fetch_add(1, Ordering::SeqCst);
        if headers.contains_key(header::AUTHORIZATION) {
            self.stats.auth_at_storage.fetch_add(1, Ordering::SeqCst);
        }
        if self.knob_state().in_outage() {
            return Err(StorageRefusal::Outage);
        }
        Ok(open)
    }

    /// Checks the object path and signature of a storage URL.
    fn authorize_object(
        &self,
        file_id: &str,
        key: &str,
        params: &QueryParams,
    ) -> Result<&FakeFile, StorageRefusal> {
        let file = file_id
            .parse()
            .ok()
            .and_then(|id| self.file(id))
            .filter(|f| self.object_key(f) == key)
            .ok_or(StorageRefusal::NoSuchKey)?;
        let expires = params
            .get("expires")
            .and_then(|e| e.parse::<u64>().ok())
            .filter(|&e| params.get("sig") == Some(&self.signature(file.id, e)))
            .ok_or(StorageRefusal::InvalidSignature)?;
        if unix_ms() >= expires {
            return Err(StorageRefusal::Expired);
        }
        Ok(file)
    }

    fn next_attempt(&self, file_id: u64) -> u32 {
        let mut attempts = lock(&self.storage_attempts);
        let attempt = attempts.entry(file_id).or_default();
        *attempt = attempt.saturating_add(1);
        *attempt
    }

    /// GETs of `file_id` whose body is still being sent.
    fn open_gets(&self, file_id: u64) -> u32 {
        lock(&self.open_file_gets)
            .get(&file_id)
            .copied()
            .unwrap_or(0)
    }

    /// Status and headers of a file answer, with an empty body.
    fn file_head(&self, file: &FakeFile, span: ByteSpan) -> Response {
        let mut res = Response::new(Body::empty());
        let (status, length) = match span {
            ByteSpan::Whole => (StatusCode::OK, file.size),
            ByteSpan::Partial { first, last } => {
                let range = format!("bytes {first}-{last}/{}", file.size);
                set_header(&mut res, header::CONTENT_RANGE, &range);
                (StatusCode::PARTIAL_CONTENT, last - first + 1)
            }
            ByteSpan::Unsatisfiable => {
                set_header(
                    &mut res,
                    header::CONTENT_RANGE,
                    &format!("bytes */{}", file.size),
                );
                (StatusCode::RANGE_NOT_SATISFIABLE, 0)
            }
        };
        *res.status_mut() = status;
        let etag = format!(
            "\"{}\"",
            self.real_sha256(file).get(..16).unwrap_or_default()
        );
        set_header(&mut res, header::CONTENT_TYPE, "application/octet-stream");
        set_header(&mut res, header::CONTENT_LENGTH, &length.to_string());
        set_header(&mut res, header::ACCEPT_RANGES, "bytes");
        set_header(&mut res, header::ETAG, &etag);
        set_header(
            &mut res,
            header::CONTENT_DISPOSITION,
            &content_disposition(&file.name),
        );
        res
    }
}

/// Serves one attempt of a signed file GET/HEAD, applying the file's faults.
pub(crate) async fn serve_file(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path((file_id, key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let latency = shared.knob_state().knobs.storage_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let open = match shared.begin_storage_request(&headers) {
        Ok(open) => open,
        Err(refusal) => return refusal.response(),
    };
    let params = QueryParams::parse(query.as_deref());
    let file = match shared.authorize_object(&file_id, &key, &params) {
        Ok(file) => file,
        Err(refusal) => return refusal.response(),
    };
    let range = header_str(&headers, &header::RANGE).map(str::to_owned);
    let span = if file.faults.ignore_range {
        ByteSpan::Whole
    } else {
        parse_range(range.as_deref(), file.size)
    };
    if method == Method::HEAD {
        return shared.file_head(file, span);
    }
    lock(&shared.stats.ranges).push((file.id, range.clone()));
    let (refuse_concurrent, max_open, retry_after, bandwidth) = {
        let state = shared.knob_state();
        (
            state.knobs.storage_refuses_ranges_when_concurrent,
            state.knobs.storage_max_open_per_file,
            state.knobs.retry_after_secs,
            state.knobs.bandwidth.filter(|&bps| bps > 0),
        )
    };
    if refuse_concurrent && range.is_some() && shared.open_gets(file.id) > 0 {
        return storage_error(
            StatusCode::TOO_MANY_REQUESTS,
            "SlowDown",
            "Please reduce your request rate.",
        );
    }
    // Counted from here, so GETs arriving together cannot all pass the limit before any of them
    // is open.
    let this_get = OpenFileGet::new(&shared, file.id);
    if max_open.is_some_and(|max| shared.open_gets(file.id) > max) {
        shared.stats.slow_downs.fetch_add(1, Ordering::Relaxed);
        let mut res = storage_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        );
        set_header(&mut res, header::RETRY_AFTER, &retry_after.to_string());
        return res;
    }
    let attempt = shared.next_attempt(file.id);
    if attempt <= file.faults.forbidden_attempts {
        return storage_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Blocked by the storage firewall",
        );
    }
    if attempt <= file.faults.html_attempts {
        return response(StatusCode::OK, HTML_CONTENT_TYPE, STORAGE_ERROR_PAGE);
    }
    if attempt <= file.faults.json_error_attempts {
        return disguised_json_error();
    }
    let span = faulty_span(&file.faults, attempt, span);
    let mut res = shared.file_head(file, span);
    let (start, end) = match span {
        ByteSpan::Whole => (0, file.size),
        ByteSpan::Partial { first, last } => (first, last + 1),
        ByteSpan::Unsatisfiable => return res,
    };
    let stream = FileStream {
        shared: Arc::clone(&shared),
        bytes: FileBytes::of(file),
        next: start,
        end,
        sent: 0,
        corrupt_at: (attempt <= file.faults.corrupt_attempts).then_some(start + (end - start) / 2),
        cut: BodyCut::for_attempt(&file.faults, attempt),
        bandwidth,
        started: Instant::now(),
        finished: false,
        _open: (open, this_get),
    };
    *res.body_mut() =
        Body::from_stream(futures_util::stream::unfold(stream, FileStream::next_chunk));
    res
}

/// A JSON error labelled as a binary file and streamed without a length, so neither the headers
/// nor the size give it away.
fn disguised_json_error() -> Response {
    let body = json!({ "error": MSG_FILE_NOT_FOUND }).to_string();
    let chunks = futures_util::stream::iter([Ok::<_, io::Error>(Bytes::from(body))]);
    let mut res = Response::new(Body::from_stream(chunks));
    set_header(&mut res, header::CONTENT_TYPE, "application/octet-stream");
    res
}

/// The span a ranged attempt is answered with once the range faults of this attempt apply.
pub(crate) fn faulty_span(faults: &FileFaults, attempt: u32, asked: ByteSpan) -> ByteSpan {
    let ByteSpan::Partial { first, last } = asked else {
        return asked;
    };
    if attempt <= faults.unsatisfiable_range_attempts {
        return ByteSpan::Unsatisfiable;
    }
    if attempt <= faults.misplaced_range_attempts && first > 0 {
        return ByteSpan::Partial {
            first: first - 1,
            last,
        };
    }
    asked
}

/// Serves `/images/{versionId}-{i}.jpeg`.
pub(crate) async fn serve_image(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let _open = match shared.begin_storage_request(&headers) {
        Ok(open) => open,
        Err(refusal) => return refusal.response(),
    };
    let latency = shared.knob_state().knobs.image_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let image = name
        .strip_suffix(".jpeg")
        .and_then(|stem| stem.split_once('-'))
        .and_then(|(v, i)| Some((v.parse::<u64>().ok()?, i.parse::<u32>().ok()?)))
        .filter(|&(v, i)| {
            shared
                .version(v)
                .is_some_and(|(_, version)| i < version.images)
        });
    let image = image.and_then(|(v, i)| Some((v, i, shared.version(v)?.1.image_format(i))));
    match image {
        Some((version_id, index, format)) => response(
            StatusCode::OK,
            format.content_type(),
            image_bytes(version_id, index, format),
        ),
        None => StorageRefusal::NoSuchKey.response(),
    }
}

pub(crate) async fn storage_not_found(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    let refusal = shared
        .begin_storage_request(&headers)
        .err()
        .unwrap_or(StorageRefusal::NoSuchKey);
    refusal.response()
}
