//! Items and their attempts: the write-ahead `in_flight` mark, outcomes, and the reads the
//! runner and the report need. Every state change names the prior state in its SQL.

use serde::Serialize;
use sqlx::{Any, FromRow, Transaction};

use super::{ItemState, Journal, JournalError, now_text};

// "Already succeeded" means: the same order, the identical payload, `succeeded` in a run
// against the same account (through whatever base URL) as run `$1`/`$2`. The two statements below say it the
// same way; keep them in step.

/// Records as skipped, for run `$1`, each `[order_id, line, payload_digest]` of the JSON array
/// `$2` whose order succeeded with that payload against run `$1`'s account, naming the newest
/// such success. Returns no rows: a rerun that sends nothing moves no row out of the database.
pub(super) const SKIP_KEYS_ALREADY_SUCCEEDED: &str =
    // Materialized: flattened into the INSERT, the lookup would run twice per key (once to
    // filter, once for the value).
    "WITH found AS MATERIALIZED (
         SELECT CAST(j.value ->> 0 AS BIGINT) AS order_id, CAST(j.value ->> 1 AS BIGINT) AS line, (
             SELECT max(s.id) FROM items s
             WHERE s.order_id = CAST(j.value ->> 0 AS BIGINT) AND s.payload_digest = j.value ->> 2
             AND s.state = 'succeeded'
             AND s.run_id IN (SELECT other_run_id FROM same_account WHERE run_id = $1)
         ) AS success_id
         FROM json_each($2) j)
     INSERT INTO skipped_items (run_id, order_id, line, success_id)
     SELECT $1, order_id, line, success_id FROM found WHERE success_id IS NOT NULL";

/// Run `$2`'s pending items become `skipped`, naming the success they stand for, where the
/// identical payload for the same order succeeded meanwhile (in another run against the same
/// account); `$1` is the time.
const SKIP_ALREADY_SUCCEEDED: &str =
    "UPDATE items SET state = 'skipped', updated_at = $1, skipped_for = done.success_id
     FROM (SELECT p.id AS item_id, max(s.id) AS success_id
           FROM items p JOIN items s ON s.order_id = p.order_id
               AND s.payload_digest = p.payload_digest AND s.state = 'succeeded'
           WHERE p.run_id = $2 AND p.state = 'pending'
           AND s.run_id IN (SELECT other_run_id FROM same_account WHERE run_id = $2)
           GROUP BY p.id) AS done
     WHERE items.id = done.item_id AND items.state = 'pending'";

/// An item the runner works on.
#[derive(Debug, Clone, FromRow)]
pub struct WorkItem {
    pub id: i64,
    pub run_id: i64,
    pub order_id: i64,
    pub payload: String,
    pub attempts: i64,
    pub first_sent_at: Option<String>,
    /// When the item last changed; for an `in_flight` item, when its request was about to leave.
    pub updated_at: String,
}

/// An item whose outcome is unknown, with its state as stored and when its last reissue
/// request was about to leave.
type UnknownRow = (
    i64,
    i64,
    i64,
    String,
    i64,
    Option<String>,
    String,
    String,
    Option<String>,
);

/// An item whose outcome is unknown (`in_flight` or `uncertain`).
#[derive(Debug, Clone)]
pub struct UnknownOutcome {
    pub item: WorkItem,
    pub state: ItemState,
    /// When its last reissue request was marked `in_flight` (RFC 3339): it may take effect at
    /// CertCentral for a while after that.
    pub last_sent_at: Option<String>,
}

/// One row of the report.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ItemRow {
    pub order_id: i64,
    pub state: String,
    pub attempts: i64,
    pub http_status: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_id: Option<i64>,
    pub certificate_id: Option<i64>,
    pub dcv_random_value: Option<String>,
    pub line: i64,
    /// Added after the contract's columns: how far `collect` got.
    pub issue_status: Option<String>,
    pub certificate_file: Option<String>,
    /// For a skipped order: the run whose success it stands for.
    pub from_run: Option<i64>,
}

/// An item whose answer carried a DCV token, with the body it was sent with.
#[derive(Debug, Clone, FromRow)]
pub struct DcvItem {
    pub order_id: i64,
    pub payload: String,
    pub dcv_random_value: String,
}

/// What is known after an answer (or its absence); written with the transition.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_id: Option<u64>,
    pub certificate_id: Option<u64>,
    pub dcv_random_value: Option<String>,
    /// `transient` or `rejected`, for items that become `failed`.
    pub failure_kind: Option<&'static str>,
    /// The attempt does not count against `--max-attempts` (429/503, or a send that never left).
    pub uncharged: bool,
}

