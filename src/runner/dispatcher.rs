//! The dispatcher: the one owner of the journal, the counts and the schedule. Each turn of its
//! loop waits for one [`Wake`], then carries out what the pure decisions (`decide`) return.
//! Every send is marked `in_flight` in a committed transaction before its task is spawned, and
//! the outcomes of a round go into the same transaction as the next round's marks.

use std::time::Instant;

use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::book::Book;
use super::reconcile::{LookupRecord, Target, Verdict};
use super::schedule::{Job, Next, Schedule};
use super::worker::{self, Line, Sent};
use super::{Deps, RunnerError, RunnerOptions};
use crate::api::UntrustedServer;
use crate::events::{RunnerEvent, StopReason};
use crate::journal::{Change, Counts, ItemState, JournalError, WorkItem};

mod finish;
mod outage;

/// How many pending items are read from the journal at a time.
const PAGE: u32 = 512;

/// What a task reports when it ends.
pub(super) enum Done {
    Sent {
        item: WorkItem,
        sent: Sent,
    },
    Looked {
        item: WorkItem,
        state: ItemState,
        verdict: Verdict,
        record: LookupRecord,
    },
    /// The run stopped, or paused for an outage, while the send waited for the limiter: it
    /// never left.
    Withdrawn(WorkItem),
    /// The outage probe ended, and when (`None`: the run stopped before it left).
    Probed(Option<worker::Probed>),
    /// The run stopped before the lookup began; the item keeps its state.
    NotLookedUp,
}

/// What the loop woke up for.
enum Wake {
    /// SIGINT/SIGTERM (the run's token was cancelled).
    Signal,
    /// Tasks ended (all that had ended by then, recorded as one batch).
    Finished(Vec<Result<Done, JoinError>>),
    /// A delayed job fell due.
    Due,
    /// After a stop, requests in flight had their bounded wait.
    DrainOver,
    /// During an outage: a probe is due, or it is time to give up.
    Outage,
}

/// What the run has learnt about CertCentral's mood.
#[derive(Debug)]
struct Contact {
    /// Until CertCentral has answered once, one request at a time: a refused key then costs
    /// one request, not `concurrency` of them.
    answered: bool,
    /// Throttling pauses in a row, for the backoff without Retry-After.
    pauses: u32,
    /// Whether it can be reached at all (the circuit breaker).
    outage: outage::Outage,
}

/// Whether and why the run stops.
struct Stop {
    reason: Option<StopReason>,
    /// The refused server certificate behind [`StopReason::Untrusted`], for the message.
    untrusted: Option<UntrustedServer>,
    /// Cancelled at the first stop, so requests still waiting for the limiter never leave.
    halt: CancellationToken,
}

pub(super) struct Dispatcher<'a> {
    run_id: i64,
    options: &'a RunnerOptions,
    deps: &'a Deps<'a>,
    counts: Counts,
    requests: u64,
    pub(super) schedule: Schedule,
    pub(super) book: Book,
    contact: Contact,
    /// Outcomes not committed yet: they go into the same transaction as the next `in_flight`
    /// marks, one commit (one fsync) per round instead of two.
    unflushed: Vec<Change>,
    stop: Stop,
    tasks: JoinSet<Done>,
}

impl<'a> Dispatcher<'a> {
    pub(super) async fn new(
        run_id: i64,
        options: &'a RunnerOptions,
        deps: &'a Deps<'a>,
    ) -> Result<Self, JournalError> {
        let counts = deps.journal.counts(run_id).await?;
        Ok(Self {
            run_id,
            options,
            deps,
            counts,
            requests: 0,
            schedule: Schedule::default(),
            book: Book::default(),
            contact: Contact {
                answered: false,
                pauses: 0,
                outage: outage::Outage::new(options.give_up_after),
            },
            unflushed: Vec::new(),
            stop: Stop {
                reason: None,
                untrusted: None,
                halt: CancellationToken::new(),
            },
            tasks: JoinSet::new(),
        })
    }

    /// Requests made so far (reissues, lookups and probes).
    pub(super) fn requests(&self) -> u64 {
        self.requests
    }

