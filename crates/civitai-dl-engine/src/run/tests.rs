//! The hand-over between the drivers, over a stub unit: which jobs run where, in which mode, and
//! that nothing is lost or settled twice when the failsafe trips.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::fetch::Connections;
use crate::observe::Attempt;

/// A unit whose jobs are numbers. Target `t` plans jobs `10t + 1` and `10t + 2`.
#[derive(Default)]
struct Stub {
    failsafe: Arc<Failsafe>,
    /// Processing this job trips the failsafe.
    trips_on: Option<u32>,
    /// These jobs fail transiently the first time they are processed.
    transient_once: HashSet<u32>,
    /// Processing this job stops the run.
    stops_on: Option<u32>,
    /// Planning these targets fails transiently the first time.
    plan_fails_once: HashSet<u32>,
    stopped: AtomicBool,
    log: Mutex<Vec<Event>>,
}

#[derive(Clone, Debug, PartialEq)]
enum Event {
    Planned(u32),
    Processed(u32, Mode),
    GaveUp(u32),
    Deferred(u32),
    TargetGaveUp(u32),
    TargetDeferred(u32),
    Switched(usize),
}

impl Default for Failsafe {
    fn default() -> Self {
        Failsafe::new(Thresholds::default())
    }
}

impl Stub {
    fn events(&self) -> Vec<Event> {
        self.log.lock().unwrap().clone()
    }

    fn processed(&self) -> Vec<(u32, Mode)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Processed(job, mode) => Some((job, mode)),
                _ => None,
            })
            .collect()
    }

    fn push(&self, event: Event) {
        self.log.lock().unwrap().push(event);
    }
}

impl Unit for Stub {
    type Target = u32;
    type Job = u32;
    type Error = String;
    type PlanError = String;

    async fn plan(&self, target: &u32) -> PlanOutcome<u32, u32, String> {
        let first = !self.events().contains(&Event::Planned(*target));
        self.push(Event::Planned(*target));
        if self.trips_on == Some(*target) {
            for _ in 0..3 {
                self.failsafe.record(Attempt::Error);
            }
        }
        if first && self.plan_fails_once.contains(target) {
            return PlanOutcome::Transient(format!("target {target} failed"));
        }
        PlanOutcome::Planned {
            jobs: vec![target * 10 + 1, target * 10 + 2],
            // Targets of 100 and more are pages of a listing: each has a next page, down to 100.
            next: (*target > 100).then(|| target - 1),
        }
    }

    fn give_up_target(&self, target: &u32, _error: String) {
        self.push(Event::TargetGaveUp(*target));
    }

    fn defer_target(&self, target: &u32, _error: &String) {
        self.push(Event::TargetDeferred(*target));
    }

    async fn process(&self, job: u32, mode: Mode) -> JobOutcome<u32, String> {
        let first = !self.processed().iter().any(|(j, _)| *j == job);
        self.push(Event::Processed(job, mode));
        if self.trips_on == Some(job) {
            for _ in 0..3 {
                self.failsafe.record(Attempt::Error);
            }
        }
        if self.stops_on == Some(job) {
            self.stopped.store(true, Ordering::SeqCst);
        }
        if first && self.transient_once.contains(&job) {
            return JobOutcome::Transient {
                job,
                error: format!("job {job} failed"),
            };
        }
        JobOutcome::Settled
    }

    fn give_up(&self, job: &u32, _error: String) {
        self.push(Event::GaveUp(*job));
    }

    fn defer(&self, job: &u32, _error: &String) {
        self.push(Event::Deferred(*job));
    }

    fn may_continue(&self) -> bool {
        !self.stopped.load(Ordering::SeqCst)
    }

    fn switched_to_sequential(&self, _reason: &str, remaining: usize) {
        self.push(Event::Switched(remaining));
    }
}

/// One at a time even on the concurrent driver, so the order is the queue's.
fn performance(concurrent: bool) -> Performance {
    Performance {
        concurrent,
        api: 1,
        downloads: 1,
        images: 3,
        segments: 4,
        segment_threshold: 1,
        adaptive_rate: false,
        thresholds: Thresholds::default(),
        emergency_stop_file: "STOP".into(),
    }
}

fn fetches(jobs: impl IntoIterator<Item = u32>) -> Vec<Work<u32, u32>> {
    jobs.into_iter().map(|j| Work::Fetch(Box::new(j))).collect()
}

async fn run(stub: Stub, concurrent: bool, queue: Vec<Work<u32, u32>>) -> Arc<Stub> {
    let stub = Arc::new(stub);
    run_with_failsafe(
        &stub,
        &stub.failsafe.clone(),
        &performance(concurrent),
        queue,
    )
    .await;
    stub
}

fn configured() -> Mode {
    Mode::configured(&performance(true))
}

#[tokio::test]
async fn a_sequential_run_does_everything_in_order_and_gives_up_on_passing_failures() {
    let stub = Stub {
        transient_once: HashSet::from([12]),
        ..Stub::default()
    };
    let mut queue = vec![Work::Plan(1)];
    queue.extend(fetches([5]));
    let stub = run(stub, false, queue).await;
    assert_eq!(
        stub.events(),
        [
            Event::Planned(1),
            Event::Processed(11, configured()),
            Event::Processed(12, configured()),
            Event::GaveUp(12),
            Event::Processed(5, configured()),
        ]
    );
}

