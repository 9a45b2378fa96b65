//! Model metadata asked for a hundred ids at a time. A list of 10,000 model ids cost 10,000
//! requests before (33 minutes at the default 5 requests/s, on every rerun too);
//! `GET /api/v1/models?ids=…` answers up to 100 whole models, versions and files included, in one.
//!
//! The planner is told the ids its targets name, in order. When it first needs one, that id and
//! the next ones still unfetched (up to 100) go in one request, and the answers wait here until
//! their targets are planned, so at most one batch of models is held at a time. An id the batch
//! leaves out (unknown, hidden, removed) is asked for alone, which gives the reason; a batch that
//! fails turns batching off for the run, and every id is asked for alone as before.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::civitai::wire::Model;
use crate::civitai::{ApiClient, PAGE_LIMIT, WithRaw};

/// Ids per request: the API's page size.
const BATCH: usize = PAGE_LIMIT as usize;

/// The ids to come and the models fetched ahead.
#[derive(Debug, Default)]
pub(super) struct Prefetch {
    /// Ids the targets name, in their order; some may be fetched already.
    upcoming: VecDeque<u64>,
    /// Ids not yet asked for.
    unasked: HashSet<u64>,
    /// Models fetched, waiting for their target.
    fetched: HashMap<u64, WithRaw<Model>>,
    /// A batch failed: every id is asked for alone from then on.
    off: bool,
}

impl Prefetch {
    /// Ids the plan will ask for, in order (repeats ignored).
    pub(super) fn expect(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            if self.unasked.insert(id) {
                self.upcoming.push_back(id);
            }
        }
    }

    /// The model `id`, from a batch (fetching the batch that holds it if need be), or `None`
    /// when it is to be asked for alone.
    pub(super) async fn take(&mut self, api: &ApiClient, id: u64) -> Option<WithRaw<Model>> {
        if let Some(model) = self.fetched.remove(&id) {
            return Some(model);
        }
        if self.off || !self.unasked.remove(&id) {
            return None;
        }
        let batch = self.next_batch(id);
        if batch.len() < 2 {
            // One model costs one request either way, and alone its errors say more.
            return None;
        }
        match api.models_by_ids(&batch).await {
            Ok(models) => {
                for model in models {
                    if batch.contains(&model.value.id) {
                        self.fetched.insert(model.value.id, model);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(
                    "asking Civitai for {} models at once failed ({error}); asking for each \
                     model alone from now on",
                    batch.len()
                );
                self.off = true;
            }
        }
        self.fetched.remove(&id)
    }

    /// `first`, then the next ids not yet asked for, up to a batch.
    fn next_batch(&mut self, first: u64) -> Vec<u64> {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            let Some(id) = self.upcoming.pop_front() else {
                break;
            };
            if self.unasked.remove(&id) {
                batch.push(id);
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_starts_with_the_id_asked_for_and_takes_the_next_unasked_ones() {
        let mut prefetch = Prefetch::default();
        prefetch.expect((1..=250).chain([3]));
        assert_eq!(prefetch.upcoming.len(), 250, "repeats are ignored");
        prefetch.unasked.remove(&7);
        let batch = prefetch.next_batch(7);
        assert_eq!(batch.len(), BATCH);
        assert_eq!(batch[..3], [7, 1, 2]);
        assert!(
            !batch[1..].contains(&7),
            "the id asked for is not asked for twice"
        );
        prefetch.unasked.remove(&250);
        let second = prefetch.next_batch(250);
        assert_eq!(
            second[1], 101,
            "the next batch goes on where the first ended"
        );
        assert_eq!(second.len(), BATCH);
        assert_eq!(
            prefetch.next_batch(0)[1..],
            (200..250).collect::<Vec<_>>()[..],
            "the rest"
        );
    }
}
