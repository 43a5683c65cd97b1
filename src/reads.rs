//! Reads that are safe to repeat (GETs): each try waits for the rate limiter; a 429 or 503
//! pauses every user of the limiter and tries again; a 5xx, a lost connection or an unreadable
//! answer tries again after a growing backoff. Like the runner during an outage, a read goes on
//! until `give_up_after` has passed since its first failure; 401/403 and other 4xx answers end
//! it at once. Every request is noted, so the caller can count and record it. What the end of a
//! read means is the caller's to decide.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use backon::BackoffBuilder;

use crate::api::{ApiError, Disposition};
use crate::journal::SentRequest;
use crate::limiter::{Limiter, Timing};

/// How long a read goes on failing before it gives up, unless told otherwise (the runner's
/// `--give-up-after` default).
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(15 * 60);
/// The pause after a 429/503 that gave no Retry-After, doubled each time, capped.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);

/// Why a read ended without an answer to use.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// 401 or 403: the key is wrong or lacks permission.
    #[error("CertCentral refused the credentials")]
    Credentials(#[source] ApiError),
    /// Another 4xx: asking again would get the same answer.
    #[error("CertCentral refused the request")]
    Rejected(#[source] ApiError),
    /// The server's certificate is not trusted: not an outage, and asking again cannot help.
    #[error("CertCentral's server certificate is not trusted")]
    Untrusted(#[source] ApiError),
    /// Errors, lost connections or throttling every time, for longer than the read was to wait.
    #[error("no answer after {tries} tries in {}", crate::config::format_duration(*waited))]
    GaveUp {
        tries: usize,
        waited: Duration,
        /// When CertCentral was first found unreachable (or answering 5xx); `None` when it was
        /// only throttling.
        since: Option<time::OffsetDateTime>,
        #[source]
        last: ApiError,
    },
}

impl ReadError {
    /// The HTTP status of the answer that ended the read, if there was one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ReadError::Credentials(err) | ReadError::Rejected(err) | ReadError::Untrusted(err) => {
                err.http_status()
            }
            ReadError::GaveUp { last, .. } => last.http_status(),
        }
    }
}

/// One request a read made.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it started, for the journal's record of requests.
    pub started_at: time::OffsetDateTime,
    pub duration: Duration,
    /// When the limiter let it go and when it ended, on the wall clock.
    pub timing: Timing,
    /// The answer's status; `None` when no answer came.
    pub http_status: Option<u16>,
    /// How it went, in words, for the journal.
    pub outcome: String,
}

impl Attempt {
    /// The journal's record of this request (it seeds the next command's rate windows).
    pub fn sent(&self, kind: &'static str) -> SentRequest {
        SentRequest {
            kind,
            order_id: None,
            started_at: self.timing.admitted_at,
            finished_at: self.timing.ended_at,
            http_status: self.http_status,
            outcome: self.outcome.clone(),
        }
    }
}

