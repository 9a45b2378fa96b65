//! The sequential driver: one item after another in one task. It is the reference path, the one
//! every ordinary run takes and the failsafe falls back to, so it stays a plain loop.

use std::collections::VecDeque;

use crate::run::{JobOutcome, Mode, PlanOutcome, Unit, Work};

/// Run every item of `queue` in order, until the run stops. A transient failure is final here:
/// there is no slower path to hand it to.
pub async fn run_sequential<U: Unit>(unit: &U, queue: Vec<Work<U::Target, U::Job>>, mode: Mode) {
    let mut queue = VecDeque::from(queue);
    while let Some(work) = queue.pop_front() {
        if !unit.may_continue() {
            break;
        }
        match work {
            Work::Plan(target) => match unit.plan(&target).await {
                PlanOutcome::Planned { jobs, next } => {
                    for job in jobs {
                        if !unit.may_continue() {
                            break;
                        }
                        settle(unit, unit.process(job, mode).await);
                    }
                    // The next page of a listing comes before the targets after it.
                    if let Some(next) = next {
                        queue.push_front(Work::Plan(next));
                    }
                }
                PlanOutcome::Transient(error) => unit.give_up_target(&target, error),
            },
            Work::Fetch(job) => settle(unit, unit.process(*job, mode).await),
        }
    }
}

fn settle<U: Unit>(unit: &U, outcome: JobOutcome<U::Job, U::Error>) {
    if let JobOutcome::Transient { job, error } = outcome {
        unit.give_up(&job, error);
    }
}
