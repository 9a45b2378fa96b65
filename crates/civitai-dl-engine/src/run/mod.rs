//! Running planned work. One unit of work, two drivers, and the hand-over between them.
//!
//! - [`Unit`] is what the drivers run: metadata for one target ([`Unit::plan`]) and the whole job
//!   for one model file ([`Unit::process`]), which returns a [`JobOutcome`] instead of deciding
//!   what a failure means. [`job::Run`] is the real unit; the tests use a stub.
//! - [`sequential::run_sequential`] is a plain loop; [`concurrent::run_concurrent`] makes the same
//!   calls under semaphores, as a pipeline in which a file starts as soon as its metadata is known.
//! - [`run_with_failsafe`] picks the driver and, when the failsafe trips, hands what is left to the
//!   sequential driver. It is the only place that knows about both.
//!
//! Limits reach the unit as a [`Mode`] value passed with each job, so nothing flips flags on
//! shared objects from outside: after a switch the sequential driver simply passes
//! [`Mode::one_at_a_time`].

use std::future::Future;
use std::path::PathBuf;

use crate::fetch::Connections;

pub mod concurrent;
pub mod emergency;
pub mod failsafe;
pub mod job;
mod relocate;
pub mod sequential;
mod settled;
#[cfg(test)]
mod tests;

pub use failsafe::{Failsafe, Thresholds};
pub use job::{Run, RunParts};

/// Resolved concurrency: every limit is 1 unless experimental performance is on.
#[derive(Clone, Debug, PartialEq)]
pub struct Performance {
    /// Use the concurrent driver (with the failsafe behind it).
    pub concurrent: bool,
    /// API calls in flight.
    pub api: usize,
    /// Downloads in flight.
    pub downloads: usize,
    /// Previews in flight.
    pub images: usize,
    /// Connections per large file (1 = no segmenting).
    pub segments: usize,
    /// Files at least this large are segmented.
    pub segment_threshold: u64,
    /// Adaptive rate on.
    pub adaptive_rate: bool,
    /// When to fall back.
    pub thresholds: Thresholds,
    /// The emergency stop file (relative names are looked for in the working and output dirs).
    pub emergency_stop_file: PathBuf,
}

impl Performance {
    /// Storage connections that can be open at once.
    pub fn storage_connections(&self) -> usize {
        self.downloads * self.segments + self.images
    }
}

/// One item of queued work.
#[derive(Clone, Debug, PartialEq)]
pub enum Work<T, J> {
    /// Metadata still to fetch.
    Plan(T),
    /// A planned file still to fetch.
    Fetch(Box<J>),
}

/// How much one job may do at once; chosen by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// Previews of one model file fetched at once.
    pub previews: usize,
    /// Connections per file.
    pub connections: Connections,
}

impl Mode {
    /// The limits the settings ask for.
    pub fn configured(performance: &Performance) -> Mode {
        Mode {
            previews: performance.images.max(1),
            connections: Connections::AsConfigured,
        }
    }

    /// Everything one at a time: the failsafe's sequential path.
    pub fn one_at_a_time() -> Mode {
        Mode {
            previews: 1,
            connections: Connections::One,
        }
    }
}

/// What became of one job.
#[derive(Debug, PartialEq)]
pub enum JobOutcome<J, E> {
    /// Recorded for good: done, present, kept unverified, failed for a reason retrying cannot
    /// change, or interrupted (left resumable).
    Settled,
    /// Failed for a passing reason after the retry policy gave up; the driver decides whether
    /// to give up on it ([`Unit::give_up`]) or to try it once more later ([`Unit::defer`]).
    Transient {
        /// The job, to queue again.
        job: J,
        /// Why it failed.
        error: E,
    },
}

/// What planning one target gave.
#[derive(Debug, PartialEq)]
pub enum PlanOutcome<T, J, E> {
    /// Its jobs (none when it failed for good, which the unit has recorded), and what to plan
    /// after them: the next page of a listing, planned once this page's jobs are under way.
    Planned { jobs: Vec<J>, next: Option<T> },
    /// It failed for a passing reason; the driver decides, as for a job's.
    Transient(E),
}

impl<T, J, E> PlanOutcome<T, J, E> {
    /// Nothing to do, and nothing after it.
    pub fn nothing() -> Self {
        PlanOutcome::Planned {
            jobs: Vec::new(),
            next: None,
        }
    }
}

/// What the drivers run. Futures are `Send` so the concurrent driver can spawn them.
pub trait Unit: Send + Sync + 'static {
    /// What the user asked for.
    type Target: Send + Sync + 'static;
    /// One model file to fetch.
    type Job: Send + 'static;
    /// Why a job failed.
    type Error: Send + 'static;
    /// Why a target could not be planned.
    type PlanError: Send + 'static;

    /// The jobs of one target.
    fn plan(
        &self,
        target: &Self::Target,
    ) -> impl Future<Output = PlanOutcome<Self::Target, Self::Job, Self::PlanError>> + Send;
    /// Record a transient planning failure as final.
    fn give_up_target(&self, target: &Self::Target, error: Self::PlanError);
    /// Record that a transiently failed target goes back to the queue.
    fn defer_target(&self, target: &Self::Target, error: &Self::PlanError);
    /// The whole job for one model file, within `mode`'s limits.
    fn process(
        &self,
        job: Self::Job,
        mode: Mode,
    ) -> impl Future<Output = JobOutcome<Self::Job, Self::Error>> + Send;
    /// Record a transient failure as final.
    fn give_up(&self, job: &Self::Job, error: Self::Error);
    /// Record that a transiently failed job goes back to the queue.
    fn defer(&self, job: &Self::Job, error: &Self::Error);
    /// Whether new work may start (not interrupted, not stopped).
    fn may_continue(&self) -> bool;
    /// The failsafe tripped for `reason`; `remaining` items go on one at a time.
    fn switched_to_sequential(&self, reason: &str, remaining: usize);
}

/// Run `queue` with the driver `performance` asks for. The concurrent driver is watched by
/// `failsafe`: when it trips, the jobs that failed transiently after that and the work not yet
/// started run on the sequential driver, one at a time. A job is never lost or run twice in the
/// hand-over: the concurrent driver only returns work it did not start, and jobs it deferred.
pub async fn run_with_failsafe<U: Unit>(
    unit: &std::sync::Arc<U>,
    failsafe: &std::sync::Arc<Failsafe>,
    performance: &Performance,
    queue: Vec<Work<U::Target, U::Job>>,
) {
    let mode = Mode::configured(performance);
    if !performance.concurrent {
        sequential::run_sequential(unit.as_ref(), queue, mode).await;
        return;
    }
    let limits = concurrent::Limits {
        api: performance.api,
        downloads: performance.downloads,
    };
    let rest = concurrent::run_concurrent(unit, failsafe, limits, queue, mode).await;
    if let Some(reason) = failsafe.tripped()
        && unit.may_continue()
    {
        unit.switched_to_sequential(&reason, rest.len());
        sequential::run_sequential(unit.as_ref(), rest, Mode::one_at_a_time()).await;
    }
}