    /// The refused server certificate, if one stopped the run.
    pub(super) fn untrusted(&mut self) -> Option<UntrustedServer> {
        self.stop.untrusted.take()
    }

    /// A server certificate was refused: no request can get through until it is trusted. The
    /// decision that follows stops the run; this keeps the first one's details.
    fn refused(&mut self, server: &UntrustedServer) {
        if self.stop.untrusted.is_none() {
            self.stop.untrusted = Some(server.clone());
        }
    }

    /// Since when CertCentral has been unreachable, if it still is.
    pub(super) fn unreachable_since(&self) -> Option<time::OffsetDateTime> {
        self.contact.outage.since()
    }

    pub(super) fn emit(&self, event: RunnerEvent) {
        if let Some(events) = &self.deps.events {
            let _ = events.send(event);
        }
    }

    fn progress(&self) {
        self.emit(RunnerEvent::Progress {
            counts: self.counts.clone(),
            requests: self.requests,
        });
    }

    fn stopping(&self) -> bool {
        self.stop.reason.is_some()
    }

    /// Raises the stop reason (never lowers it); the first stop halts new sends.
    fn raise_stop(&mut self, reason: StopReason) {
        if self.stop.reason.is_none() {
            self.stop.halt.cancel();
            self.emit(RunnerEvent::Stopping { reason });
        }
        self.stop.reason = Some(self.stop.reason.map_or(reason, |was| was.raised(reason)));
    }