/// Calls `call` until it gives an answer to use (see the module header); every request it
/// made is pushed onto `attempts`.
pub async fn read<T, F, Fut>(
    limiter: &Limiter,
    give_up_after: Duration,
    attempts: &mut Vec<Attempt>,
    mut call: F,
) -> Result<T, ReadError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build();
    let mut first_failure: Option<Instant> = None;
    // When an outage (not throttling) began, as the runner reports one.
    let mut outage: Option<(Instant, time::OffsetDateTime)> = None;
    let mut tries = 0;
    let mut pauses = 0;
    loop {
        tries += 1;
        // Held until the answer is in: the request counts in the windows from then on.
        let permit = limiter.acquire().await;
        let started_at = time::OffsetDateTime::now_utc();
        let started = Instant::now();
        let result = call().await;
        let timing = permit.end();
        let (http_status, outcome) = match &result {
            Ok(_) => (Some(200), "ok".to_owned()),
            Err(err) => (err.http_status(), err.to_string()),
        };
        attempts.push(Attempt {
            started_at,
            duration: started.elapsed(),
            timing,
            http_status,
            outcome,
        });
        let err = match result {
            Ok(value) => {
                if let Some((began, _)) = outage {
                    tracing::info!(
                        "CertCentral answers again after {}",
                        crate::config::format_duration(Duration::from_secs(
                            began.elapsed().as_secs()
                        ))
                    );
                }
                return Ok(value);
            }
            Err(err) => err,
        };
        let disposition = err.disposition();
        match disposition {
            Disposition::StopCredentials => return Err(ReadError::Credentials(err)),
            Disposition::Fail => return Err(ReadError::Rejected(err)),
            Disposition::StopUntrusted => return Err(ReadError::Untrusted(err)),
            Disposition::Pause(_) | Disposition::Unreachable | Disposition::Reconcile => {}
        }
        let waited = first_failure.get_or_insert_with(Instant::now).elapsed();
        if waited >= give_up_after {
            return Err(ReadError::GaveUp {
                tries,
                waited,
                since: outage.map(|(_, since)| since),
                last: err,
            });
        }
        match disposition {
            Disposition::Pause(wait) => {
                // A 503 that says nothing of when to come back is an outage, as the runner
                // takes it, not throttling.
                if wait.is_none() && err.http_status() == Some(503) {
                    outage.get_or_insert((started, started_at));
                }
                let doubled = FIRST_PAUSE.saturating_mul(1 << pauses.min(6));
                pauses += 1;
                let wait = wait.unwrap_or(doubled.min(LONGEST_PAUSE));
                tracing::warn!(
                    "CertCentral throttled the account; waiting {}",
                    crate::config::format_duration(wait)
                );
                limiter.pause_for(wait);
            }
            _ => {
                let (began, since) = *outage.get_or_insert((started, started_at));
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(
                    "CertCentral unreachable since {} (for {}): {}; next probe in {:.1}s",
                    clock_time(since),
                    crate::config::format_duration(Duration::from_secs(began.elapsed().as_secs())),
                    crate::api::error_chain(&err),
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// `2026-12-02 17:09:44 UTC`, as the runner's outage lines write it.
fn clock_time(at: time::OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| at.to_string())
}

/// When the outage that made `err` give up began, if it was one.
pub fn unreachable_since(err: &ReadError) -> Option<time::OffsetDateTime> {
    match err {
        ReadError::GaveUp { since, .. } => *since,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> ApiError {
        ApiError::Status {
            status,
            errors: Vec::new(),
            retry_after: Some(Duration::from_millis(10)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_and_errors_are_tried_again_and_every_request_is_noted() {
        let limiter = Limiter::new(&[]);
        let mut answers = vec![Err(status(429)), Err(status(500)), Err(status(503)), Ok(7)];
        answers.reverse();
        let mut attempts = Vec::new();
        let value = read(&limiter, Duration::from_secs(60), &mut attempts, || {
            let next = answers.pop().expect("asked too often");
            async move { next }
        })
        .await
        .expect("answered in the end");
        assert_eq!(value, 7);
        let statuses: Vec<_> = attempts.iter().map(|a| a.http_status).collect();
        assert_eq!(statuses, [Some(429), Some(500), Some(503), Some(200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_end_the_read_at_once_and_errors_when_the_time_is_up() {
        let limiter = Limiter::new(&[]);
        let patience = Duration::from_secs(60);
        for (code, credentials) in [(401, true), (403, true), (404, false), (400, false)] {
            let mut attempts = Vec::new();
            let result: Result<(), _> = read(&limiter, patience, &mut attempts, || async move {
                Err(status(code))
            })
            .await;
            match result {
                Err(ReadError::Credentials(_)) => assert!(credentials, "{code}"),
                Err(ReadError::Rejected(_)) => assert!(!credentials, "{code}"),
                other => panic!("{code}: {other:?}"),
            }
            assert_eq!(attempts.len(), 1, "{code}");
        }
        let started = tokio::time::Instant::now();
        let mut attempts = Vec::new();
        let result: Result<(), _> = read(&limiter, patience, &mut attempts, || async {
            Err(status(502))
        })
        .await;
        let Err(ReadError::GaveUp { tries, waited, .. }) = result else {
            panic!("{result:?}");
        };
        assert!(waited >= patience && started.elapsed() < patience * 2);
        assert_eq!(attempts.len(), tries);
        assert!(tries > 3, "tried again meanwhile");
        let mut attempts = Vec::new();
        let once: Result<(), _> = read(&limiter, Duration::ZERO, &mut attempts, || async {
            Err(status(502))
        })
        .await;
        assert!(matches!(once, Err(ReadError::GaveUp { tries: 1, .. })));
    }
}
