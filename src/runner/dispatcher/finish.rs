//! What the dispatcher does with finished tasks: asks the pure decisions what each answer
//! means, and carries the decision out (changes held for the next commit, follow-ups
//! scheduled, effects on the whole run).

use std::time::Instant;

use time::OffsetDateTime;
use tokio::task::JoinError;

use super::{Dispatcher, Done};
use crate::api::{ApiError, Disposition, Reach};
use crate::events::RunnerEvent;
use crate::journal::{Change, ItemState, Outcome, WorkItem};
use crate::runner::decide::{self, Answer, Decision, Effect, LookupFacts, Policy, SendFacts};
use crate::runner::reconcile::Verdict;
use crate::runner::schedule::Job;

impl Dispatcher<'_> {
    /// Takes in a batch of finished tasks; their changes commit with the next round.
    pub(super) fn finish(&mut self, finished: Vec<Result<Done, JoinError>>) {
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
                Done::Sent { item, sent } => {
                    self.requests += 1;
                    let (reach, cause) = match &sent.result {
                        Ok(_) => (Reach::Answered, None),
                        Err(err) => (err.reach(), Some(err.brief())),
                    };
                    let refused = match &sent.result {
                        Err(ApiError::Untrusted(server)) => {
                            self.refused(server);
                            true
                        }
                        _ => false,
                    };
                    let answer = Answer::from(sent.result);
                    // A throttled send is never charged, whatever the breaker makes of it.
                    let charged = !matches!(
                        &answer,
                        Answer::Refused(refusal) if matches!(refusal.disposition, Disposition::Pause(_))
                    );
                    // A refused certificate says nothing about whether CertCentral is up: it is
                    // kept from the breaker (the decision stops the run).
                    let outage = match refused {
                        true => self.contact.outage.is_down(),
                        false => self.observe(
                            reach,
                            sent.started,
                            (item.order_id, item.id),
                            charged,
                            cause,
                        ),
                    };
                    self.contact.answered |= match &answer {
                        Answer::Accepted(_) => true,
                        Answer::Refused(refusal) => refusal.http_status.is_some(),
                    };
                    let item_id = item.id;
                    let decision = decide::after_send(
                        item,
                        answer,
                        sent.duration,
                        &self.policy(),
                        SendFacts {
                            pauses: self.contact.pauses,
                            outage,
                        },
                        OffsetDateTime::now_utc(),
                    );
                    self.carry_out(item_id, decision);
                }
                Done::Looked {
                    item,
                    state,
                    verdict,
                    record,
                } => {
                    self.requests += 1;
                    self.contact.answered |= record.http_status.is_some();
                    let item_id = item.id;
                    let (reach, cause) = match &verdict {
                        Verdict::NoContact { why, unreachable } => (
                            if *unreachable {
                                Reach::Unreachable
                            } else {
                                Reach::Failed
                            },
                            Some(why.clone()),
                        ),
                        // As for a send: a 503 naming no time to come back may be an outage.
                        Verdict::Throttled(None) if record.http_status == Some(503) => {
                            (Reach::Failed, Some("HTTP 503".to_owned()))
                        }
                        _ => (Reach::Answered, None),
                    };
                    let outage = match &verdict {
                        // Says nothing about whether CertCentral is up: not for the breaker.
                        Verdict::Untrusted(server) => {
                            self.refused(server);
                            self.contact.outage.is_down()
                        }
                        _ => self.observe(
                            reach,
                            record.started,
                            (item.order_id, item_id),
                            true,
                            cause,
                        ),
                    };
                    // What the lookup saw is as old as its start.
                    let looked_at = OffsetDateTime::now_utc() - record.duration;
                    let facts = LookupFacts {
                        own_run: item.run_id == self.run_id,
                        paged_past: self.schedule.paged_past(item_id),
                        may_still_arrive: self.book.may_still_arrive(item_id, looked_at),
                        settle_looks: self.book.settle_looks(item_id),
                        tries: self.book.tries(item_id),
                        stopping: self.stopping(),
                        pauses: self.contact.pauses,
                        outage,
                        refund: self.book.owes_refund(item_id),
                    };
                    let decision =
                        decide::after_lookup(item, state, verdict, record, &facts, &self.policy());
                    self.carry_out(item_id, decision);
                }
                Done::Withdrawn(item) => self.withdrawn(item),
                Done::NotLookedUp => {}
                Done::Probed(result) => self.probed(result),
            }
        }
    }

    /// Nothing runs and what is left waits for its time, most likely out `--settle`: says so
    /// when that changes.
    pub(super) fn announce_settling(&self, announced: &mut Option<(usize, OffsetDateTime)>) {
        let settling = self.book.settling(OffsetDateTime::now_utc());
        if let Some((items, until)) = settling
            && settling != *announced
        {
            *announced = settling;
            self.emit(RunnerEvent::Settling { items, until });
        }
    }

    /// Applies a decision: its changes wait for the next commit, its follow-up is scheduled.
    fn carry_out(&mut self, item_id: i64, decision: Decision) {
        self.unflushed.extend(decision.changes);
        self.book.note(item_id, decision.note);
        match decision.effect {
            Effect::None => {}
            Effect::Accepted => self.contact.pauses = 0,
            Effect::Pause(wait) => {
                self.contact.pauses += 1;
                self.deps.limiter.pause_for(wait);
                self.emit(RunnerEvent::Paused { wait });
            }
            Effect::Stop(reason) => self.raise_stop(reason),
        }
        if let Some(follow_up) = decision.follow_up {
            match follow_up.after {
                None => self.schedule.now(follow_up.job),
                Some(wait) => self.schedule.at(Instant::now() + wait, follow_up.job),
            }
        }
    }

    /// A send that never left: back to pending, the attempt not charged; sent again after an
    /// outage, not after a stop.
    fn withdrawn(&mut self, item: WorkItem) {
        let item_id = item.id;
        let why = if self.stopping() {
            "not sent: the run stopped first"
        } else {
            self.schedule.now(Job::Send(WorkItem {
                attempts: item.attempts - 1,
                ..item
            }));
            "not sent: paused for an outage"
        };
        self.unflushed.push(Change::FinishAttempt {
            item_id,
            http_status: None,
            outcome: why.into(),
            duration_ms: 0,
        });
        self.unflushed.push(Change::Transition {
            item_id,
            from: ItemState::InFlight,
            to: ItemState::Pending,
            outcome: Outcome {
                uncharged: true,
                ..Outcome::default()
            },
        });
    }

    fn policy(&self) -> Policy {
        Policy {
            max_attempts: self.options.max_attempts,
            resend_uncertain: self.options.resend_uncertain,
            settle: self.options.settle,
        }
    }
}
