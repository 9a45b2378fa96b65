//! Observation: the engine reports what happens through [`Reporter`] and never decides how it is
//! shown or judged. Metrics, the failsafe and the progress bars are subscribers; the command line
//! composes them into one [`Fanout`], so the summary, the failsafe and the bars all see the same
//! stream of events and cannot disagree about what happened.
//!
//! The trait has a default, empty body for every event, so a subscriber implements only what it
//! cares about (the failsafe only counts attempts; the bars only follow transfers).

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use crate::http::retry::{NextAttempt, RetryClass, Retryable};

pub mod json_path;
pub mod metrics;
pub mod monitor;
pub mod rates;
pub mod report;
pub mod requests;

/// How one request attempt went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// It succeeded.
    Success,
    /// It failed (any failure other than a timeout).
    Error,
    /// It timed out.
    Timeout,
}

impl Attempt {
    /// How a request attempt went, for the failsafe and the rates: `None` for failures that say
    /// nothing about the server's health or the concurrency (404, 401, a full disk: retrying
    /// cannot help).
    pub fn judge<T, E: Retryable>(
        result: &Result<T, E>,
        is_timeout: impl Fn(&E) -> bool,
    ) -> Option<Attempt> {
        match result {
            Ok(_) => Some(Attempt::Success),
            Err(error) if is_timeout(error) => Some(Attempt::Timeout),
            Err(error) => match error.retry_class() {
                // A renewed credential (an expired signed URL) says nothing about the server's
                // health, so the failsafe and the error rate do not see it.
                RetryClass::Fatal | RetryClass::Renewed => None,
                RetryClass::Transient { .. } => Some(Attempt::Error),
            },
        }
    }
}

/// What kind of request an attempt was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A call to the Civitai API (metadata, key check, download resolve).
    Api,
    /// A transfer from storage (a whole file, or one segment of it).
    Transfer,
}

/// The events of a run. Every method has an empty default.
pub trait Reporter: Send + Sync {
    /// A request attempt ended; `latency` is known when an answer arrived.
    fn on_attempt(
        &self,
        _operation: Operation,
        _latency: Option<Duration>,
        _attempt: Option<Attempt>,
    ) {
    }
    /// A request is about to be retried.
    fn on_retry(&self) {}
    /// The download route gave a signed URL (each counts against Civitai's download quota).
    fn on_resolve(&self) {}
    /// Bytes written to disk.
    fn on_bytes(&self, _bytes: u64) {}
    /// An operation (an API call with its retries) ended after `attempts` attempts.
    fn on_operation_done(&self, _ok: bool, _attempts: u32) {}
    /// A file ended: `transferred` bytes in `elapsed`, after `attempts` attempts.
    fn on_file_done(&self, _ok: bool, _transferred: u64, _elapsed: Duration, _attempts: u32) {}
    /// Planning found `files` more model files to process, of `bytes` in all (as far as
    /// Civitai lists their sizes).
    fn on_planned(&self, _files: u64, _bytes: u64) {}
    /// One of the targets the run was given is planned (or given up): its files are known, or
    /// its failure is. With the count of targets, the "planning N/M" progress.
    fn on_target_planned(&self) {}
    /// A model file starts being processed (see [`ActiveFile`]).
    fn on_model_file_started(&self) {}
    /// A model file stops being processed (settled, handed back or interrupted).
    fn on_model_file_ended(&self) {}
    /// A model file's outcome is recorded: it will not be tried again in this run. Of the
    /// `planned` bytes its plan counted, `transferred` arrived in this run (less when it was
    /// present, resumed or failed).
    fn on_model_file_settled(&self, _planned: u64, _transferred: u64) {}
    /// A model file was downloaded and is at its final path.
    fn on_model_file_saved(&self, _saved: &SavedFile) {}
    /// The concurrent driver handed its queue to the sequential one.
    fn on_failsafe_switch(&self) {}
    /// A transfer of `name` begins; the handle follows its bytes until it is dropped.
    fn on_transfer_start(&self, _name: &str) -> Box<dyn TransferProgress> {
        Box::new(NoProgress)
    }
}

