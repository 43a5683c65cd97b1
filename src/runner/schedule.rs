//! What to start next: lookups first, then sends that were held back for a while, then the
//! run's pending items page by page. Pure: it holds jobs and times; the dispatcher reads the
//! pages from the journal and hands them in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

use crate::journal::{ItemState, WorkItem};

/// One unit of work for a task.
#[derive(Debug)]
pub(crate) enum Job {
    /// Send the item's reissue (it is marked `in_flight` first).
    Send(WorkItem),
    /// Find out whether the item's reissue arrived; `state` is the item's state in the journal.
    LookUp { item: WorkItem, state: ItemState },
}

/// What the schedule has to offer.
#[derive(Debug)]
pub(crate) enum Next {
    Job(Job),
    /// Nothing in hand, but the journal may hold more pending items: read a page.
    NeedPage,
    /// Nothing to start now.
    Idle,
}

/// The run's queue: lookups, jobs delayed until a time, and the current page of pending items.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    lookups: VecDeque<Job>,
    queue: VecDeque<WorkItem>,
    delayed_lookups: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed_sends: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The jobs of both heaps, by sequence number (which also keeps equal times in order).
    delayed: HashMap<u64, Job>,
    next_seq: u64,
    /// The id of the last item paged in: items above it are reached by the pages.
    after_id: i64,
    /// The last page was short: the journal holds no more pending items above `after_id`.
    exhausted: bool,
}

impl Schedule {
    /// Adds a job to start as soon as a slot is free: a lookup behind the others, a send in
    /// front of the queue (it was in hand already).
    pub(crate) fn now(&mut self, job: Job) {
        match job {
            Job::Send(item) => self.queue.push_front(item),
            lookup => self.lookups.push_back(lookup),
        }
    }

    /// Adds a job that must not start before `at`.
    pub(crate) fn at(&mut self, at: Instant, job: Job) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let heap = match job {
            Job::Send(_) => &mut self.delayed_sends,
            Job::LookUp { .. } => &mut self.delayed_lookups,
        };
        heap.push(Reverse((at, seq)));
        self.delayed.insert(seq, job);
    }

    /// The next job to start at `now`. Sends only when `sends_allowed` (not while the initial
    /// reconciliation is undecided); lookups always.
    pub(crate) fn next(&mut self, now: Instant, sends_allowed: bool) -> Next {
        if let Some(job) = self.lookups.pop_front() {
            return Next::Job(job);
        }
        if let Some(job) = pop_due(&mut self.delayed_lookups, &mut self.delayed, now) {
            return Next::Job(job);
        }
        if !sends_allowed {
            return Next::Idle;
        }
        if let Some(job) = pop_due(&mut self.delayed_sends, &mut self.delayed, now) {
            return Next::Job(job);
        }
        match self.queue.pop_front() {
            Some(item) => Next::Job(Job::Send(item)),
            None if !self.exhausted => Next::NeedPage,
            None => Next::Idle,
        }
    }

    /// Takes in a page of pending items (ascending ids above the last page) read `limit` at a
    /// time; a short page means there are no more.
    pub(crate) fn add_page(&mut self, page: Vec<WorkItem>, limit: usize) {
        self.exhausted = page.len() < limit;
        if let Some(last) = page.last() {
            self.after_id = last.id;
        }
        self.queue.extend(page);
    }

    /// The id of the last item paged in (0 before the first page): the next page starts above.
    pub(crate) fn last_paged(&self) -> i64 {
        self.after_id
    }

    /// No page has been read yet.
    pub(crate) fn before_first_page(&self) -> bool {
        self.after_id == 0
    }

    /// The pages have passed this item: if it becomes pending again, only a job queued here
    /// sends it. (One the pages have not reached yet is sent when they do; queuing it too
    /// would send it twice.) Once a short page came no page is read again, so every item is
    /// past, even one above the last paged in (it was not pending when that page was read).
    pub(crate) fn paged_past(&self, item_id: i64) -> bool {
        item_id <= self.after_id || self.exhausted
    }

    /// When the earliest delayed job falls due (sends only if they are allowed).
    pub(crate) fn next_due(&self, sends_allowed: bool) -> Option<Instant> {
        let lookup = self.delayed_lookups.peek().map(|Reverse((at, _))| *at);
        let send = self
            .delayed_sends
            .peek()
            .filter(|_| sends_allowed)
            .map(|Reverse((at, _))| *at);
        lookup.into_iter().chain(send).min()
    }
}