/// One change to the journal; a batch of them commits in one transaction.
#[derive(Debug, Clone)]
pub enum Change {
    /// `pending` → `in_flight`, and a new attempt row, committed before the request leaves.
    MarkInFlight { item_id: i64 },
    /// The item moves on; `outcome` is recorded on it.
    Transition {
        item_id: i64,
        from: ItemState,
        to: ItemState,
        outcome: Outcome,
    },
    /// The reissue attempt that was started by the last `MarkInFlight` ended.
    FinishAttempt {
        item_id: i64,
        http_status: Option<u16>,
        outcome: String,
        duration_ms: u64,
    },
    /// A request that is not an item's attempt or lookup (the outage probe), complete.
    Request(super::SentRequest),
    /// A reconciliation GET for the item, complete.
    Lookup {
        item_id: i64,
        kind: &'static str,
        http_status: Option<u16>,
        outcome: String,
        duration_ms: u64,
    },
}

impl Journal {
    /// Applies the changes in one transaction: all or nothing.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), JournalError> {
        let applied = self.apply_batch(changes).await;
        match (applied, self.fence.get()) {
            (Err(JournalError::Sql(_)), Some(fence))
                if super::lease::taken_from_us(&self.pool, fence).await =>
            {
                Err(JournalError::LeaseLost {
                    account: fence.account.clone(),
                })
            }
            (applied, _) => applied,
        }
    }

    async fn apply_batch(&self, changes: &[Change]) -> Result<(), JournalError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        if let Some(fence) = self.fence.get() {
            let marks = changes
                .iter()
                .any(|change| matches!(change, Change::MarkInFlight { .. }));
            super::lease::check_fence(&mut tx, fence, marks).await?;
        }
        let now = now_text();
        // Consecutive marks go in as one set: two statements for the lot instead of two per
        // item (each statement is a round trip to SQLite's worker thread).
        let mut marks = Vec::new();
        for change in changes {
            if let Change::MarkInFlight { item_id } = change {
                marks.push(*item_id);
                continue;
            }
            mark_in_flight(&mut tx, &std::mem::take(&mut marks), &now).await?;
            apply_one(&mut tx, change, &now).await?;
        }
        mark_in_flight(&mut tx, &marks, &now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` pending items of the run with an id above `after_id`, in id order.
    pub async fn pending_page(
        &self,
        run_id: i64,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<WorkItem>, JournalError> {
        Ok(sqlx::query_as(
            // Held back (left pending, so the run reports them): an order whose outcome is
            // unknown in another run of the account — sending it could reissue twice — and an
            // order a newer run of the account has taken over, whose payload here may be stale.
            "SELECT id, run_id, order_id, payload, attempts, first_sent_at, updated_at FROM items
             WHERE run_id = $1 AND state = 'pending' AND id > $2
             AND NOT EXISTS (
                 SELECT 1 FROM items o WHERE o.order_id = items.order_id AND o.run_id <> $1
                 AND o.run_id IN (SELECT other_run_id FROM same_account WHERE run_id = $1)
                 AND (o.state IN ('in_flight', 'uncertain')
                      OR (o.run_id > $1 AND o.state <> 'invalid')))
             AND NOT EXISTS (
                 SELECT 1 FROM skipped_items k WHERE k.order_id = items.order_id AND k.run_id > $1
                 AND k.run_id IN (SELECT other_run_id FROM same_account WHERE run_id = $1))
             ORDER BY id LIMIT $3",
        )
        .bind(run_id)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Items whose outcome is unknown (`in_flight` or `uncertain`), with their state, in every
    /// run against the same account as run `run_id`, through whatever base URL: a lookup
    /// through another account would find nothing and wrongly clear the item, and one run
    /// through a second URL of the same account must not be left out.
    pub async fn unknown_outcomes_of_account(
        &self,
        run_id: i64,
    ) -> Result<Vec<UnknownOutcome>, JournalError> {
        let rows: Vec<UnknownRow> = sqlx::query_as(
            "SELECT i.id, i.run_id, i.order_id, i.payload, i.attempts, i.first_sent_at,
                    i.updated_at, i.state,
                    (SELECT a.started_at FROM attempts a
                     WHERE a.item_id = i.id AND a.kind = 'reissue' ORDER BY a.id DESC LIMIT 1)
             FROM items i
             WHERE i.state IN ('in_flight', 'uncertain')
             AND i.run_id IN (SELECT other_run_id FROM same_account WHERE run_id = $1)
             ORDER BY i.id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(
                |(
                    id,
                    run_id,
                    order_id,
                    payload,
                    attempts,
                    first_sent_at,
                    updated_at,
                    state,
                    last_sent_at,
                )| {
                    let state = state
                        .parse::<ItemState>()
                        .map_err(|e| JournalError::Sql(sqlx::Error::Decode(Box::new(e))))?;
                    let item = WorkItem {
                        id,
                        run_id,
                        order_id,
                        payload,
                        attempts,
                        first_sent_at,
                        updated_at,
                    };
                    Ok(UnknownOutcome {
                        item,
                        state,
                        last_sent_at,
                    })
                },
            )
            .collect()
    }

    /// Marks the run's pending items `skipped` where the identical payload for the same order
    /// already succeeded (in any run of the same account). Returns how many.
    pub async fn skip_already_succeeded(&self, run_id: i64) -> Result<u64, JournalError> {
        let done = sqlx::query(SKIP_ALREADY_SUCCEEDED)
            .bind(now_text())
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// `retry`: the run's failed items go back to `pending` with a fresh attempts budget;
    /// only transient failures unless `all`. Returns how many.
    pub async fn requeue_failed(&self, run_id: i64, all: bool) -> Result<u64, JournalError> {
        let done = sqlx::query(
            "UPDATE items SET state = 'pending', attempts = 0, failure_kind = NULL,
                    first_sent_at = NULL, updated_at = $1
             WHERE run_id = $2 AND state = 'failed' AND ($3 OR failure_kind = 'transient')",
        )
        .bind(now_text())
        .bind(run_id)
        .bind(all)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Report rows of one run, in manifest order. A skipped order shows the ids of the success
    /// it stands for and that success's run (`from_run`).
    pub async fn report_rows(&self, run_id: i64) -> Result<Vec<ItemRow>, JournalError> {
        Ok(sqlx::query_as(
            "SELECT order_id, state, attempts, http_status, error_code, error_message, request_id,
                    certificate_id, dcv_random_value, line, issue_status, certificate_file,
                    from_run
             FROM (
                 SELECT i.order_id, i.state, i.attempts, i.http_status, i.error_code,
                        i.error_message,
                        coalesce(i.request_id, s.request_id) AS request_id,
                        coalesce(i.certificate_id, s.certificate_id) AS certificate_id,
                        coalesce(i.dcv_random_value, s.dcv_random_value) AS dcv_random_value,
                        i.line, coalesce(i.issue_status, s.issue_status) AS issue_status,
                        coalesce(i.certificate_file, s.certificate_file) AS certificate_file,
                        s.run_id AS from_run, i.id AS seq
                 FROM items i LEFT JOIN items s ON s.id = i.skipped_for
                 WHERE i.run_id = $1
                 UNION ALL
                 SELECT k.order_id, 'skipped', 0, NULL, NULL, NULL, s.request_id,
                        s.certificate_id, s.dcv_random_value, k.line, s.issue_status,
                        s.certificate_file, s.run_id, NULL
                 FROM skipped_items k LEFT JOIN items s ON s.id = k.success_id
                 WHERE k.run_id = $1) AS rows
             ORDER BY line, seq",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The run's items that got a `dcv_random_value`, in manifest order.
    pub async fn dcv_items(&self, run_id: i64) -> Result<Vec<DcvItem>, JournalError> {
        Ok(sqlx::query_as(
            "SELECT order_id, payload, dcv_random_value FROM items
             WHERE run_id = $1 AND dcv_random_value IS NOT NULL ORDER BY line, id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Total HTTP requests recorded for the run (reissues and lookups).
    pub async fn request_count(&self, run_id: i64) -> Result<u64, JournalError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM attempts a JOIN items i ON a.item_id = i.id WHERE i.run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// `pending` → `in_flight` for every item of `ids`, each with a new attempt row (in the order
/// given); fails naming the first item that was not `pending`.
async fn mark_in_flight(
    tx: &mut Transaction<'static, Any>,
    ids: &[i64],
    now: &str,
) -> Result<(), JournalError> {
    if ids.is_empty() {
        return Ok(());
    }
    let list = serde_json::to_string(ids).unwrap_or_default();
    let updated: Vec<i64> = sqlx::query_scalar(
        "UPDATE items SET state = 'in_flight', attempts = attempts + 1,
                first_sent_at = coalesce(first_sent_at, $1), updated_at = $1
         WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each($2)) AND state = 'pending'
         RETURNING id",
    )
    .bind(now)
    .bind(&list)
    .fetch_all(&mut **tx)
    .await?;
    if updated.len() != ids.len() {
        // An id given twice, or one not pending: name the first that was not marked.
        let mut marked = updated;
        marked.sort_unstable();
        let mut seen = std::collections::HashSet::new();
        let culprit = ids
            .iter()
            .find(|id| !seen.insert(**id) || marked.binary_search(id).is_err())
            .copied()
            .unwrap_or(ids[0]);
        return Err(JournalError::StateConflict {
            item_id: culprit,
            expected: ItemState::Pending,
            next: ItemState::InFlight,
        });
    }
    sqlx::query(
        "INSERT INTO attempts (item_id, attempt, kind, started_at)
         SELECT i.id, i.attempts, 'reissue', $1
         FROM json_each($2) AS j JOIN items AS i ON i.id = CAST(j.value AS BIGINT) ORDER BY j.key",
    )
    .bind(now)
    .bind(&list)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn apply_one(
    tx: &mut Transaction<'static, Any>,
    change: &Change,
    now: &str,
) -> Result<(), JournalError> {
    match change {
        Change::MarkInFlight { item_id } => mark_in_flight(tx, &[*item_id], now).await?,
        Change::Transition {
            item_id,
            from,
            to,
            outcome,
        } => {
            if !from.can_become(*to) {
                return Err(JournalError::ForbiddenTransition {
                    item_id: *item_id,
                    from: *from,
                    to: *to,
                });
            }
            let updated = sqlx::query(
                "UPDATE items SET state = $1, http_status = $2, error_code = $3, error_message = $4,
                        request_id = coalesce($5, request_id),
                        certificate_id = coalesce($6, certificate_id),
                        dcv_random_value = coalesce($7, dcv_random_value),
                        failure_kind = $8,
                        attempts = CASE WHEN attempts > $9 THEN attempts - $9 ELSE 0 END,
                        updated_at = $10
                 WHERE id = $11 AND state = $12",
            )
            .bind(to.as_str())
            .bind(outcome.http_status.map(i64::from))
            .bind(&outcome.error_code)
            .bind(&outcome.error_message)
            .bind(outcome.request_id.and_then(|id| i64::try_from(id).ok()))
            .bind(outcome.certificate_id.and_then(|id| i64::try_from(id).ok()))
            .bind(&outcome.dcv_random_value)
            .bind(outcome.failure_kind)
            .bind(i64::from(outcome.uncharged))
            .bind(now)
            .bind(item_id)
            .bind(from.as_str())
            .execute(&mut **tx)
            .await?;
            expect_one(updated.rows_affected(), *item_id, *from, *to)?;
        }
        Change::FinishAttempt {
            item_id,
            http_status,
            outcome,
            duration_ms,
        } => {
            sqlx::query(
                // The newest open attempt only: an older one left open by a crash keeps its
                // unknown outcome rather than taking this one's.
                "UPDATE attempts SET finished_at = $1, http_status = $2, outcome = $3, duration_ms = $4
                 WHERE id = (SELECT max(id) FROM attempts
                             WHERE item_id = $5 AND kind = 'reissue' AND finished_at IS NULL)",
            )
            .bind(now)
            .bind(http_status.map(i64::from))
            .bind(outcome)
            .bind(i64::try_from(*duration_ms).unwrap_or(i64::MAX))
            .bind(item_id)
            .execute(&mut **tx)
            .await?;
        }
        Change::Request(request) => {
            super::requests::insert(request).execute(&mut **tx).await?;
        }
        Change::Lookup {
            item_id,
            kind,
            http_status,
            outcome,
            duration_ms,
        } => {
            sqlx::query(
                "INSERT INTO attempts (item_id, attempt, kind, started_at, finished_at,
                                       duration_ms, http_status, outcome)
                 SELECT id, attempts, $1, $2, $3, $4, $5, $6 FROM items WHERE id = $7",
            )
            .bind(kind)
            .bind(now)
            .bind(now)
            .bind(i64::try_from(*duration_ms).unwrap_or(i64::MAX))
            .bind(http_status.map(i64::from))
            .bind(outcome)
            .bind(item_id)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

fn expect_one(
    rows: u64,
    item_id: i64,
    expected: ItemState,
    next: ItemState,
) -> Result<(), JournalError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(JournalError::StateConflict {
            item_id,
            expected,
            next,
        })
    }
}
