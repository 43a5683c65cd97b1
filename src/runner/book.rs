//! The reconciliation book: which items the run is still finding out about, and what it knows
//! of them while it does. Pure bookkeeping; the decisions say what to note, the dispatcher
//! notes it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use time::OffsetDateTime;

/// What a decision tells the book about an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    /// Nothing new.
    Nothing,
    /// A request got no answer: it may take effect at CertCentral until then.
    MayArriveUntil(OffsetDateTime),
    /// Not found, but a request may still arrive: the item is looked up again later. It no
    /// longer holds back the run's sends (they are other orders).
    Settling,
    /// A lookup could not decide; this many have failed so far.
    Tried(u32),
    /// Nothing more to find out about this item in this run.
    Decided,
}

/// The items being reconciled.
#[derive(Debug, Default)]
pub(crate) struct Book {
    /// Items of the initial reconciliation not decided yet; nothing is sent before they are.
    initial: HashSet<i64>,
    /// Items of other runs: they do not change this run's counts.
    foreign: HashSet<i64>,
    /// Failed lookups per item.
    tries: HashMap<i64, u32>,
    /// Until when a request of the item may still take effect at CertCentral.
    may_arrive_until: HashMap<i64, OffsetDateTime>,
    /// Items whose last attempt was charged before it turned out to belong to an outage.
    refunds: HashSet<i64>,
    /// Lookups per item that found nothing while its request could still arrive; kept after
    /// the item is decided, for the summary.
    settle_looks: HashMap<i64, u32>,
}

impl Book {
    /// An item whose outcome was unknown when the run began; `until`: how late its last
    /// request may still take effect, if known.
    pub(crate) fn open(&mut self, item_id: i64, foreign: bool, until: Option<OffsetDateTime>) {
        self.initial.insert(item_id);
        if foreign {
            self.foreign.insert(item_id);
        }
        if let Some(until) = until {
            self.may_arrive_until.insert(item_id, until);
        }
    }

    /// Whether items of the initial reconciliation are still undecided (sends wait for them).
    pub(crate) fn holds_sends(&self) -> bool {
        !self.initial.is_empty()
    }

    pub(crate) fn is_foreign(&self, item_id: i64) -> bool {
        self.foreign.contains(&item_id)
    }

    pub(crate) fn tries(&self, item_id: i64) -> u32 {
        self.tries.get(&item_id).copied().unwrap_or(0)
    }

    pub(crate) fn settle_looks(&self, item_id: i64) -> u32 {
        self.settle_looks.get(&item_id).copied().unwrap_or(0)
    }

    /// How many items had to wait out their settle window in this run.
    pub(crate) fn settled(&self) -> usize {
        self.settle_looks.len()
    }

    /// The items whose requests may still take effect after `now`, and the latest time one may.
    pub(crate) fn settling(&self, now: OffsetDateTime) -> Option<(usize, OffsetDateTime)> {
        let open = self.may_arrive_until.values().filter(|until| **until > now);
        let (count, last) = open.fold(
            (0, None),
            |(count, last): (usize, Option<OffsetDateTime>), until| {
                (
                    count + 1,
                    Some(last.map_or(*until, |last| last.max(*until))),
                )
            },
        );
        last.map(|last| (count, last))
    }

    /// How long a request of this item may still take effect at CertCentral, if at all.
    pub(crate) fn may_still_arrive(&self, item_id: i64, now: OffsetDateTime) -> Option<Duration> {
        let left = *self.may_arrive_until.get(&item_id)? - now;
        Duration::try_from(left).ok().filter(|left| !left.is_zero())
    }

    /// The item's last attempt failed as part of an outage that was recognized only later: it
    /// is given back if the item goes back to pending.
    pub(crate) fn owe_refund(&mut self, item_id: i64) {
        self.refunds.insert(item_id);
    }

    pub(crate) fn owes_refund(&self, item_id: i64) -> bool {
        self.refunds.contains(&item_id)
    }

    pub(crate) fn note(&mut self, item_id: i64, note: Note) {
        match note {
            Note::Nothing => {}
            Note::MayArriveUntil(until) => {
                self.may_arrive_until.insert(item_id, until);
            }
            Note::Settling => {
                self.initial.remove(&item_id);
                *self.settle_looks.entry(item_id).or_default() += 1;
            }
            Note::Tried(tries) => {
                self.tries.insert(item_id, tries);
            }
            Note::Decided => {
                self.refunds.remove(&item_id);
                self.may_arrive_until.remove(&item_id);
                self.tries.remove(&item_id);
                self.initial.remove(&item_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(seconds)
    }

    #[test]
    fn sends_wait_until_every_initial_item_is_decided_or_settling() {
        let mut book = Book::default();
        assert!(!book.holds_sends());
        book.open(1, false, None);
        book.open(2, true, Some(at(100)));
        assert!(book.holds_sends());
        book.note(1, Note::Decided);
        assert!(book.holds_sends());
        book.note(2, Note::Settling);
        assert!(!book.holds_sends());
    }

    #[test]
    fn a_settling_item_keeps_its_window_and_a_decided_one_forgets_everything() {
        let mut book = Book::default();
        book.open(7, false, Some(at(100)));
        book.note(7, Note::Tried(2));
        book.note(7, Note::Settling);
        assert_eq!(
            book.may_still_arrive(7, at(40)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(book.tries(7), 2);
        book.note(7, Note::Decided);
        assert_eq!(book.may_still_arrive(7, at(40)), None);
        assert_eq!(book.tries(7), 0);
    }

    #[test]
    fn a_window_that_has_passed_leaves_nothing_to_wait_for() {
        let mut book = Book::default();
        book.note(3, Note::MayArriveUntil(at(10)));
        assert_eq!(
            book.may_still_arrive(3, at(9)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(book.may_still_arrive(3, at(10)), None);
        assert_eq!(book.may_still_arrive(3, at(11)), None);
        assert_eq!(book.may_still_arrive(4, at(0)), None);
    }

    #[test]
    fn a_refund_is_owed_until_the_item_is_decided() {
        let mut book = Book::default();
        book.owe_refund(5);
        book.note(5, Note::Tried(1));
        assert!(book.owes_refund(5));
        assert!(!book.owes_refund(6));
        book.note(5, Note::Decided);
        assert!(!book.owes_refund(5));
    }

    #[test]
    fn settling_items_are_counted_until_their_window_ends_or_they_are_decided() {
        let mut book = Book::default();
        assert_eq!(book.settling(at(0)), None);
        book.open(1, false, Some(at(100)));
        book.note(2, Note::MayArriveUntil(at(50)));
        book.note(3, Note::MayArriveUntil(at(10)));
        assert_eq!(book.settling(at(20)), Some((2, at(100))));
        book.note(1, Note::Settling);
        book.note(1, Note::Settling);
        assert_eq!(book.settle_looks(1), 2);
        book.note(1, Note::Decided);
        assert_eq!(book.settling(at(20)), Some((1, at(50))));
        assert_eq!(book.settling(at(50)), None);
        assert_eq!(
            book.settled(),
            1,
            "a decided item still counts as having settled"
        );
    }

    #[test]
    fn only_items_of_other_runs_are_foreign() {
        let mut book = Book::default();
        book.open(1, true, None);
        book.open(2, false, None);
        assert!(book.is_foreign(1));
        assert!(!book.is_foreign(2));
        book.note(1, Note::Decided);
        assert!(
            book.is_foreign(1),
            "a decided foreign item still counts in its own run"
        );
    }
}
