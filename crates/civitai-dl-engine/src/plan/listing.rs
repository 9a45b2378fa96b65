//! A creator's listing, walked one page at a time so each page's downloads start before the next
//! page is asked for: a creator with 2,000 models is 20 pages, and a mirror should not wait for
//! all of them, nor lose them all when page 17 fails.
//!
//! A walk that broke can resume: the run saves the cursor of the page that failed, and the rerun
//! starts there, so pages never listed come first. When that walk ends it lists the start once
//! more, up to the saved cursor, because files of those pages may have been left unfinished too
//! (their rerun costs one request per page; files already done are not fetched again).

use std::collections::BTreeSet;
use std::fmt;

use crate::civitai::PAGE_LIMIT;
use crate::civitai::target::Target;

/// One step of planning: a target the user gave, or the next page of a creator's listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// What the user asked for.
    Target(Target),
    /// A page of a creator's listing, after the first. Boxed: a page is four times the size of
    /// a target, and a queue holds a step for each of 100,000 targets.
    Page(Box<ListingPage>),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Target(target) => write!(f, "{target}"),
            Step::Page(page) => write!(f, "{page}"),
        }
    }
}

/// Where a walk through a creator's listing stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingPage {
    /// The creator.
    pub username: String,
    /// Where this page starts; `None` for the first page.
    pub cursor: Option<String>,
    /// Models per page (smaller once bigger pages kept failing).
    pub limit: u32,
    /// This page's number in the walk, for messages.
    pub number: u32,
    /// Cursors seen so far: a listing that goes round in a circle is stopped.
    seen: BTreeSet<String>,
    /// The walk resumed at this saved cursor: when it ends, the start is listed again up to it.
    wrap_to: Option<String>,
    /// The second half of a resumed walk ends at this cursor.
    stop_at: Option<String>,
}

/// What comes after a page.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Another page.
    Page(ListingPage),
    /// The walk is complete.
    Done,
    /// The server handed out a cursor it had given before; the walk stops there.
    Loop(String),
}

impl ListingPage {
    /// The first page of a fresh walk.
    pub fn first(username: &str) -> ListingPage {
        ListingPage {
            username: username.to_string(),
            cursor: None,
            limit: PAGE_LIMIT,
            number: 1,
            seen: BTreeSet::new(),
            wrap_to: None,
            stop_at: None,
        }
    }

    /// A walk that starts at `cursor`, where an earlier run's walk broke.
    pub fn resumed(username: &str, cursor: &str) -> ListingPage {
        ListingPage {
            cursor: Some(cursor.to_string()),
            wrap_to: Some(cursor.to_string()),
            ..ListingPage::first(username)
        }
    }

    /// The page that follows this one, which the server says starts at `next` (`None`: this
    /// was the last page), listed `limit` models at a time.
    pub fn after(&self, next: Option<String>, limit: u32) -> After {
        let Some(next) = next else {
            return match &self.wrap_to {
                Some(saved) => After::Page(ListingPage {
                    cursor: None,
                    limit,
                    number: self.number + 1,
                    seen: BTreeSet::new(),
                    wrap_to: None,
                    stop_at: Some(saved.clone()),
                    username: self.username.clone(),
                }),
                None => After::Done,
            };
        };
        if self.stop_at.as_ref() == Some(&next) {
            return After::Done;
        }
        if self.seen.contains(&next) {
            return After::Loop(next);
        }
        let mut seen = self.seen.clone();
        seen.insert(next.clone());
        After::Page(ListingPage {
            cursor: Some(next),
            limit,
            number: self.number + 1,
            seen,
            ..self.clone()
        })
    }
}

impl fmt::Display for ListingPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "creator {} (listing page {})",
            self.username, self.number
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regression: a step was as large as a listing page (128 bytes), and a run's queue holds
    // one for each target: 12.8 MB of a 100,000-target run.
    #[test]
    fn a_step_is_as_small_as_a_target() {
        assert!(
            size_of::<Step>() <= size_of::<Target>() + 8,
            "{} bytes",
            size_of::<Step>()
        );
    }

    fn page(after: After) -> ListingPage {
        match after {
            After::Page(page) => page,
            other => panic!("expected a page, got {other:?}"),
        }
    }

    #[test]
    fn a_walk_follows_cursors_to_the_end_and_stops_on_a_loop() {
        let first = ListingPage::first("alice");
        let second = page(first.after(Some("10|2".into()), 100));
        assert_eq!(second.cursor.as_deref(), Some("10|2"));
        assert_eq!(second.number, 2);
        let third = page(second.after(Some("20|3".into()), 50));
        assert_eq!(third.limit, 50, "a smaller page size is kept");
        assert_eq!(third.after(None, 50), After::Done);
        assert_eq!(
            third.after(Some("10|2".into()), 50),
            After::Loop("10|2".into())
        );
    }

    #[test]
    fn a_resumed_walk_lists_the_start_again_up_to_where_it_resumed() {
        let resumed = ListingPage::resumed("alice", "50|3");
        let last = page(resumed.after(Some("60|4".into()), 100));
        let start = page(last.after(None, 100));
        assert_eq!(start.cursor, None, "from the beginning");
        let before_saved = page(start.after(Some("25|2".into()), 100));
        assert_eq!(before_saved.after(Some("50|3".into()), 100), After::Done);
        assert_eq!(
            before_saved.after(None, 100),
            After::Done,
            "ends once, not again"
        );
    }
}
