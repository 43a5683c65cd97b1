//! Every request to CertCentral, as the rate limiter of the next process needs it: the runner's
//! reissues and lookups are `attempts`; everything else (fill-from-order, collect's polls and
//! downloads, and the requests of any other command) is a row of `requests`, written by
//! [`Journal::record_request`].

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Journal, JournalError, time_text};

/// A request that is not an item's reissue attempt or lookup, once it has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    /// What was asked, for people reading the journal: `order_info`, `reissue_list`,
    /// `status_changes`, `download`, …
    pub kind: &'static str,
    pub order_id: Option<i64>,
    /// When the limiter let it go.
    pub started_at: SystemTime,
    /// When its answer (or failure) came back: the latest it can have reached CertCentral.
    pub finished_at: SystemTime,
    /// `None` when no answer came.
    pub http_status: Option<u16>,
    pub outcome: String,
}

/// A recorded request's start, and its end if it was recorded.
type Times = (String, Option<String>);

impl Journal {
    /// Records a request this process made outside the runner's reissue attempts and lookups,
    /// so that the next process (or command) counts it in its rate windows. Call it as soon as
    /// the request has ended, whatever the outcome; every request a command makes must end up
    /// here or in `attempts`.
    pub async fn record_request(&self, request: &SentRequest) -> Result<(), JournalError> {
        insert(request).execute(&self.pool).await?;
        Ok(())
    }

    /// How long ago each request that may still be inside a window of length `span` ended:
    /// attempts, lookups and other requests alike, by any process. A request recorded without
    /// an end (its process died while it was under way) is taken to have ended `timeout` after
    /// it started, or now if that is later than now. For [`crate::limiter::Limiter::seed`].
    pub async fn recent_request_ends(
        &self,
        span: Duration,
        timeout: Duration,
    ) -> Result<Vec<Duration>, JournalError> {
        let now = OffsetDateTime::now_utc();
        // A second of slack: the text comparison is exact only to the second.
        let slack = Duration::from_secs(1);
        let ended_after = time_text(now - span - slack);
        let started_after = time_text(now - span - timeout - slack);
        let rows: Vec<Times> = sqlx::query_as(
            "SELECT started_at, finished_at FROM attempts WHERE started_at >= $1
             UNION ALL
             SELECT started_at, finished_at FROM requests WHERE finished_at >= $2",
        )
        .bind(started_after)
        .bind(ended_after)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|(started, finished)| {
                ended_ago(now, started, finished.as_deref(), timeout).filter(|ago| *ago < span)
            })
            .collect())
    }
}

/// The row of one request (also written within a batch: [`super::Change::Request`]).
pub(super) fn insert(
    request: &SentRequest,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO requests (kind, order_id, started_at, finished_at, http_status, outcome)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(request.kind)
    .bind(request.order_id)
    .bind(time_text(OffsetDateTime::from(request.started_at)))
    .bind(time_text(OffsetDateTime::from(request.finished_at)))
    .bind(request.http_status.map(i64::from))
    .bind(&request.outcome)
}

/// How long before `now` a recorded request ended, erring late: times are stored truncated to
/// the millisecond, so a millisecond is added back; one without an end ended `timeout` after its
/// start at the latest, and no later than now.
fn ended_ago(
    now: OffsetDateTime,
    started: &str,
    finished: Option<&str>,
    timeout: Duration,
) -> Option<Duration> {
    let truncation = Duration::from_millis(1);
    let ended = match finished {
        Some(finished) => OffsetDateTime::parse(finished, &Rfc3339).ok()? + truncation,
        None => OffsetDateTime::parse(started, &Rfc3339).ok()? + timeout + truncation,
    };
    Some(Duration::try_from(now - ended).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).expect("a time")
    }

    #[test]
    fn an_ended_request_counts_from_its_end_rounded_up() {
        let now = at("2026-12-02T10:00:10Z");
        let ago = ended_ago(
            now,
            "2026-12-02T10:00:00Z",
            Some("2026-12-02T10:00:04.250Z"),
            Duration::from_secs(60),
        );
        assert_eq!(ago, Some(Duration::from_millis(5_749)));
    }

    #[test]
    fn a_request_without_an_end_counts_until_its_timeout_or_now() {
        let now = at("2026-12-02T10:00:10Z");
        let timeout = Duration::from_secs(60);
        // Still within its timeout: it may be arriving now.
        assert_eq!(
            ended_ago(now, "2026-12-02T09:59:30Z", None, timeout),
            Some(Duration::ZERO)
        );
        // Long past it: it ended by its timeout at the latest.
        assert_eq!(
            ended_ago(now, "2026-12-02T09:59:00Z", None, timeout),
            Some(Duration::from_millis(9_999))
        );
        assert_eq!(ended_ago(now, "not a time", None, timeout), None);
    }

    #[tokio::test]
    async fn requests_and_attempts_both_seed_the_next_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(&dir.path().join("j.db")).await.expect("open");
        let now = SystemTime::now();
        let request = |kind, ago: u64| SentRequest {
            kind,
            order_id: Some(7),
            started_at: now - Duration::from_secs(ago + 1),
            finished_at: now - Duration::from_secs(ago),
            http_status: Some(200),
            outcome: "ok".into(),
        };
        journal
            .record_request(&request("order_info", 2))
            .await
            .expect("record");
        journal
            .record_request(&request("download", 3))
            .await
            .expect("record");
        // Outside a 5-minute window: not counted.
        journal
            .record_request(&request("reissue_list", 400))
            .await
            .expect("record");
        sqlx::query(
            "INSERT INTO runs (created_at, base_url, options, updated_at)
             VALUES ('2026-01-01T00:00:00Z', 'x', '{}', '2026-01-01T00:00:00Z');
             INSERT INTO items (run_id, order_id, line, payload, payload_digest, state, updated_at)
             VALUES (1, 7, 2, '{}', 'd', 'in_flight', '2026-01-01T00:00:00Z');",
        )
        .execute(&journal.pool)
        .await
        .expect("an item");
        // An attempt its process left without an end, a second ago.
        sqlx::query(
            "INSERT INTO attempts (item_id, attempt, kind, started_at) VALUES (1, 1, 'reissue', $1)",
        )
        .bind(time_text(OffsetDateTime::from(
            now - Duration::from_secs(1),
        )))
        .execute(&journal.pool)
        .await
        .expect("an attempt");
        let mut ages = journal
            .recent_request_ends(Duration::from_secs(300), Duration::from_secs(60))
            .await
            .expect("read");
        ages.sort();
        assert_eq!(ages.len(), 3, "{ages:?}");
        assert!(
            ages[0] < Duration::from_secs(1),
            "the open attempt: {ages:?}"
        );
        assert!(ages[1] > Duration::from_millis(1_900) && ages[1] < Duration::from_millis(2_100));
        assert!(ages[2] > Duration::from_millis(2_900) && ages[2] < Duration::from_millis(3_100));
        journal.close().await;
    }
}
