//! The runner: one dispatcher owns the journal and the counts; tasks send one request each and
//! report back. Every send is marked `in_flight` in a committed transaction before it starts.
//! Never prints; knows neither clap nor the terminal.
//!
//! - `dispatcher`: the loop, the journal and the counts; carries out decisions.
//! - `decide`: pure — what an answer or a lookup's verdict means for its item.
//! - `schedule`: what starts next (lookups, delayed jobs, pages of pending items).
//! - `book`: what the run is still finding out about items whose outcome is unknown.
//! - `worker`: the task bodies (one request each) and the backoff schedules.
//! - `reconcile`: how a lookup decides whether a reissue arrived.
//! - `breaker`: pure — whether CertCentral as a whole can be reached, and when to probe.

mod book;
mod breaker;
mod decide;
mod dispatcher;
pub mod reconcile;
mod schedule;
mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::api::{Client, UntrustedServer};
use crate::events::{RunnerEvent, StopReason};
use crate::journal::{Counts, Journal, JournalError, UnknownOutcome};
use crate::limiter::Limiter;
use dispatcher::Dispatcher;
use schedule::Job;

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
    /// The per-request timeout.
    pub request_timeout: Duration,
    /// An outage longer than this stops the run (`StopReason::Unreachable`).
    pub give_up_after: Duration,
    /// How long after it was sent a request whose answer was lost may still take effect at
    /// CertCentral: a lookup that does not find it is trusted only after that (`--settle`).
    pub settle: Duration,
}

/// `--settle`'s default: CertCentral may still act on a request ten minutes after it was sent.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(600);

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
    /// Since when CertCentral has been unreachable, if it still was when the run stopped.
    pub unreachable_since: Option<OffsetDateTime>,
    /// Items whose lookups had to wait out `--settle` in this run.
    pub settled: usize,
    /// Items whose lost requests may still take effect (the run stopped before their window
    /// ended), and until when the last of them may: `resume` decides them.
    pub settling: Option<(usize, OffsetDateTime)>,
    /// The server certificate that was refused, when that stopped the run.
    pub untrusted: Option<UntrustedServer>,
}

/// Why the runner could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The journal failed; what was committed stands.
    #[error("journal failure during the run")]
    Journal(#[from] JournalError),
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
    // An outage an earlier process saw is over or will be seen again.
    deps.journal.set_unreachable_since(run_id, None).await?;
    let mut dispatcher = Dispatcher::new(run_id, options, &deps).await?;
    // Every unknown outcome of the run's account, through whatever base URL it was sent.
    let unknown = deps.journal.unknown_outcomes_of_account(run_id).await?;
    if !unknown.is_empty() {
        dispatcher.emit(RunnerEvent::Reconciling {
            items: unknown.len(),
        });
    }
    let now = OffsetDateTime::now_utc();
    for unknown in unknown {
        let UnknownOutcome {
            item,
            state,
            last_sent_at,
        } = unknown;
        // Its last request may take effect until --settle after it left; a time that cannot
        // be read is taken as now.
        let sent = last_sent_at
            .as_deref()
            .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok())
            .unwrap_or(now);
        let foreign = item.run_id != run_id;
        dispatcher
            .book
            .open(item.id, foreign, Some(sent + options.settle));
        dispatcher.schedule.now(Job::LookUp { item, state });
    }
    let stop = dispatcher.drive(&cancel).await?;
    let counts = deps.journal.counts(run_id).await?;
    deps.journal.set_last_stop(run_id, stop.as_str()).await?;
    Ok(RunSummary {
        stop,
        counts,
        requests: dispatcher.requests(),
        elapsed: started.elapsed(),
        unreachable_since: dispatcher.unreachable_since(),
        settled: dispatcher.book.settled(),
        settling: dispatcher.book.settling(OffsetDateTime::now_utc()),
        untrusted: dispatcher.untrusted(),
    })
}
