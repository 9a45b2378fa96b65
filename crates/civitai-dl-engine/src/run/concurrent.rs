//! The concurrent driver: the same calls as the sequential one, metadata under one semaphore and
//! downloads under another. It stops starting work when the run stops or the failsafe trips, lets
//! what is in flight finish, and returns what it did not do, so nothing is lost in a hand-over.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::lock;
use crate::run::{Failsafe, JobOutcome, Mode, PlanOutcome, Unit, Work};

/// How many of each kind of work may be in flight.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Targets being planned (API calls).
    pub api: usize,
    /// Model files being processed.
    pub downloads: usize,
}

/// What the spawned tasks share.
struct Driver<U: Unit> {
    unit: Arc<U>,
    failsafe: Arc<Failsafe>,
    api: Arc<Semaphore>,
    downloads: Arc<Semaphore>,
    mode: Mode,
    tracker: TaskTracker,
    /// Work not started because the run stopped or the failsafe tripped.
    not_started: Mutex<Vec<Work<U::Target, U::Job>>>,
    /// Jobs that failed transiently after the failsafe tripped: they go first in the returned
    /// queue, for the sequential driver to try once more.
    deferred: Mutex<Vec<Work<U::Target, U::Job>>>,
}

/// Run `queue` until it is done, the run stops or `failsafe` trips. Returns the work left for the
/// sequential driver: deferred jobs first, then what was never started, in queue order.
pub async fn run_concurrent<U: Unit>(
    unit: &Arc<U>,
    failsafe: &Arc<Failsafe>,
    limits: Limits,
    queue: Vec<Work<U::Target, U::Job>>,
    mode: Mode,
) -> Vec<Work<U::Target, U::Job>> {
    let driver = Arc::new(Driver {
        unit: unit.clone(),
        failsafe: failsafe.clone(),
        api: Arc::new(Semaphore::new(limits.api.max(1))),
        downloads: Arc::new(Semaphore::new(limits.downloads.max(1))),
        mode,
        tracker: TaskTracker::new(),
        not_started: Mutex::new(Vec::new()),
        deferred: Mutex::new(Vec::new()),
    });
    for work in queue {
        match work {
            Work::Plan(target) => driver.spawn_plan(target).await,
            Work::Fetch(job) => driver.spawn_fetch(*job).await,
        }
    }
    driver.tracker.close();
    driver.tracker.wait().await;
    let mut rest = std::mem::take(&mut *lock(&driver.deferred));
    rest.append(&mut lock(&driver.not_started));
    rest
}

impl<U: Unit> Driver<U> {
    /// Plan one target under an API permit; its jobs start as soon as they are known. Boxed
    /// because a listing's page plans the page after it from inside its task.
    fn spawn_plan(
        self: &Arc<Self>,
        target: U::Target,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.spawn_plan_now(target))
    }

    async fn spawn_plan_now(self: &Arc<Self>, target: U::Target) {
        let Some(permit) = self.acquire(&self.api).await else {
            lock(&self.not_started).push(Work::Plan(target));
            return;
        };
        let driver = self.clone();
        self.tracker.spawn(async move {
            let outcome = driver.unit.plan(&target).await;
            drop(permit);
            match outcome {
                PlanOutcome::Planned { jobs, next } => {
                    for job in jobs {
                        driver.spawn_fetch(job).await;
                    }
                    // Once this page's jobs hold their permits, the next page is asked for.
                    if let Some(next) = next {
                        driver.spawn_plan(next).await;
                    }
                }
                PlanOutcome::Transient(error) => driver.settle_target(target, error),
            }
        });
    }

    /// Process one job under a download permit, or keep it for later when no more work may
    /// start.
    async fn spawn_fetch(self: &Arc<Self>, job: U::Job) {
        let Some(permit) = self.acquire(&self.downloads).await else {
            lock(&self.not_started).push(Work::Fetch(Box::new(job)));
            return;
        };
        let driver = self.clone();
        self.tracker.spawn(async move {
            let outcome = driver.unit.process(job, driver.mode).await;
            drop(permit);
            driver.settle(outcome);
        });
    }

    /// A transient failure after the failsafe tripped may be the concurrency's fault: the
    /// sequential path gets one more try. Before that, it is final, as on the sequential path.
    fn settle(&self, outcome: JobOutcome<U::Job, U::Error>) {
        let JobOutcome::Transient { job, error } = outcome else {
            return;
        };
        if self.may_defer() {
            self.unit.defer(&job, &error);
            lock(&self.deferred).push(Work::Fetch(Box::new(job)));
        } else {
            self.unit.give_up(&job, error);
        }
    }

    /// A target's passing failure, judged as a job's (see [`Self::settle`]).
    fn settle_target(&self, target: U::Target, error: U::PlanError) {
        if self.may_defer() {
            self.unit.defer_target(&target, &error);
            lock(&self.deferred).push(Work::Plan(target));
        } else {
            self.unit.give_up_target(&target, error);
        }
    }

    /// Whether a passing failure goes to the sequential path: the failsafe tripped, so the
    /// concurrency may be to blame, and the run goes on.
    fn may_defer(&self) -> bool {
        self.failsafe.tripped().is_some() && self.unit.may_continue()
    }

    /// A permit, unless no more work may start (checked again once the permit is held, since
    /// the wait may have been long).
    async fn acquire(&self, semaphore: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        if !self.may_start() {
            return None;
        }
        let permit = semaphore.clone().acquire_owned().await.ok()?;
        self.may_start().then_some(permit)
    }

    fn may_start(&self) -> bool {
        self.unit.may_continue() && self.failsafe.tripped().is_none()
    }
}
