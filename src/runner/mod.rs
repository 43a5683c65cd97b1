//! The runner: one dispatcher owns the journal and the counts; tasks send one request each and
//! report back. Every send is marked `in_flight` in a committed transaction before it starts.
//! Never prints; knows neither clap nor the terminal.

pub mod reconcile;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Client, Disposition, Reissued};
use crate::events::{RunnerEvent, StopReason};
use crate::journal::{Change, Counts, ItemState, Journal, JournalError, Outcome, WorkItem};
use crate::limiter::Limiter;
use reconcile::{LookupRecord, Verdict};

/// How many pending items are read from the journal at a time.
const PAGE: u32 = 512;
/// How often an undecidable lookup is tried within one run.
const LOOKUP_TRIES: u32 = 4;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub resend_uncertain: bool,
    /// Send even items whose identical payload already succeeded.
    pub force: bool,
    /// After a stop signal, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
    /// The per-request timeout: a request without an answer may reach CertCentral this late.
    pub request_timeout: Duration,
}

/// What the runner needs from outside.
pub struct Deps<'a> {
    pub journal: &'a Journal,
    pub client: Client,
    pub limiter: Arc<Limiter>,
    pub events: Option<UnboundedSender<RunnerEvent>>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub stop: StopReason,
    pub counts: Counts,
    pub requests: u64,
    pub elapsed: Duration,
}

/// Why the runner could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The journal failed; what was committed stands.
    #[error("journal failure during the run")]
    Journal(#[from] JournalError),
}

#[derive(Debug)]
enum Job {
    Send(WorkItem),
    LookUp { item: WorkItem, state: ItemState },
}

enum Done {
    Sent {
        item: WorkItem,
        result: Result<Reissued, ApiError>,
        duration: Duration,
    },
    Looked {
        item: WorkItem,
        state: ItemState,
        verdict: Verdict,
        record: LookupRecord,
    },
    /// The run stopped while the send waited for the limiter: it never left.
    Withdrawn(WorkItem),
    /// The run stopped before the lookup began; the item keeps its state.
    NotLookedUp,
}

/// Sends the run's pending items, after reconciling every item of the journal whose outcome
/// is unknown.
pub async fn run(
    run_id: i64,
    options: &RunnerOptions,
    deps: Deps<'_>,
    cancel: CancellationToken,
) -> Result<RunSummary, RunnerError> {
    let started = Instant::now();
    let mut dispatcher = Dispatcher::new(run_id, options, &deps).await?;
    let unknown = deps
        .journal
        .unknown_outcomes(deps.client.base_url())
        .await?;
    if !unknown.is_empty() {
        dispatcher.emit(RunnerEvent::Reconciling {
            items: unknown.len(),
        });
    }
    for (item, state) in unknown {
        dispatcher.initial.insert(item.id);
        if item.run_id != run_id {
            dispatcher.foreign.insert(item.id);
        }
        // Its last request left at about `updated_at`, and may run until the timeout.
        if let Ok(changed) = time::OffsetDateTime::parse(
            &item.updated_at,
            &time::format_description::well_known::Rfc3339,
        ) {
            dispatcher
                .settle_until
                .insert(item.id, changed + options.request_timeout);
        }
        dispatcher.lookups.push_back(Job::LookUp { item, state });
    }
    let stop = dispatcher.drive(&cancel).await?;
    let counts = deps.journal.counts(run_id).await?;
    deps.journal.set_last_stop(run_id, stop.as_str()).await?;
    Ok(RunSummary {
        stop,
        counts,
        requests: dispatcher.requests,
        elapsed: started.elapsed(),
    })
}

struct Dispatcher<'a> {
    run_id: i64,
    options: &'a RunnerOptions,
    deps: &'a Deps<'a>,
    counts: Counts,
    requests: u64,
    /// Items of the initial reconciliation not decided yet; nothing is sent before they are.
    initial: HashSet<i64>,
    lookups: VecDeque<Job>,
    queue: VecDeque<WorkItem>,
    after_id: i64,
    exhausted: bool,
    delayed_lookups: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed_sends: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed_jobs: HashMap<u64, Job>,
    next_seq: u64,
    lookup_tries: HashMap<i64, u32>,
    /// Items whose request got no answer: until when it may still reach CertCentral.
    settle_until: HashMap<i64, time::OffsetDateTime>,
    /// Items of other runs being reconciled: they do not change this run's counts.
    foreign: HashSet<i64>,
    consecutive_pauses: u32,
    /// Until CertCentral has answered once, one request at a time: a refused key then costs
    /// one request, not `concurrency` of them.
    answered: bool,
    /// Outcomes not committed yet: they go into the same transaction as the next `in_flight`
    /// marks, one commit (one fsync) per round instead of two.
    unflushed: Vec<Change>,
    /// Cancelled when the run stops, so requests still waiting for the limiter never leave.
    halt: CancellationToken,
    stop: Option<StopReason>,
    tasks: JoinSet<Done>,
}

