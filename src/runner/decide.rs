//! What an answer means for its item. Pure: given an answer (or a lookup's verdict) and what the
//! run knows, each function returns a [`Decision`]: the journal changes, the job that follows,
//! and an effect on the whole run. The dispatcher carries it out; nothing here waits, sends or
//! writes, so the tables are tested without tokio, SQLite or the simulator.

use std::time::Duration;

use time::OffsetDateTime;

mod lookup;

pub(crate) use lookup::{LookupFacts, after_lookup};

use super::book::Note;
use super::schedule::Job;
use super::worker::pause_backoff;
use crate::api::{ApiError, Disposition, Reissued};
use crate::events::StopReason;
use crate::journal::{Change, ItemState, Outcome, WorkItem};

/// An answer that was lost may still be in the works at CertCentral: give it a moment before
/// the first lookup.
pub(crate) const FIRST_LOOKUP_AFTER: Duration = Duration::from_millis(200);
/// How often an undecidable lookup is tried within one run.
pub(crate) const LOOKUP_TRIES: u32 = 4;

/// The options the decisions follow.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub max_attempts: u32,
    pub resend_uncertain: bool,
    /// How long after it was sent a request whose answer was lost may still take effect.
    pub settle: Duration,
}

/// How a reissue POST ended, as the decisions see it.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Accepted(Reissued),
    Refused(Refusal),
}

/// A reissue POST that did not end in a 2xx answer.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub disposition: Disposition,
    pub http_status: Option<u16>,
    pub codes: Option<String>,
    pub messages: String,
    /// The error on one line, for the attempt's row.
    pub text: String,
    /// Sent, but no answer came (timeout, connection lost): it may still take effect.
    pub answer_lost: bool,
}

impl From<Result<Reissued, ApiError>> for Answer {
    fn from(result: Result<Reissued, ApiError>) -> Self {
        match result {
            Ok(reissued) => Answer::Accepted(reissued),
            Err(err) => Answer::Refused(Refusal {
                disposition: err.disposition(),
                http_status: err.http_status(),
                codes: err.codes(),
                messages: err.messages(),
                text: err.to_string(),
                answer_lost: matches!(err, ApiError::NoAnswer { .. }),
            }),
        }
    }
}

/// What follows a finished request; the dispatcher carries it out.
#[must_use]
#[derive(Debug)]
pub(crate) struct Decision {
    /// Journal changes, committed with the next batch.
    pub changes: Vec<Change>,
    /// The item's next job, if any.
    pub follow_up: Option<FollowUp>,
    /// What the whole run does about it.
    pub effect: Effect,
    /// What the reconciliation book learns.
    pub note: Note,
}

/// A job to schedule: at once (`after: None`) or after a wait.
#[derive(Debug)]
pub(crate) struct FollowUp {
    pub job: Job,
    pub after: Option<Duration>,
}

/// An effect on the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    None,
    /// CertCentral accepted a reissue: throttling is over, pauses start small again.
    Accepted,
    /// Throttled: every worker waits this long.
    Pause(Duration),
    /// The run stops, for this reason.
    Stop(StopReason),
}

impl Decision {
    fn new(changes: Vec<Change>) -> Self {
        Self {
            changes,
            follow_up: None,
            effect: Effect::None,
            note: Note::Nothing,
        }
    }

    fn then(mut self, job: Job, after: Option<Duration>) -> Self {
        self.follow_up = Some(FollowUp { job, after });
        self
    }

    fn with(mut self, effect: Effect) -> Self {
        self.effect = effect;
        self
    }

    fn noting(mut self, note: Note) -> Self {
        self.note = note;
        self
    }
}