#[tokio::test]
async fn after_the_failsafe_trips_the_rest_runs_one_at_a_time_and_nothing_is_lost() {
    let stub = Stub {
        trips_on: Some(2),
        transient_once: HashSet::from([2]),
        ..Stub::default()
    };
    let stub = run(stub, true, fetches(1..=5)).await;
    let events = stub.events();
    assert_eq!(
        events,
        [
            Event::Processed(1, configured()),
            Event::Processed(2, configured()),
            Event::Deferred(2),
            Event::Switched(4),
            Event::Processed(2, Mode::one_at_a_time()),
            Event::Processed(3, Mode::one_at_a_time()),
            Event::Processed(4, Mode::one_at_a_time()),
            Event::Processed(5, Mode::one_at_a_time()),
        ],
        "the deferred job first, then the queue in order"
    );
}

#[tokio::test]
async fn targets_not_yet_planned_are_handed_over_too() {
    let stub = Stub {
        trips_on: Some(11),
        ..Stub::default()
    };
    let stub = run(stub, true, vec![Work::Plan(1), Work::Plan(2)]).await;
    let processed: Vec<u32> = stub.processed().iter().map(|(j, _)| *j).collect();
    assert_eq!(processed, [11, 12, 21, 22], "every job once, none lost");
    assert!(
        stub.events().contains(&Event::Switched(2)),
        "{:?}",
        stub.events()
    );
    assert_eq!(stub.processed()[3].1, Mode::one_at_a_time());
}

#[tokio::test]
async fn a_passing_failure_before_the_failsafe_trips_is_final() {
    let stub = Stub {
        transient_once: HashSet::from([1]),
        ..Stub::default()
    };
    let stub = run(stub, true, fetches([1, 2])).await;
    assert_eq!(
        stub.events(),
        [
            Event::Processed(1, configured()),
            Event::GaveUp(1),
            Event::Processed(2, configured()),
        ]
    );
}

#[tokio::test]
async fn a_stopped_run_neither_switches_nor_defers() {
    let stub = Stub {
        trips_on: Some(1),
        stops_on: Some(1),
        transient_once: HashSet::from([1]),
        ..Stub::default()
    };
    let stub = run(stub, true, fetches([1, 2, 3])).await;
    assert_eq!(
        stub.events(),
        [Event::Processed(1, configured()), Event::GaveUp(1)],
        "no sequential phase after a stop; the failure is recorded"
    );
}

#[tokio::test]
async fn a_target_that_fails_after_the_failsafe_trips_is_planned_again_one_at_a_time() {
    let stub = Stub {
        trips_on: Some(1),
        plan_fails_once: HashSet::from([1]),
        ..Stub::default()
    };
    let stub = run(stub, true, vec![Work::Plan(1), Work::Plan(2)]).await;
    let events = stub.events();
    assert_eq!(
        events[..3],
        [
            Event::Planned(1),
            Event::TargetDeferred(1),
            Event::Switched(2)
        ],
        "{events:?}"
    );
    let processed: Vec<u32> = stub.processed().iter().map(|(j, _)| *j).collect();
    assert_eq!(processed, [11, 12, 21, 22], "nothing of either target lost");
    assert!(!events.iter().any(|e| matches!(e, Event::TargetGaveUp(_))));
}

#[tokio::test]
async fn a_target_that_fails_on_the_sequential_path_is_final() {
    let stub = Stub {
        plan_fails_once: HashSet::from([1]),
        ..Stub::default()
    };
    let stub = run(stub, false, vec![Work::Plan(1), Work::Plan(2)]).await;
    assert_eq!(
        stub.events()[..2],
        [Event::Planned(1), Event::TargetGaveUp(1)]
    );
}

#[test]
fn modes() {
    assert_eq!(
        configured(),
        Mode {
            previews: 3,
            connections: Connections::AsConfigured
        }
    );
    assert_eq!(
        Mode::one_at_a_time(),
        Mode {
            previews: 1,
            connections: Connections::One
        }
    );
}

/// Each page's jobs, the page after it, then the rest of the queue: the listing pages of one
/// creator in order, on either driver.
#[tokio::test]
async fn a_listings_next_page_is_planned_after_its_jobs_on_both_drivers() {
    for concurrent in [false, true] {
        let mut queue = vec![Work::Plan(102)];
        queue.extend(fetches([5]));
        let stub = run(Stub::default(), concurrent, queue).await;
        let planned: Vec<u32> = stub
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Planned(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(planned, [102, 101, 100], "concurrent: {concurrent}");
        let mut processed: Vec<u32> = stub.processed().into_iter().map(|(j, _)| j).collect();
        if !concurrent {
            assert_eq!(processed, [1021, 1022, 1011, 1012, 1001, 1002, 5]);
        }
        processed.sort_unstable();
        assert_eq!(processed, [5, 1001, 1002, 1011, 1012, 1021, 1022]);
    }
}