impl<'a> Dispatcher<'a> {
    async fn new(
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
            initial: HashSet::new(),
            lookups: VecDeque::new(),
            queue: VecDeque::new(),
            after_id: 0,
            exhausted: false,
            delayed_lookups: BinaryHeap::new(),
            delayed_sends: BinaryHeap::new(),
            delayed_jobs: HashMap::new(),
            next_seq: 0,
            lookup_tries: HashMap::new(),
            settle_until: HashMap::new(),
            foreign: HashSet::new(),
            consecutive_pauses: 0,
            answered: false,
            unflushed: Vec::new(),
            halt: CancellationToken::new(),
            stop: None,
            tasks: JoinSet::new(),
        })
    }

    fn emit(&self, event: RunnerEvent) {
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

    async fn drive(&mut self, cancel: &CancellationToken) -> Result<StopReason, RunnerError> {
        self.progress();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if self.stop.is_none() {
                self.start_jobs().await?;
            } else {
                self.flush(Vec::new()).await?;
            }
            if self.tasks.is_empty() {
                if self.stop.is_some() {
                    break;
                }
                match self.next_due() {
                    Some(due) => {
                        tokio::select! {
                            _ = cancel.cancelled() => self.begin_stop(StopReason::Interrupted),
                            _ = tokio::time::sleep_until(due) => {}
                        }
                        continue;
                    }
                    None => break,
                }
            }
            if self.stop.is_some() && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + self.options.drain_timeout);
            }
            // A due job can only start with a free slot; without one, waking for it would spin.
            let next_due = self
                .next_due()
                .filter(|_| self.tasks.len() < self.slot_limit());
            tokio::select! {
                _ = cancel.cancelled(), if self.stop.is_none() => {
                    self.begin_stop(StopReason::Interrupted);
                }
                Some(joined) = self.tasks.join_next() => {
                    let mut finished = vec![joined];
                    while let Some(more) = self.tasks.try_join_next() {
                        finished.push(more);
                    }
                    self.finish(finished).await?;
                }
                _ = sleep_until_opt(next_due), if next_due.is_some() && self.stop.is_none() => {}
                _ = sleep_until_opt(drain_deadline), if drain_deadline.is_some() => {
                    // Requests still out stay in_flight; the next run reconciles them. Answers that
                    // arrived meanwhile are recorded.
                    self.tasks.abort_all();
                    let mut finished = Vec::new();
                    while let Some(joined) = self.tasks.join_next().await {
                        finished.push(joined);
                    }
                    self.finish(finished).await?;
                    self.flush(Vec::new()).await?;
                    break;
                }
            }
        }
        self.flush(Vec::new()).await?;
        Ok(self.stop.unwrap_or(StopReason::Finished))
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
                && !self.foreign.contains(item_id)
            {
                self.counts.move_one(*from, *to);
            }
        }
        self.progress();
        Ok(())
    }

    fn begin_stop(&mut self, reason: StopReason) {
        if self.stop.is_none() {
            self.stop = Some(reason);
            self.halt.cancel();
            self.emit(RunnerEvent::Stopping);
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let lookup = self.delayed_lookups.peek().map(|Reverse((at, _))| *at);
        let send = self
            .delayed_sends
            .peek()
            .filter(|_| self.initial.is_empty())
            .map(|Reverse((at, _))| *at);
        lookup.into_iter().chain(send).min()
    }

    fn delay(&mut self, job: Job, wait: Duration) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let heap = match job {
            Job::Send(_) => &mut self.delayed_sends,
            Job::LookUp { .. } => &mut self.delayed_lookups,
        };
        heap.push(Reverse((Instant::now() + wait, seq)));
        self.delayed_jobs.insert(seq, job);
    }

    fn pop_due(&mut self, sends: bool) -> Option<Job> {
        let heap = if sends {
            &mut self.delayed_sends
        } else {
            &mut self.delayed_lookups
        };
        let Reverse((at, seq)) = *heap.peek()?;
        if at > Instant::now() {
            return None;
        }
        heap.pop();
        self.delayed_jobs.remove(&seq)
    }

    /// The next job: lookups first; sends only once the initial reconciliation is done.
    async fn next_job(&mut self) -> Result<Option<Job>, JournalError> {
        if let Some(job) = self.lookups.pop_front().or_else(|| self.pop_due(false)) {
            return Ok(Some(job));
        }
        if !self.initial.is_empty() {
            return Ok(None);
        }
        if let Some(job) = self.pop_due(true) {
            return Ok(Some(job));
        }
        if self.queue.is_empty() && !self.exhausted {
            // The page must see every item already moved back to pending.
            self.flush(Vec::new()).await?;
            if self.after_id == 0 && !self.options.force {
                let skipped = self
                    .deps
                    .journal
                    .skip_already_succeeded(self.run_id)
                    .await?;
                if skipped > 0 {
                    self.counts = self.deps.journal.counts(self.run_id).await?;
                }
            }
            let page = self
                .deps
                .journal
                .pending_page(self.run_id, self.after_id, PAGE)
                .await?;
            self.exhausted = page.len() < PAGE as usize;
            if let Some(last) = page.last() {
                self.after_id = last.id;
            }
            self.queue.extend(page);
        }
        Ok(self.queue.pop_front().map(Job::Send))
    }

    /// Starts jobs up to the concurrency, marking every send `in_flight` in one commit first.
    async fn start_jobs(&mut self) -> Result<(), JournalError> {
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

    fn spawn(&mut self, job: Job) {
        let client = self.deps.client.clone();
        let limiter = self.deps.limiter.clone();
        let halt = self.halt.clone();
        match job {
            Job::Send(mut item) => {
                item.attempts += 1;
                if item.first_sent_at.is_none() {
                    item.first_sent_at = Some(crate::journal::now_text());
                }
                self.counts
                    .move_one(ItemState::Pending, ItemState::InFlight);
                self.tasks.spawn(async move {
                    tokio::select! {
                        biased;
                        _ = halt.cancelled() => return Done::Withdrawn(item),
                        _ = limiter.acquire() => {}
                    }
                    let started = std::time::Instant::now();
                    let result = client.reissue(item.order_id, item.payload.clone()).await;
                    Done::Sent {
                        item,
                        result,
                        duration: started.elapsed(),
                    }
                });
            }
            Job::LookUp { item, state } => {
                self.tasks.spawn(async move {
                    if halt.is_cancelled() {
                        return Done::NotLookedUp;
                    }
                    let (verdict, record) = reconcile::look_up(&client, &limiter, &item).await;
                    Done::Looked {
                        item,
                        state,
                        verdict,
                        record,
                    }
                });
            }
        }
    }

    /// Records a batch of finished tasks in one transaction, then schedules what follows.
    async fn finish(
        &mut self,
        finished: Vec<Result<Done, tokio::task::JoinError>>,
    ) -> Result<(), JournalError> {
        let mut changes = Vec::new();
        let mut follow_ups = Vec::new();
        for joined in finished {
            let done = match joined {
                Ok(done) => done,
                Err(err) if err.is_cancelled() => continue,
                Err(err) => {
                    // The item keeps its journal state (in_flight/uncertain) and is reconciled
                    // by the next run.
                    tracing::error!("a request task failed: {err}");
                    continue;
                }
            };
            match done {
                Done::Sent {
                    item,
                    result,
                    duration,
                } => {
                    self.requests += 1;
                    self.after_send(item, result, duration, &mut changes, &mut follow_ups);
                }
                Done::Looked {
                    item,
                    state,
                    verdict,
                    record,
                } => {
                    self.requests += 1;
                    self.after_lookup(item, state, verdict, record, &mut changes, &mut follow_ups);
                }
                Done::Withdrawn(item) => {
                    let item_id = item.id;
                    changes.push(Change::FinishAttempt {
                        item_id,
                        http_status: None,
                        outcome: "not sent: the run stopped first".into(),
                        duration_ms: 0,
                    });
                    changes.push(Change::Transition {
                        item_id,
                        from: ItemState::InFlight,
                        to: ItemState::Pending,
                        outcome: Outcome {
                            uncharged: true,
                            ..Outcome::default()
                        },
                    });
                }
                Done::NotLookedUp => {}
            }
        }
        self.unflushed.extend(changes);
        for (job, wait) in follow_ups {
            match (wait, job) {
                (Some(wait), job) => self.delay(job, wait),
                (None, Job::Send(item)) => self.queue.push_front(item),
                (None, lookup) => self.lookups.push_back(lookup),
            }
        }
        Ok(())
    }

    fn after_send(
        &mut self,
        item: WorkItem,
        result: Result<Reissued, ApiError>,
        duration: Duration,
        changes: &mut Vec<Change>,
        follow_ups: &mut Vec<(Job, Option<Duration>)>,
    ) {
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let item_id = item.id;
        let (http_status, attempt_outcome) = match &result {
            Ok(reissued) => (Some(reissued.status), "accepted".to_owned()),
            Err(err) => (err.http_status(), err.to_string()),
        };
        self.answered |= http_status.is_some();
        changes.push(Change::FinishAttempt {
            item_id,
            http_status,
            outcome: attempt_outcome,
            duration_ms,
        });
        let mut transition = |to: ItemState, outcome: Outcome| {
            changes.push(Change::Transition {
                item_id,
                from: ItemState::InFlight,
                to,
                outcome,
            });
        };
        let err = match result {
            Ok(reissued) => {
                self.consecutive_pauses = 0;
                transition(
                    ItemState::Succeeded,
                    Outcome {
                        http_status: Some(reissued.status),
                        request_id: reissued.request_id,
                        certificate_id: reissued.certificate_id,
                        dcv_random_value: reissued.dcv_random_value,
                        ..Outcome::default()
                    },
                );
                return;
            }
            Err(err) => err,
        };
        let recorded = |failure_kind: Option<&'static str>, uncharged: bool| Outcome {
            http_status: err.http_status(),
            error_code: err.codes(),
            error_message: Some(err.messages()),
            failure_kind,
            uncharged,
            ..Outcome::default()
        };
        match err.disposition() {
            Disposition::StopCredentials => {
                transition(ItemState::Pending, recorded(None, true));
                self.begin_stop(StopReason::CredentialsRefused);
            }
            Disposition::Pause(retry_after) => {
                let wait = retry_after.unwrap_or_else(|| pause_backoff(self.consecutive_pauses));
                self.consecutive_pauses += 1;
                self.deps.limiter.pause_for(wait);
                self.emit(RunnerEvent::Paused { wait });
                transition(ItemState::Pending, recorded(None, true));
                follow_ups.push((Job::Send(uncharged(item)), None));
            }
            Disposition::Retry if item.attempts < i64::from(self.options.max_attempts) => {
                transition(ItemState::Pending, recorded(None, false));
                let wait = retry_backoff(item.attempts);
                follow_ups.push((Job::Send(item), Some(wait)));
            }
            Disposition::Retry => {
                transition(ItemState::Failed, recorded(Some("transient"), false));
            }
            Disposition::Reconcile => {
                if matches!(err, ApiError::NoAnswer { .. }) {
                    // Sent, but no answer: CertCentral may still be working on it.
                    let until = time::OffsetDateTime::now_utc() + self.options.request_timeout;
                    self.settle_until.insert(item.id, until);
                }
                transition(ItemState::Uncertain, recorded(None, false));
                let job = Job::LookUp {
                    item,
                    state: ItemState::Uncertain,
                };
                // Give the server a moment to finish what it may have started.
                follow_ups.push((job, Some(Duration::from_millis(200))));
            }
            Disposition::Fail => {
                transition(ItemState::Failed, recorded(Some("rejected"), false));
            }
        }
    }

    fn after_lookup(
        &mut self,
        item: WorkItem,
        state: ItemState,
        verdict: Verdict,
        record: LookupRecord,
        changes: &mut Vec<Change>,
        follow_ups: &mut Vec<(Job, Option<Duration>)>,
    ) {
        let item_id = item.id;
        // An item the pages have not reached yet is sent when they do; queuing it here too
        // would send it twice.
        let requeue_here = item.run_id == self.run_id && item.id <= self.after_id;
        let own_run = item.run_id == self.run_id;
        self.answered |= record.http_status.is_some();
        changes.push(Change::Lookup {
            item_id,
            kind: record.kind,
            http_status: record.http_status,
            outcome: record.outcome,
            duration_ms: u64::try_from(record.duration.as_millis()).unwrap_or(u64::MAX),
        });
        let mut transition = |to: ItemState, outcome: Outcome| {
            changes.push(Change::Transition {
                item_id,
                from: state,
                to,
                outcome,
            });
        };
        match verdict {
            Verdict::Found {
                request_id,
                certificate_id,
            } => {
                transition(
                    ItemState::Succeeded,
                    Outcome {
                        http_status: Some(201),
                        request_id,
                        certificate_id,
                        error_message: Some("confirmed by reconciliation".into()),
                        ..Outcome::default()
                    },
                );
                self.decided(item_id);
            }
            Verdict::NotFound if let Some(wait) = self.may_still_arrive(item_id) => {
                // The request may still be under way at CertCentral: not seeing it yet proves
                // nothing. Look again once it must have finished; meanwhile it is uncertain.
                if state == ItemState::InFlight {
                    transition(
                        ItemState::Uncertain,
                        Outcome {
                            error_message: Some(
                                "no answer recorded; looked up again once the request must have ended"
                                    .into(),
                            ),
                            ..Outcome::default()
                        },
                    );
                }
                self.initial.remove(&item_id);
                let job = Job::LookUp {
                    item,
                    state: ItemState::Uncertain,
                };
                follow_ups.push((job, Some(wait)));
            }
            Verdict::NotFound => {
                let budget_left = item.attempts < i64::from(self.options.max_attempts);
                if budget_left || state == ItemState::InFlight {
                    transition(ItemState::Pending, Outcome::default());
                    if requeue_here {
                        let wait = retry_backoff(item.attempts);
                        follow_ups.push((Job::Send(item), Some(wait)));
                    }
                } else {
                    transition(
                        ItemState::Failed,
                        Outcome {
                            error_message: Some("attempts ran out; none was received".into()),
                            failure_kind: Some("transient"),
                            ..Outcome::default()
                        },
                    );
                }
                self.decided(item_id);
            }
            Verdict::Throttled(retry_after) => {
                let wait = retry_after.unwrap_or_else(|| pause_backoff(self.consecutive_pauses));
                self.consecutive_pauses += 1;
                self.deps.limiter.pause_for(wait);
                self.emit(RunnerEvent::Paused { wait });
                follow_ups.push((Job::LookUp { item, state }, None));
            }
            Verdict::Credentials => {
                self.decided(item_id);
                self.begin_stop(StopReason::CredentialsRefused);
            }
            Verdict::Undecided(why) => {
                let tries = self.lookup_tries.get(&item_id).copied().unwrap_or(0) + 1;
                if state == ItemState::InFlight {
                    transition(
                        ItemState::Uncertain,
                        Outcome {
                            error_message: Some(format!("outcome unknown; lookup failed: {why}")),
                            ..Outcome::default()
                        },
                    );
                }
                if tries < LOOKUP_TRIES && self.stop.is_none() {
                    self.lookup_tries.insert(item_id, tries);
                    let job = Job::LookUp {
                        item,
                        state: ItemState::Uncertain,
                    };
                    follow_ups.push((job, Some(retry_backoff(i64::from(tries)))));
                    return;
                }
                if self.options.resend_uncertain && own_run {
                    changes.push(Change::Transition {
                        item_id,
                        from: ItemState::Uncertain,
                        to: ItemState::Pending,
                        outcome: Outcome {
                            error_message: Some("resent on --resend-uncertain".into()),
                            ..Outcome::default()
                        },
                    });
                    if requeue_here {
                        follow_ups.push((Job::Send(item), None));
                    }
                }
                self.decided(item_id);
            }
        }
    }

    /// Requests allowed at once: one until CertCentral has answered, then `--concurrency`.
    fn slot_limit(&self) -> usize {
        if self.answered {
            self.options.concurrency
        } else {
            1
        }
    }

    /// How long a request of this item may still be under way at CertCentral, if at all.
    fn may_still_arrive(&self, item_id: i64) -> Option<Duration> {
        let until = self.settle_until.get(&item_id)?;
        let left = *until - time::OffsetDateTime::now_utc();
        Duration::try_from(left).ok().filter(|left| !left.is_zero())
    }

    /// The item needs no more lookups in this run.
    fn decided(&mut self, item_id: i64) {
        self.settle_until.remove(&item_id);
        self.lookup_tries.remove(&item_id);
        self.initial.remove(&item_id);
    }
}
/// The attempt was not charged (429/503): the journal took it back, so does the copy in hand.
fn uncharged(mut item: WorkItem) -> WorkItem {
    item.attempts -= 1;
    item
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The wait before attempt `attempts + 1`: exponential with jitter (backon's schedule).
fn retry_backoff(attempts: i64) -> Duration {
    let step = usize::try_from(attempts.max(1) - 1).unwrap_or(0);
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(step)
        .unwrap_or(Duration::from_secs(30))
}

/// The pause after a 429/503 without Retry-After: 1 s, 2 s, 4 s … up to a minute.
fn pause_backoff(consecutive: u32) -> Duration {
    Duration::from_secs(1u64 << consecutive.min(6)).min(Duration::from_secs(60))
}