fn transition(item_id: i64, from: ItemState, to: ItemState, outcome: Outcome) -> Change {
    Change::Transition {
        item_id,
        from,
        to,
        outcome,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What the run knows about CertCentral when a send's answer comes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SendFacts {
    /// Throttling pauses in a row so far.
    pub pauses: u32,
    /// CertCentral is taken to be down (this answer included): a failure that may be its doing
    /// is not charged to the item.
    pub outage: bool,
}

/// After a reissue POST of `item` (its `attempts` counting this one) ended with `answer`;
/// `now`: when the answer came.
pub(crate) fn after_send(
    item: WorkItem,
    answer: Answer,
    duration: Duration,
    policy: &Policy,
    facts: SendFacts,
    now: OffsetDateTime,
) -> Decision {
    let SendFacts { pauses, outage } = facts;
    let item_id = item.id;
    let (http_status, text) = match &answer {
        Answer::Accepted(reissued) => (Some(reissued.status), "accepted".to_owned()),
        Answer::Refused(refusal) => (refusal.http_status, refusal.text.clone()),
    };
    let mut changes = vec![Change::FinishAttempt {
        item_id,
        http_status,
        outcome: text,
        duration_ms: millis(duration),
    }];
    let mut to = |state: ItemState, outcome: Outcome| {
        changes.push(transition(item_id, ItemState::InFlight, state, outcome));
    };
    let refusal = match answer {
        Answer::Accepted(reissued) => {
            to(
                ItemState::Succeeded,
                Outcome {
                    http_status: Some(reissued.status),
                    request_id: reissued.request_id,
                    certificate_id: reissued.certificate_id,
                    dcv_random_value: reissued.dcv_random_value,
                    ..Outcome::default()
                },
            );
            return Decision::new(changes).with(Effect::Accepted);
        }
        Answer::Refused(refusal) => refusal,
    };
    let recorded = |failure_kind: Option<&'static str>, uncharged: bool| Outcome {
        http_status: refusal.http_status,
        error_code: refusal.codes.clone(),
        error_message: Some(refusal.messages.clone()),
        failure_kind,
        uncharged,
        ..Outcome::default()
    };
    match refusal.disposition {
        Disposition::StopCredentials => {
            to(ItemState::Pending, recorded(None, true));
            Decision::new(changes).with(Effect::Stop(StopReason::CredentialsRefused))
        }
        Disposition::StopUntrusted => {
            // The TLS handshake failed, so the request never left: pending again, uncharged.
            // No retry can make the certificate trusted, and waiting is no use: the run stops.
            to(ItemState::Pending, recorded(None, true));
            Decision::new(changes).with(Effect::Stop(StopReason::Untrusted))
        }
        Disposition::Pause(retry_after) => {
            let wait = retry_after.unwrap_or_else(|| pause_backoff(pauses));
            to(ItemState::Pending, recorded(None, true));
            // Not charged: the journal takes the attempt back, so does the copy in hand.
            let item = WorkItem {
                attempts: item.attempts - 1,
                ..item
            };
            Decision::new(changes)
                .with(Effect::Pause(wait))
                .then(Job::Send(item), None)
        }
        Disposition::Unreachable => {
            // It never left: CertCentral's outage, not the order's failure. The run pauses (the
            // breaker) and sends it again when CertCentral answers; the attempt is not charged.
            to(ItemState::Pending, recorded(None, true));
            let item = WorkItem {
                attempts: item.attempts - 1,
                ..item
            };
            Decision::new(changes).then(Job::Send(item), None)
        }
        Disposition::Reconcile => {
            to(ItemState::Uncertain, recorded(None, outage));
            let item = WorkItem {
                attempts: item.attempts - i64::from(outage),
                ..item
            };
            // With no answer at all, CertCentral may still be working on it.
            let note = if refusal.answer_lost {
                Note::MayArriveUntil(now + policy.settle)
            } else {
                Note::Nothing
            };
            let job = Job::LookUp {
                item,
                state: ItemState::Uncertain,
            };
            Decision::new(changes)
                .then(job, Some(FIRST_LOOKUP_AFTER))
                .noting(note)
        }
        Disposition::Fail => {
            to(ItemState::Failed, recorded(Some("rejected"), false));
            Decision::new(changes)
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
