//! What the dispatcher does with finished tasks: asks the pure decisions what each answer
//! means, and carries the decision out (changes held for the next commit, follow-ups
//! scheduled, effects on the whole run).

use std::time::Instant;

use time::OffsetDateTime;
use tokio::task::JoinError;

use super::{Dispatcher, Done};
use crate::events::RunnerEvent;
use crate::journal::{Change, ItemState, Outcome};
use crate::runner::decide::{self, Answer, Decision, Effect, LookupFacts, Policy};

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
                    let answer = Answer::from(sent.result);
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
                        self.contact.pauses,
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
                    let facts = LookupFacts {
                        own_run: item.run_id == self.run_id,
                        paged_past: self.schedule.paged_past(item_id),
                        may_still_arrive: self
                            .book
                            .may_still_arrive(item_id, OffsetDateTime::now_utc()),
                        tries: self.book.tries(item_id),
                        stopping: self.stopping(),
                        pauses: self.contact.pauses,
                    };
                    let decision =
                        decide::after_lookup(item, state, verdict, record, &facts, &self.policy());
                    self.carry_out(item_id, decision);
                }
                Done::Withdrawn(item) => self.withdrawn(item.id),
                Done::NotLookedUp => {}
            }
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

    /// A send that never left: back to pending, the attempt not charged.
    fn withdrawn(&mut self, item_id: i64) {
        self.unflushed.push(Change::FinishAttempt {
            item_id,
            http_status: None,
            outcome: "not sent: the run stopped first".into(),
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
            settle: self.options.request_timeout,
        }
    }
}
