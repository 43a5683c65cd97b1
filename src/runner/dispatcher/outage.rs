//! The dispatcher's side of outages: telling the breaker how each request ended, sending the
//! one probe, giving up, and telling the listener and the journal. The judging is the
//! breaker's (`runner::breaker`, pure); this only carries it out.

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use super::{Dispatcher, Done};
use crate::api::{ApiError, Reach};
use crate::events::{RunnerEvent, StopReason};
use crate::journal::{JournalError, SentRequest};
use crate::runner::breaker::{Breaker, Change, Policy, Signal};
use crate::runner::worker;

/// The run's view of whether CertCentral can be reached.
#[derive(Debug)]
pub(super) struct Outage {
    breaker: Breaker,
    /// Cancelled when an outage begins, so sends still waiting for the limiter do not leave;
    /// replaced by a fresh one when it ends.
    pub(super) hold: CancellationToken,
    /// The order the probe asks about: the last one a request failed for.
    probe_order: Option<i64>,
    /// When the outage under way began, by the wall clock.
    since: Option<OffsetDateTime>,
    /// What the journal holds (`runs.unreachable_since`): it is written only when this differs.
    recorded: Option<OffsetDateTime>,
}

impl Outage {
    pub(super) fn new(give_up_after: Duration) -> Self {
        Self {
            breaker: Breaker::new(Policy::new(give_up_after), rand::random()),
            hold: CancellationToken::new(),
            probe_order: None,
            since: None,
            recorded: None,
        }
    }

    /// CertCentral is taken to be down: nothing but the probe goes out.
    pub(super) fn is_down(&self) -> bool {
        !self.breaker.is_closed()
    }

    /// When the outage under way began.
    pub(super) fn since(&self) -> Option<OffsetDateTime> {
        self.since
    }
}

/// What the end of a request that left at `sent_at` says, in the breaker's terms.
fn signal(reach: Reach, sent_at: Instant, order_id: i64, item_id: Option<i64>) -> Signal {
    match reach {
        Reach::Answered => Signal::Answered { sent_at },
        Reach::Failed => Signal::Failed { order_id, item_id },
        Reach::Unreachable => Signal::Unreachable,
    }
}

impl Dispatcher<'_> {
    /// Tells the breaker how a request of `item_id` (order `order_id`) that left at `sent_at`
    /// ended; `cause` says how, for the log, when it failed; `charged`: whether the item paid an
    /// attempt for it (if the outage is recognized later, that attempt is given back). Returns
    /// whether CertCentral is now taken to be down, this answer included.
    pub(super) fn observe(
        &mut self,
        reach: Reach,
        sent_at: Instant,
        (order_id, item_id): (i64, i64),
        charged: bool,
        cause: Option<String>,
    ) -> bool {
        if reach != Reach::Answered {
            self.contact.outage.probe_order = Some(order_id);
        }
        let signal = signal(reach, sent_at, order_id, charged.then_some(item_id));
        let change = self.contact.outage.breaker.observe(signal, Instant::now());
        if let Change::Tripped { items } = &change {
            // Those failures were charged before they were known to be an outage; this one is
            // not charged by its own decision.
            for earlier in items.iter().filter(|id| **id != item_id) {
                self.book.owe_refund(*earlier);
            }
        }
        self.outage_changed(change, cause);
        self.contact.outage.is_down()
    }

    /// Sends the probe if one is due.
    pub(super) fn start_probe(&mut self) {
        let outage = &mut self.contact.outage;
        let Some(order_id) = outage.probe_order else {
            return;
        };
        if self.stop.reason.is_some() || !outage.breaker.start_probe(Instant::now()) {
            return;
        }
        let probe = worker::probe(self.line(), order_id);
        self.tasks.spawn(async move { Done::Probed(probe.await) });
    }

    /// The probe ended (`None`: the run stopped before it left).
    pub(super) fn probed(&mut self, probed: Option<worker::Probed>) {
        let Some(worker::Probed {
            result,
            started,
            timing,
        }) = probed
        else {
            return;
        };
        self.requests += 1;
        if let Err(ApiError::Untrusted(server)) = &result {
            // Not an outage after all, or no longer one: waiting will not make it trusted.
            self.refused(server);
            self.raise_stop(StopReason::Untrusted);
            return;
        }
        let (reach, cause) = match &result {
            Ok(()) => (Reach::Answered, None),
            Err(err) => (err.reach(), Some(err.brief())),
        };
        let order_id = self.contact.outage.probe_order.unwrap_or_default();
        // Counted in the next process's windows like every request.
        self.unflushed
            .push(crate::journal::Change::Request(SentRequest {
                kind: "probe",
                order_id: Some(order_id),
                started_at: timing.admitted_at,
                finished_at: timing.ended_at,
                http_status: match &result {
                    Ok(()) => Some(200),
                    Err(err) => err.http_status(),
                },
                outcome: cause.clone().unwrap_or_else(|| "answered".to_owned()),
            }));
        let signal = signal(reach, started, order_id, None);
        let change = self
            .contact
            .outage
            .breaker
            .probe_ended(signal, Instant::now());
        self.outage_changed(change, cause);
        self.progress();
    }

    /// When the breaker needs the loop: the next probe, or the time to give up.
    pub(super) fn outage_wake(&self) -> Option<Instant> {
        match self.stop.reason {
            Some(_) => None,
            None => self.contact.outage.breaker.next_wake(),
        }
    }

    /// The outage has lasted longer than `--give-up-after`: the run stops, every unsent item
    /// still pending.
    pub(super) fn give_up_if_due(&mut self) {
        let outage = &self.contact.outage;
        if let (true, Some(since)) = (outage.breaker.gives_up(Instant::now()), outage.since) {
            self.emit(RunnerEvent::GivingUp { since });
            self.raise_stop(StopReason::Unreachable);
        }
    }

    /// Writes since when CertCentral has been unreachable to the journal, if that changed.
    pub(super) async fn record_outage(&mut self) -> Result<(), JournalError> {
        let since = self.contact.outage.since;
        if since == self.contact.outage.recorded {
            return Ok(());
        }
        let text = since.and_then(|at| at.format(&Rfc3339).ok());
        self.deps
            .journal
            .set_unreachable_since(self.run_id, text.as_deref())
            .await?;
        self.contact.outage.recorded = since;
        Ok(())
    }

    fn outage_changed(&mut self, change: Change, cause: Option<String>) {
        let outage = &mut self.contact.outage;
        match change {
            Change::None => return,
            Change::Tripped { .. } => {
                let now = OffsetDateTime::now_utc();
                outage.since = Some(now.replace_nanosecond(0).unwrap_or(now));
                outage.hold.cancel();
            }
            Change::StillDown => {}
            Change::Recovered { lasted } => {
                outage.since = None;
                outage.hold = CancellationToken::new();
                // An answer, whatever it was: as many requests at once as allowed.
                self.contact.answered = true;
                self.emit(RunnerEvent::Reachable { lasted });
                return;
            }
        }
        let (Some(since), Some(next_probe)) = (
            outage.since,
            outage.breaker.outage().and_then(|o| o.next_probe),
        ) else {
            return;
        };
        self.emit(RunnerEvent::Unreachable {
            since,
            cause: cause.unwrap_or_else(|| "no answer".to_owned()),
            next_probe_in: next_probe.saturating_duration_since(Instant::now()),
        });
    }
}
