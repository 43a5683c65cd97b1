//! What a lookup's verdict means for an item whose outcome was unknown.

use std::time::Duration;

use super::{Decision, LOOKUP_TRIES, Note, Policy, transition};
use super::{Effect, millis};
use crate::events::StopReason;
use crate::journal::{Change, ItemState, Outcome, WorkItem};
use crate::runner::reconcile::{LookupRecord, Verdict};
use crate::runner::schedule::Job;
use crate::runner::worker::{pause_backoff, retry_backoff};

/// What the run knows about an item being looked up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LookupFacts {
    /// The item belongs to this run (not one reconciled on the way).
    pub own_run: bool,
    /// This run's pages have passed the item: if it is to be sent again, only a job queued by
    /// this decision sends it.
    pub paged_past: bool,
    /// How long a request of the item may still take effect, if at all, counted from when
    /// this lookup started (one that started earlier proves nothing about later).
    pub may_still_arrive: Option<Duration>,
    /// Lookups of the item that found nothing while it could still arrive.
    pub settle_looks: u32,
    /// Failed lookups of the item so far.
    pub tries: u32,
    /// The run is stopping.
    pub stopping: bool,
    /// Throttling pauses in a row so far.
    pub pauses: u32,
    /// CertCentral is taken to be down (this lookup's answer included).
    pub outage: bool,
    /// The item's last attempt was charged before it was known to belong to an outage: if it
    /// goes back to pending, the attempt is given back.
    pub refund: bool,
}

/// After a lookup of `item` (in `state`) ended with `verdict`.
pub(crate) fn after_lookup(
    item: WorkItem,
    state: ItemState,
    verdict: Verdict,
    record: LookupRecord,
    facts: &LookupFacts,
    policy: &Policy,
) -> Decision {
    let item_id = item.id;
    let requeue_here = facts.own_run && facts.paged_past;
    let mut changes = vec![Change::Lookup {
        item_id,
        kind: record.kind,
        http_status: record.http_status,
        outcome: record.outcome,
        duration_ms: millis(record.duration),
    }];
    let message = |text: String| Outcome {
        error_message: Some(text),
        ..Outcome::default()
    };
    match verdict {
        Verdict::Found {
            request_id,
            certificate_id,
        } => {
            let outcome = Outcome {
                http_status: Some(201),
                request_id,
                certificate_id,
                error_message: Some("confirmed by reconciliation".into()),
                ..Outcome::default()
            };
            changes.push(transition(item_id, state, ItemState::Succeeded, outcome));
            Decision::new(changes).noting(Note::Decided)
        }
        Verdict::NotFound if let Some(left) = facts.may_still_arrive => {
            // The request may still be under way at CertCentral: not seeing it yet proves
            // nothing. Look again, more and more rarely, and once more when it must have ended
            // (--settle); meanwhile it is uncertain and nothing is resent.
            let wait = settle_interval(facts.settle_looks).min(left);
            if state == ItemState::InFlight {
                let why = "no answer recorded; looked up until the request must have ended";
                changes.push(transition(
                    item_id,
                    state,
                    ItemState::Uncertain,
                    message(why.into()),
                ));
            }
            let job = Job::LookUp {
                item,
                state: ItemState::Uncertain,
            };
            Decision::new(changes)
                .then(job, Some(wait))
                .noting(Note::Settling)
        }
        Verdict::NotFound => {
            let item = WorkItem {
                attempts: item.attempts - i64::from(facts.refund),
                ..item
            };
            // An in_flight item's last attempt counts even if it may never have left: nothing
            // tells a request killed in the limiter from one killed on the wire, and sending
            // again after the last allowed attempt would exceed --max-attempts.
            let budget_left = item.attempts < i64::from(policy.max_attempts);
            let decision = if budget_left {
                let outcome = Outcome {
                    uncharged: facts.refund,
                    ..Outcome::default()
                };
                changes.push(transition(item_id, state, ItemState::Pending, outcome));
                let decision = Decision::new(changes);
                if requeue_here {
                    let wait = retry_backoff(item.attempts);
                    decision.then(Job::Send(item), Some(wait))
                } else {
                    decision
                }
            } else {
                let outcome = Outcome {
                    failure_kind: Some("transient"),
                    uncharged: facts.refund,
                    ..message("attempts ran out; none was received".into())
                };
                changes.push(transition(item_id, state, ItemState::Failed, outcome));
                Decision::new(changes)
            };
            decision.noting(Note::Decided)
        }
        Verdict::Throttled(retry_after) => {
            let wait = retry_after.unwrap_or_else(|| pause_backoff(facts.pauses));
            Decision::new(changes)
                .with(Effect::Pause(wait))
                .then(Job::LookUp { item, state }, None)
        }
        Verdict::Credentials => Decision::new(changes)
            .with(Effect::Stop(StopReason::CredentialsRefused))
            .noting(Note::Decided),
        // The lookup never reached CertCentral: the item keeps its state for the next run.
        Verdict::Untrusted(_) => Decision::new(changes)
            .with(Effect::Stop(StopReason::Untrusted))
            .noting(Note::Decided),
        Verdict::NoContact { .. } if facts.outage => {
            // CertCentral is down: this says nothing about the item, and counts as no try. It
            // is looked up again once CertCentral answers (the breaker holds it till then).
            Decision::new(changes).then(Job::LookUp { item, state }, None)
        }
        Verdict::Undecided(why) | Verdict::NoContact { why, .. } => {
            let tries = facts.tries + 1;
            if state == ItemState::InFlight {
                let why = format!("outcome unknown; lookup failed: {why}");
                changes.push(transition(
                    item_id,
                    state,
                    ItemState::Uncertain,
                    message(why),
                ));
            }
            if tries < LOOKUP_TRIES && !facts.stopping {
                let job = Job::LookUp {
                    item,
                    state: ItemState::Uncertain,
                };
                let wait = retry_backoff(i64::from(tries));
                return Decision::new(changes)
                    .then(job, Some(wait))
                    .noting(Note::Tried(tries));
            }
            let mut decision = Decision::new(changes).noting(Note::Decided);
            if policy.resend_uncertain && facts.own_run {
                decision.changes.push(transition(
                    item_id,
                    ItemState::Uncertain,
                    ItemState::Pending,
                    message("resent on --resend-uncertain".into()),
                ));
                if requeue_here {
                    decision = decision.then(Job::Send(item), None);
                }
            }
            decision
        }
    }
}

/// The wait before the next lookup of an item that may still arrive, after `looks` lookups
/// that did not find it: 1 s, 2 s, 4 s … up to two minutes (a long --settle costs a few lookups
/// per item, not hundreds).
pub(crate) fn settle_interval(looks: u32) -> Duration {
    Duration::from_secs(1u64 << looks.min(7)).min(Duration::from_secs(120))
}

#[cfg(test)]
mod tests;