/// A model file that reached its final path in this run.
#[derive(Clone, Debug)]
pub struct SavedFile {
    /// Where it is, under the output folder.
    pub path: std::path::PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Bytes received in this run (less than `bytes` after a resume).
    pub transferred: u64,
    /// From the start of its processing to the rename.
    pub elapsed: Duration,
    /// Whether Civitai's SHA-256 was checked (false when it publishes none).
    pub verified: bool,
}

/// The progress of one transfer.
pub trait TransferProgress: Send + Sync {
    /// `done` bytes of `total` are on disk (a resumed transfer starts past zero).
    fn set(&self, done: u64, total: Option<u64>);
    /// `bytes` more arrived.
    fn advance(&self, bytes: u64);
}

/// A transfer nobody follows.
pub struct NoProgress;

impl TransferProgress for NoProgress {
    fn set(&self, _done: u64, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
}

/// Every subscriber of a run, in one [`Reporter`].
#[derive(Clone, Default)]
pub struct Fanout {
    subscribers: Vec<Arc<dyn Reporter>>,
}

impl Fanout {
    /// A fan-out to `subscribers`, in order.
    pub fn new(subscribers: Vec<Arc<dyn Reporter>>) -> Fanout {
        Fanout { subscribers }
    }

    fn each(&self, event: impl Fn(&dyn Reporter)) {
        for subscriber in &self.subscribers {
            event(subscriber.as_ref());
        }
    }
}

impl Reporter for Fanout {
    fn on_attempt(
        &self,
        operation: Operation,
        latency: Option<Duration>,
        attempt: Option<Attempt>,
    ) {
        self.each(|s| s.on_attempt(operation, latency, attempt));
    }
    fn on_retry(&self) {
        self.each(|s| s.on_retry());
    }
    fn on_resolve(&self) {
        self.each(|s| s.on_resolve());
    }
    fn on_bytes(&self, bytes: u64) {
        self.each(|s| s.on_bytes(bytes));
    }
    fn on_operation_done(&self, ok: bool, attempts: u32) {
        self.each(|s| s.on_operation_done(ok, attempts));
    }
    fn on_file_done(&self, ok: bool, transferred: u64, elapsed: Duration, attempts: u32) {
        self.each(|s| s.on_file_done(ok, transferred, elapsed, attempts));
    }
    fn on_planned(&self, files: u64, bytes: u64) {
        self.each(|s| s.on_planned(files, bytes));
    }
    fn on_target_planned(&self) {
        self.each(|s| s.on_target_planned());
    }
    fn on_model_file_started(&self) {
        self.each(|s| s.on_model_file_started());
    }
    fn on_model_file_ended(&self) {
        self.each(|s| s.on_model_file_ended());
    }
    fn on_model_file_settled(&self, planned: u64, transferred: u64) {
        self.each(|s| s.on_model_file_settled(planned, transferred));
    }
    fn on_model_file_saved(&self, saved: &SavedFile) {
        self.each(|s| s.on_model_file_saved(saved));
    }
    fn on_failsafe_switch(&self) {
        self.each(|s| s.on_failsafe_switch());
    }
    fn on_transfer_start(&self, name: &str) -> Box<dyn TransferProgress> {
        Box::new(FanoutTransfer(
            self.subscribers
                .iter()
                .map(|s| s.on_transfer_start(name))
                .collect(),
        ))
    }
}

struct FanoutTransfer(Vec<Box<dyn TransferProgress>>);

impl TransferProgress for FanoutTransfer {
    fn set(&self, done: u64, total: Option<u64>) {
        self.0.iter().for_each(|t| t.set(done, total));
    }
    fn advance(&self, bytes: u64) {
        self.0.iter().for_each(|t| t.advance(bytes));
    }
}

/// Marks one model file as being processed while it lives; dropping it (also when its future is
/// dropped mid-way) reports the end, so the active-files gauge cannot drift.
#[must_use = "the file counts as active only while the guard lives"]
pub struct ActiveFile<'a> {
    reporter: &'a dyn Reporter,
}

