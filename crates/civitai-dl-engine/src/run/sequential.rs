//! The sequential driver: one item after another in one task. It is the reference path, the one
//! every ordinary run takes and the failsafe falls back to, so it stays a plain loop.

use crate::run::{JobOutcome, Mode, Unit, Work};

/// Run every item of `queue` in order, until the run stops. A transient failure is final here:
/// there is no slower path to hand it to.
pub async fn run_sequential<U: Unit>(unit: &U, queue: Vec<Work<U::Target, U::Job>>, mode: Mode) {
    for work in queue {
        if !unit.may_continue() {
            break;
        }
        match work {
            Work::Plan(target) => {
                for job in unit.plan(&target).await {
                    if !unit.may_continue() {
                        break;
                    }
                    settle(unit, unit.process(job, mode).await);
                }
            }
            Work::Fetch(job) => settle(unit, unit.process(*job, mode).await),
        }
    }
}

fn settle<U: Unit>(unit: &U, outcome: JobOutcome<U::Job, U::Error>) {
    if let JobOutcome::Transient { job, error } = outcome {
        unit.give_up(&job, error);
    }
}