fn pop_due(
    heap: &mut BinaryHeap<Reverse<(Instant, u64)>>,
    jobs: &mut HashMap<u64, Job>,
    now: Instant,
) -> Option<Job> {
    let Reverse((at, seq)) = *heap.peek()?;
    if at > now {
        return None;
    }
    heap.pop();
    jobs.remove(&seq)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn item(id: i64) -> WorkItem {
        WorkItem {
            id,
            run_id: 1,
            order_id: id,
            payload: "{}".into(),
            attempts: 0,
            first_sent_at: None,
            updated_at: String::new(),
        }
    }

    fn lookup(id: i64) -> Job {
        Job::LookUp {
            item: item(id),
            state: ItemState::Uncertain,
        }
    }

    /// The id of the job offered, or what was offered instead.
    fn next_id(schedule: &mut Schedule, now: Instant, sends: bool) -> Result<(char, i64), String> {
        match schedule.next(now, sends) {
            Next::Job(Job::Send(item)) => Ok(('s', item.id)),
            Next::Job(Job::LookUp { item, .. }) => Ok(('l', item.id)),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn an_empty_schedule_asks_for_a_page_until_a_short_one_comes() {
        let mut schedule = Schedule::default();
        let now = Instant::now();
        assert!(schedule.before_first_page());
        assert!(matches!(schedule.next(now, true), Next::NeedPage));
        schedule.add_page(vec![item(1), item(2)], 2);
        assert_eq!(next_id(&mut schedule, now, true), Ok(('s', 1)));
        assert_eq!(next_id(&mut schedule, now, true), Ok(('s', 2)));
        assert!(matches!(schedule.next(now, true), Next::NeedPage));
        schedule.add_page(vec![item(3)], 2);
        assert!(!schedule.before_first_page());
        assert_eq!(next_id(&mut schedule, now, true), Ok(('s', 3)));
        assert!(matches!(schedule.next(now, true), Next::Idle));
    }

    #[test]
    fn lookups_come_first_and_sends_wait_while_they_are_not_allowed() {
        let mut schedule = Schedule::default();
        let now = Instant::now();
        schedule.add_page(vec![item(1)], 10);
        schedule.now(lookup(5));
        schedule.at(now, lookup(6));
        assert_eq!(next_id(&mut schedule, now, false), Ok(('l', 5)));
        assert_eq!(next_id(&mut schedule, now, false), Ok(('l', 6)));
        assert!(matches!(schedule.next(now, false), Next::Idle));
        assert_eq!(next_id(&mut schedule, now, true), Ok(('s', 1)));
    }

    #[test]
    fn a_delayed_job_starts_no_sooner_than_its_time_and_in_time_order() {
        let mut schedule = Schedule::default();
        let now = Instant::now();
        schedule.add_page(Vec::new(), 10);
        let soon = now + Duration::from_millis(10);
        let later = now + Duration::from_millis(20);
        schedule.at(later, Job::Send(item(2)));
        schedule.at(soon, Job::Send(item(1)));
        schedule.at(later, lookup(3));
        assert_eq!(schedule.next_due(true), Some(soon));
        assert_eq!(schedule.next_due(false), Some(later));
        assert!(matches!(schedule.next(now, true), Next::Idle));
        assert_eq!(next_id(&mut schedule, soon, true), Ok(('s', 1)));
        assert_eq!(next_id(&mut schedule, later, true), Ok(('l', 3)));
        assert_eq!(next_id(&mut schedule, later, true), Ok(('s', 2)));
        assert_eq!(schedule.next_due(true), None);
    }

    #[test]
    fn a_send_put_back_goes_before_the_rest_of_the_page() {
        let mut schedule = Schedule::default();
        let now = Instant::now();
        schedule.add_page(vec![item(1), item(2)], 10);
        assert_eq!(next_id(&mut schedule, now, true), Ok(('s', 1)));
        schedule.now(Job::Send(item(1)));
        assert_eq!(next_id(&mut schedule, now, true), Ok(('s', 1)));
        assert_eq!(next_id(&mut schedule, now, true), Ok(('s', 2)));
    }

    #[test]
    fn only_items_the_pages_have_passed_are_requeued_here() {
        let mut schedule = Schedule::default();
        assert!(!schedule.paged_past(1));
        schedule.add_page(vec![item(4), item(9)], 2);
        assert!(schedule.paged_past(4));
        assert!(schedule.paged_past(9));
        assert!(!schedule.paged_past(10));
    }

    #[test]
    fn after_a_short_page_an_item_above_it_is_requeued_here_as_no_page_will_reach_it() {
        let mut schedule = Schedule::default();
        let now = Instant::now();
        // Items 8 and 9 were in flight, not pending, when the page was read.
        schedule.add_page(vec![item(4), item(7)], 10);
        assert!(schedule.paged_past(9));
        assert_eq!(next_id(&mut schedule, now, true), Ok(('s', 4)));
        assert_eq!(next_id(&mut schedule, now, true), Ok(('s', 7)));
        assert!(
            matches!(schedule.next(now, true), Next::Idle),
            "no page is read again"
        );
    }

    #[test]
    fn every_job_put_in_comes_out_once() {
        let mut schedule = Schedule::default();
        let now = Instant::now();
        let mut expected = Vec::new();
        for id in 1..=50 {
            let after = Duration::from_millis(u64::try_from(id % 7).expect("small"));
            match id % 3 {
                0 => schedule.at(now + after, lookup(id)),
                1 => schedule.at(now + after, Job::Send(item(id))),
                _ => schedule.now(lookup(id)),
            }
            expected.push(id);
        }
        schedule.add_page(Vec::new(), 10);
        let mut seen = Vec::new();
        let end = now + Duration::from_millis(10);
        while let Ok((_, id)) = next_id(&mut schedule, end, true) {
            seen.push(id);
        }
        seen.sort_unstable();
        assert_eq!(seen, expected);
        assert_eq!(schedule.next_due(true), None);
    }
}