impl<'a> ActiveFile<'a> {
    /// Report the start now and the end on drop.
    pub fn start(reporter: &'a dyn Reporter) -> ActiveFile<'a> {
        reporter.on_model_file_started();
        ActiveFile { reporter }
    }
}

impl Drop for ActiveFile<'_> {
    fn drop(&mut self) {
        self.reporter.on_model_file_ended();
    }
}

/// The `on_retry` every caller hands to [`RetryPolicy::run`](crate::http::retry::RetryPolicy::run):
/// report the retry and log what is retried, when, which attempt of how many, and why, in one
/// line and one format for API calls, files and segments alike. It lives here, not beside the
/// policy, so the policy stays a pure leaf. `what` and the error never hold a key or a signed
/// URL's query: API calls are named by host and path, files by their label.
pub fn announce<'a, E: Display>(
    reporter: &'a dyn Reporter,
    what: impl Display + 'a,
) -> impl FnMut(&E, NextAttempt) + 'a {
    move |error, next| {
        reporter.on_retry();
        tracing::warn!("{}", retry_line(&what, error, next));
    }
}

/// `retrying GET civitai.com/api/v1/models/1 in 5 s (attempt 2 of 5): Civitai server error 503`.
fn retry_line(what: &dyn Display, error: &dyn Display, next: NextAttempt) -> String {
    if next.renewed {
        return format!("retrying {what} at once with a fresh signed URL: {error}");
    }
    let secs = next.delay.as_secs_f64();
    // Whole seconds read best; the short waits of tests and Retry-After: 0 keep their size.
    let wait = if secs >= 1.0 {
        format!("{secs:.0} s")
    } else {
        format!("{} ms", next.delay.as_millis())
    };
    format!(
        "retrying {what} in {wait} (attempt {} of {}): {error}",
        next.number, next.of
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Reporter for Log {
        fn on_bytes(&self, bytes: u64) {
            self.0.lock().unwrap().push(format!("bytes {bytes}"));
        }
        fn on_transfer_start(&self, name: &str) -> Box<dyn TransferProgress> {
            self.0.lock().unwrap().push(format!("start {name}"));
            Box::new(NoProgress)
        }
    }

    #[test]
    fn a_fanout_tells_every_subscriber_in_order() {
        let (a, b) = (Arc::new(Log::default()), Arc::new(Log::default()));
        let fanout = Fanout::new(vec![a.clone(), b.clone()]);
        fanout.on_bytes(7);
        fanout.on_transfer_start("x").advance(1);
        fanout.on_retry();
        for log in [a, b] {
            assert_eq!(*log.0.lock().unwrap(), ["bytes 7", "start x"]);
        }
    }

    #[test]
    fn a_retry_line_says_what_when_which_attempt_and_why() {
        let next = |delay_ms, renewed| NextAttempt {
            number: 2,
            of: 5,
            delay: Duration::from_millis(delay_ms),
            renewed,
        };
        assert_eq!(
            retry_line(
                &"GET civitai.com/api/v1/models/1",
                &"Civitai server error 503",
                next(5_170, false)
            ),
            "retrying GET civitai.com/api/v1/models/1 in 5 s (attempt 2 of 5): Civitai server error 503"
        );
        assert_eq!(
            retry_line(&"x", &"reset", next(20, false)),
            "retrying x in 20 ms (attempt 2 of 5): reset"
        );
        assert_eq!(
            retry_line(&"x", &"expired", next(0, true)),
            "retrying x at once with a fresh signed URL: expired"
        );
    }

    #[test]
    fn an_active_file_ends_when_dropped() {
        #[derive(Default)]
        struct Gauge(std::sync::atomic::AtomicI64);
        impl Reporter for Gauge {
            fn on_model_file_started(&self) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            fn on_model_file_ended(&self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let gauge = Gauge::default();
        let guard = ActiveFile::start(&gauge);
        assert_eq!(gauge.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(guard);
        assert_eq!(gauge.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
