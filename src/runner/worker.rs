//! One request's path, from the limiter to the answer: the task bodies the dispatcher spawns
//! (send, look up, probe), and the backoff schedules. A task owns no state and never touches
//! the journal (see the imports): the dispatcher marks a send `in_flight` before it spawns it
//! and records what comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio_util::sync::CancellationToken;

use super::reconcile::{self, LookupRecord, Target, Verdict};
use crate::api::{ApiError, Client, Reissued};
use crate::limiter::{Limiter, Timing};
use crate::tenure::Tenure;

/// What a task needs to reach CertCentral.
#[derive(Clone)]
pub(crate) struct Line {
    pub client: Client,
    pub limiter: Arc<Limiter>,
    /// Cancelled when the run stops: a request still waiting for the limiter never leaves.
    pub halt: CancellationToken,
    /// Cancelled when an outage begins: a send still waiting for the limiter does not leave.
    pub hold: CancellationToken,
    /// On a shared journal, this process's lease on the account: a send does not leave once
    /// it may have run out (the process was frozen or cut off).
    pub tenure: Option<Tenure>,
}

/// The answer to a reissue POST, and how long it took.
pub(crate) struct Sent {
    pub result: Result<Reissued, ApiError>,
    /// When the request left.
    pub started: Instant,
    pub duration: Duration,
}

/// Sends one reissue once the limiter admits it; `None` if the run stopped or paused for an
/// outage first (the request never left).
pub(crate) async fn send(line: Line, order_id: i64, body: String) -> Option<Sent> {
    let permit = tokio::select! {
        biased;
        _ = line.halt.cancelled() => return None,
        _ = line.hold.cancelled() => return None,
        permit = line.limiter.acquire() => permit,
    };
    if line.tenure.as_ref().is_some_and(|tenure| !tenure.fresh()) {
        return None;
    }
    let started = Instant::now();
    let result = line.client.reissue(order_id, body).await;
    // Until the answer is in, the request may still be arriving: it holds its place in the
    // windows until then.
    drop(permit);
    Some(Sent {
        result,
        started,
        duration: started.elapsed(),
    })
}

/// Looks one reissue up; `None` if the run had stopped before it began.
pub(crate) async fn look_up(line: Line, target: Target) -> Option<(Verdict, LookupRecord)> {
    if line.halt.is_cancelled() || line.tenure.as_ref().is_some_and(|tenure| !tenure.fresh()) {
        return None;
    }
    Some(reconcile::look_up(&line.client, &line.limiter, &target).await)
}

/// The end of the outage probe.
pub(crate) struct Probed {
    pub result: Result<(), ApiError>,
    /// When it left.
    pub started: Instant,
    pub timing: Timing,
}

/// Whether CertCentral answers again: a harmless GET of one order (counted by the limiter like
/// every request, and recorded for the next process's windows); `None` if the run stopped
/// first.
pub(crate) async fn probe(line: Line, order_id: i64) -> Option<Probed> {
    let permit = tokio::select! {
        biased;
        _ = line.halt.cancelled() => return None,
        permit = line.limiter.acquire() => permit,
    };
    let started = Instant::now();
    let result = line.client.order_info(order_id).await.map(|_| ());
    Some(Probed {
        result,
        started,
        timing: permit.end(),
    })
}

/// The wait before attempt `attempts + 1`: exponential with jitter (backon's schedule).
pub(crate) fn retry_backoff(attempts: i64) -> Duration {
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
pub(crate) fn pause_backoff(consecutive: u32) -> Duration {
    Duration::from_secs(1u64 << consecutive.min(6)).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_grows_from_a_quarter_second_and_stays_under_a_minute() {
        let first = retry_backoff(1);
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
        for attempts in 1..40 {
            assert!(retry_backoff(attempts) <= Duration::from_secs(60));
        }
        assert!(retry_backoff(6) >= Duration::from_secs(8));
    }

    #[test]
    fn pause_backoff_doubles_up_to_a_minute() {
        let waits: Vec<u64> = (0..9).map(|n| pause_backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