    pub(super) async fn drive(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<StopReason, RunnerError> {
        self.progress();
        let mut drain_deadline: Option<Instant> = None;
        let mut announced = None;
        loop {
            self.record_outage().await?;
            if self.stopping() {
                self.flush(Vec::new()).await?;
            } else {
                self.start_jobs().await?;
            }
            let waiting = self.next_due().is_some() || self.outage_wake().is_some();
            if self.tasks.is_empty() && (self.stopping() || !waiting) {
                break;
            }
            if self.tasks.is_empty() {
                self.announce_settling(&mut announced);
            }
            if self.stopping() && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + self.options.drain_timeout);
            }
            // A due job can only start with a free slot; without one, waking for it would spin.
            let next_due = self
                .next_due()
                .filter(|_| !self.stopping() && self.tasks.len() < self.slot_limit());
            let outage_wake = self.outage_wake();
            let wake = tokio::select! {
                _ = cancel.cancelled(), if !self.stopping() => Wake::Signal,
                Some(joined) = self.tasks.join_next() => {
                    let mut finished = vec![joined];
                    while let Some(more) = self.tasks.try_join_next() {
                        finished.push(more);
                    }
                    Wake::Finished(finished)
                }
                _ = sleep_until(next_due), if next_due.is_some() => Wake::Due,
                _ = sleep_until(drain_deadline), if drain_deadline.is_some() => Wake::DrainOver,
                _ = sleep_until(outage_wake), if outage_wake.is_some() => Wake::Outage,
            };
            match wake {
                Wake::Signal => self.raise_stop(StopReason::Interrupted),
                Wake::Finished(finished) => self.finish(finished),
                Wake::Due => {}
                Wake::Outage => self.give_up_if_due(),
                Wake::DrainOver => {
                    // Requests still out stay in_flight; the next run reconciles them. Answers
                    // that arrived meanwhile are recorded.
                    self.tasks.abort_all();
                    let mut finished = Vec::new();
                    while let Some(joined) = self.tasks.join_next().await {
                        finished.push(joined);
                    }
                    self.finish(finished);
                    break;
                }
            }
        }
        self.flush(Vec::new()).await?;
        self.record_outage().await?;
        Ok(self.stop.reason.unwrap_or(StopReason::Finished))
    }

    /// Commits the outcomes held back and then `marks`, in one transaction.
    async fn flush(&mut self, marks: Vec<Change>) -> Result<(), JournalError> {
        if self.unflushed.is_empty() && marks.is_empty() {
            return Ok(());
        }
        let mut changes = std::mem::take(&mut self.unflushed);
        changes.extend(marks);
        self.deps.journal.apply(&changes).await?;
        for change in &changes {
            if let Change::Transition {
                item_id, from, to, ..
            } = change
                && !self.book.is_foreign(*item_id)
            {
                self.counts.move_one(*from, *to);
            }
        }
        self.progress();
        Ok(())
    }

    fn next_due(&self) -> Option<Instant> {
        self.schedule.next_due(!self.book.holds_sends())
    }

    /// The next job: lookups first; sends only once the initial reconciliation is done.
    async fn next_job(&mut self) -> Result<Option<Job>, JournalError> {
        loop {
            let sends_allowed = !self.book.holds_sends();
            match self.schedule.next(Instant::now(), sends_allowed) {
                Next::Job(job) => return Ok(Some(job)),
                Next::Idle => return Ok(None),
                Next::NeedPage => self.read_page().await?,
            }
        }
    }

    async fn read_page(&mut self) -> Result<(), JournalError> {
        // The page must see every item already moved back to pending.
        self.flush(Vec::new()).await?;
        let journal = self.deps.journal;
        if self.schedule.before_first_page() && !self.options.force {
            let skipped = journal.skip_already_succeeded(self.run_id).await?;
            if skipped > 0 {
                self.counts = journal.counts(self.run_id).await?;
            }
        }
        let after = self.schedule.last_paged();
        let page = journal.pending_page(self.run_id, after, PAGE).await?;
        self.schedule.add_page(page, PAGE as usize);
        Ok(())
    }

    /// Starts jobs up to the concurrency, marking every send `in_flight` in one commit first;
    /// during an outage, only the probe when it is due.
    async fn start_jobs(&mut self) -> Result<(), JournalError> {
        self.start_probe();
        let mut jobs = Vec::new();
        let limit = self.slot_limit();
        while self.tasks.len() + jobs.len() < limit {
            match self.next_job().await? {
                Some(job) => jobs.push(job),
                None => break,
            }
        }
        let marks: Vec<Change> = jobs
            .iter()
            .filter_map(|job| match job {
                Job::Send(item) => Some(Change::MarkInFlight { item_id: item.id }),
                Job::LookUp { .. } => None,
            })
            .collect();
        self.flush(marks).await?;
        for job in jobs {
            self.spawn(job);
        }
        Ok(())
    }

    /// What a task needs to reach CertCentral, with the run's stop and outage tokens.
    fn line(&self) -> Line {
        Line {
            client: self.deps.client.clone(),
            limiter: self.deps.limiter.clone(),
            halt: self.stop.halt.clone(),
            hold: self.contact.outage.hold.clone(),
            tenure: self.deps.journal.tenure(),
        }
    }

    fn spawn(&mut self, job: Job) {
        let line = self.line();
        match job {
            Job::Send(mut item) => {
                item.attempts += 1;
                if item.first_sent_at.is_none() {
                    item.first_sent_at = Some(crate::journal::now_text());
                }
                self.counts
                    .move_one(ItemState::Pending, ItemState::InFlight);
                let body = worker::send(line, item.order_id, item.payload.clone());
                self.tasks.spawn(async move {
                    match body.await {
                        Some(sent) => Done::Sent { item, sent },
                        None => Done::Withdrawn(item),
                    }
                });
            }
            Job::LookUp { item, state } => {
                let target = Target {
                    order_id: item.order_id,
                    payload: item.payload.clone(),
                    first_sent_at: item.first_sent_at.clone(),
                };
                let body = worker::look_up(line, target);
                self.tasks.spawn(async move {
                    match body.await {
                        Some((verdict, record)) => Done::Looked {
                            item,
                            state,
                            verdict,
                            record,
                        },
                        None => Done::NotLookedUp,
                    }
                });
            }
        }
    }

    /// Requests allowed at once: none during an outage (only the probe goes out), one until
    /// CertCentral has answered, then `--concurrency`.
    fn slot_limit(&self) -> usize {
        if self.contact.outage.is_down() {
            0
        } else if self.contact.answered {
            self.options.concurrency
        } else {
            1
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
