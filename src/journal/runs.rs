//! Runs: planning one (its items, in one transaction), finding them, counting their states.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{Any, FromRow, Transaction};

use super::{ItemState, Journal, JournalError, now_text};

/// What a new run records about itself.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub manifest: Option<String>,
    pub base_url: String,
    /// The account the API key belongs to (`None` only when it could not be known).
    pub account_id: Option<i64>,
    /// The options the run was started with, as JSON, for `status`.
    pub options: serde_json::Value,
    /// Send orders whose identical payload already succeeded.
    pub force: bool,
}

/// A run as stored.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub created_at: String,
    pub manifest: Option<String>,
    pub manifest_digest: Option<String>,
    pub base_url: String,
    pub options: String,
    pub last_stop: Option<String>,
    pub updated_at: String,
    /// Since when CertCentral has been unreachable for this run, while it is (RFC 3339).
    pub unreachable_since: Option<String>,
    /// When `prune` removed the run's other items, keeping the successes later runs stand for.
    pub pruned_at: Option<String>,
    /// The account the API key belonged to; `None` for runs recorded before accounts were
    /// identified.
    pub account_id: Option<i64>,
}

/// Items per state for one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts(pub BTreeMap<ItemState, u64>);

impl Counts {
    pub fn get(&self, state: ItemState) -> u64 {
        self.0.get(&state).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn open(&self) -> u64 {
        self.0
            .iter()
            .filter(|(state, _)| state.is_open())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn add(&mut self, state: ItemState, n: i64) {
        let entry = self.0.entry(state).or_default();
        *entry = entry.saturating_add_signed(n);
    }

    pub fn move_one(&mut self, from: ItemState, to: ItemState) {
        self.add(from, -1);
        self.add(to, 1);
    }

    /// `succeeded 10, failed 2, ...` in state order, leaving out zeros.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = ItemState::ALL
            .into_iter()
            .filter(|state| self.get(*state) > 0)
            .map(|state| format!("{state} {}", self.get(state)))
            .collect();
        if parts.is_empty() {
            "no orders".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

impl Serialize for ItemState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Rows buffered before one INSERT; large enough to amortise the statement, small enough to
/// keep memory flat.
const PLAN_BATCH: usize = 512;

/// A manifest row waiting in the planner's batch.
struct PlannedRow {
    order_id: i64,
    line: u64,
    payload: String,
    payload_digest: String,
    state: ItemState,
    error_message: Option<String>,
}

/// A run being planned: every row of the manifest goes in inside one transaction, so an
/// invalid manifest leaves the journal as it was.
pub struct Planner {
    pub(super) tx: Transaction<'static, Any>,
    run_id: i64,
    force: bool,
    digest: Sha256,
    counts: Counts,
    /// Rows not written yet.
    batch: Vec<PlannedRow>,
    /// What the plan was made from (see [`Planner::remember_inputs`]).
    input_digest: Option<String>,
    /// The manifest digest of the run this one was planned from, when it was (no rows pass
    /// through `digest` then).
    memo_manifest_digest: Option<String>,
}

/// A run planned from an earlier one (see [`Journal::plan_from_memo`]).
pub struct MemoPlan {
    pub planner: Planner,
    /// The run the plan was taken from.
    pub source_run: i64,
}

impl Journal {
    /// Starts planning a run. Runs of an identified account first claim the runs recorded
    /// through the same base URL before accounts were identified (see [`Journal::claim_runs`]).
    pub async fn plan_run(&self, new: &NewRun) -> Result<Planner, JournalError> {
        let tx = self.pool.begin().await?;
        begin_run(tx, new).await
    }

    /// Plans a run from an earlier run of the same account whose inputs had this same
    /// `input_digest` (see `manifest::input_digest`), without a row of the manifest: every
    /// order becomes a skipped row pointing at the success the normal planner would have found
    /// (the newest success of the identical payload for the same account). `None`, with
    /// nothing written, unless some such run had no invalid row and each of its rows is still
    /// a success, or skipped for a success that still exists; then the manifest must be planned
    /// the normal way. Not for forced runs, which send what already succeeded.
    pub async fn plan_from_memo(
        &self,
        new: &NewRun,
        input_digest: &str,
    ) -> Result<Option<MemoPlan>, JournalError> {
        if new.force {
            return Ok(None);
        }
        let tx = self.pool.begin().await?;
        let mut planner = begin_run(tx, new).await?;
        let run_id = planner.run_id;
        let source: Option<(i64, Option<String>, i64)> = sqlx::query_as(MEMO_SOURCE)
            .bind(run_id)
            .bind(input_digest)
            .fetch_optional(&mut *planner.tx)
            .await?;
        let Some((source_run, manifest_digest, rows)) = source else {
            planner.rollback().await?;
            return Ok(None);
        };
        let skipped = sqlx::query(MEMO_SKIP)
            .bind(run_id)
            .bind(source_run)
            .execute(&mut *planner.tx)
            .await?
            .rows_affected();
        // Every source row finds its success (the source's own is one); anything else and the
        // normal planner decides.
        if i64::try_from(skipped).ok() != Some(rows) {
            planner.rollback().await?;
            return Ok(None);
        }
        planner.counts.add(ItemState::Skipped, rows);
        planner.memo_manifest_digest = manifest_digest;
        planner.input_digest = Some(input_digest.to_owned());
        Ok(Some(MemoPlan {
            planner,
            source_run,
        }))
    }

    /// Whether some run of any account has this input digest: when none has, the manifest is
    /// validated as early as possible, before the key's account is known.
    pub async fn has_input_digest(&self, input_digest: &str) -> Result<bool, JournalError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM runs WHERE input_digest = $1 LIMIT 1")
                .bind(input_digest)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Claims for `account_id` the runs recorded before accounts were identified: those
    /// through `base_url`, and run `run_id` (a run being continued). Until claimed, such runs are
    /// matched by base URL; after, they are that account's. Returns how many were claimed.
    pub async fn claim_runs(
        &self,
        account_id: i64,
        base_url: &str,
        run_id: Option<i64>,
    ) -> Result<u64, JournalError> {
        let mut tx = self.pool.begin().await?;
        let claimed = claim_runs(&mut tx, account_id, base_url, run_id).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// All runs, oldest first.
    pub async fn runs(&self) -> Result<Vec<RunRow>, JournalError> {
        Ok(sqlx::query_as("SELECT * FROM runs ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    /// One run, or `NoSuchRun`.
    pub async fn run(&self, run_id: i64) -> Result<RunRow, JournalError> {
        sqlx::query_as("SELECT * FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| JournalError::NoSuchRun {
                path: self.path.clone(),
                run_id,
            })
    }

    /// Run `run_id`, or the newest run when none is named; `NoRuns` in an empty journal.
    pub async fn run_or_newest(&self, run_id: Option<i64>) -> Result<RunRow, JournalError> {
        match run_id {
            Some(id) => self.run(id).await,
            None => self
                .newest_run()
                .await?
                .ok_or_else(|| JournalError::NoRuns {
                    path: self.path.clone(),
                }),
        }
    }

    /// The newest run, whatever its state.
    pub async fn newest_run(&self) -> Result<Option<RunRow>, JournalError> {
        Ok(
            sqlx::query_as("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The newest run that still has items to send or reconcile. Pending items a newer run
    /// of the same account has taken over do not count: that run sends those orders.
    pub async fn newest_open_run(&self) -> Result<Option<RunRow>, JournalError> {
        Ok(sqlx::query_as(
            "SELECT * FROM runs r WHERE EXISTS (
                 SELECT 1 FROM items i WHERE i.run_id = r.id
                 AND (i.state IN ('in_flight', 'uncertain')
                      OR (i.state = 'pending' AND NOT EXISTS (
                          SELECT 1 FROM items n WHERE n.order_id = i.order_id
                          AND n.run_id > i.run_id AND n.state <> 'invalid'
                          AND n.run_id IN (SELECT other_run_id FROM same_account
                                           WHERE run_id = i.run_id))
                          AND NOT EXISTS (
                          SELECT 1 FROM skipped_items k WHERE k.order_id = i.order_id
                          AND k.run_id > i.run_id
                          AND k.run_id IN (SELECT other_run_id FROM same_account
                                           WHERE run_id = i.run_id)))))
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Counts per state of one run.
    pub async fn counts(&self, run_id: i64) -> Result<Counts, JournalError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM items WHERE run_id = $1 GROUP BY state
             UNION ALL SELECT 'skipped', count(*) FROM skipped_items WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = Counts::default();
        for (state, n) in rows.into_iter().filter(|(_, n)| *n != 0) {
            let state: ItemState = state.parse().map_err(|e: super::state::UnknownState| {
                JournalError::Sql(sqlx::Error::Decode(Box::new(e)))
            })?;
            counts.add(state, n);
        }
        Ok(counts)
    }

    /// For a run with open items: how many are still its own to send or reconcile, and the
    /// newest run that took over any of its pending orders (it holds the same order since).
    /// A run with none of its own left and a taker is "taken over".
    pub async fn takeover(&self, run_id: i64) -> Result<(u64, Option<i64>), JournalError> {
        let (own, taker): (i64, Option<i64>) = sqlx::query_as(
            "SELECT
                 (SELECT count(*) FROM items i WHERE i.run_id = $1
                  AND (i.state IN ('in_flight', 'uncertain')
                       OR (i.state = 'pending' AND NOT EXISTS (
                               SELECT 1 FROM items n WHERE n.order_id = i.order_id
                               AND n.run_id > i.run_id AND n.state <> 'invalid'
                               AND n.run_id IN (SELECT other_run_id FROM same_account
                                                WHERE run_id = $1))
                           AND NOT EXISTS (
                               SELECT 1 FROM skipped_items k WHERE k.order_id = i.order_id
                               AND k.run_id > i.run_id
                               AND k.run_id IN (SELECT other_run_id FROM same_account
                                                WHERE run_id = $1))))),
                 (SELECT max(taker) FROM (
                      SELECT n.run_id AS taker FROM items p JOIN items n
                          ON n.order_id = p.order_id AND n.run_id > p.run_id
                          AND n.state <> 'invalid'
                      WHERE p.run_id = $1 AND p.state = 'pending'
                      UNION ALL
                      SELECT k.run_id FROM items p JOIN skipped_items k
                          ON k.order_id = p.order_id AND k.run_id > p.run_id
                      WHERE p.run_id = $1 AND p.state = 'pending') AS takers
                  WHERE taker IN (SELECT other_run_id FROM same_account WHERE run_id = $1))",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?;
        Ok((u64::try_from(own).unwrap_or(0), taker))
    }

    /// Remembers why the run last stopped (`finished`, `interrupted`, `credentials refused`).
    pub async fn set_last_stop(&self, run_id: i64, reason: &str) -> Result<(), JournalError> {
        sqlx::query("UPDATE runs SET last_stop = $1, updated_at = $2 WHERE id = $3")
            .bind(reason)
            .bind(now_text())
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that CertCentral has been unreachable since `since` (RFC 3339), or with `None`
    /// that it answers again.
    pub async fn set_unreachable_since(
        &self,
        run_id: i64,
        since: Option<&str>,
    ) -> Result<(), JournalError> {
        sqlx::query("UPDATE runs SET unreachable_since = $1, updated_at = $2 WHERE id = $3")
            .bind(since)
            .bind(now_text())
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The newest run that can stand for a new run `$1` with input digest `$2`: of the same
/// account, not pruned (prune removes all but the successes others stand for), no item that is
/// not a success or skipped for a success still there, and every skipped order's success still
/// there. Returns its id, its manifest digest and how many rows it has.
const MEMO_SOURCE: &str = "SELECT r.id, r.manifest_digest,
        (SELECT count(*) FROM items i WHERE i.run_id = r.id)
        + (SELECT count(*) FROM skipped_items k WHERE k.run_id = r.id)
     FROM runs r
     WHERE r.input_digest = $2 AND r.id <> $1 AND r.pruned_at IS NULL
     AND r.id IN (SELECT other_run_id FROM same_account WHERE run_id = $1)
     AND NOT EXISTS (
         SELECT 1 FROM items i WHERE i.run_id = r.id
         AND NOT (i.state = 'succeeded'
                  OR (i.state = 'skipped' AND EXISTS (
                      SELECT 1 FROM items s WHERE s.id = i.skipped_for AND s.state = 'succeeded'))))
     AND NOT EXISTS (
         SELECT 1 FROM skipped_items k WHERE k.run_id = r.id
         AND NOT EXISTS (SELECT 1 FROM items s WHERE s.id = k.success_id AND s.state = 'succeeded'))
     ORDER BY r.id DESC LIMIT 1";

/// Run `$1`'s skipped rows from run `$2`'s orders (lines and payload digests as planned then),
/// each naming the success the normal planner would: the newest of the identical payload for
/// the same order, against the same account (the lookup of `items::SKIP_KEYS_ALREADY_SUCCEEDED`).
const MEMO_SKIP: &str = "WITH source AS MATERIALIZED (
         SELECT i.order_id, i.line, i.payload_digest FROM items i WHERE i.run_id = $2
         UNION ALL
         SELECT k.order_id, k.line, s.payload_digest
         FROM skipped_items k JOIN items s ON s.id = k.success_id WHERE k.run_id = $2),
     found AS MATERIALIZED (
         SELECT order_id, line, (
             SELECT max(s.id) FROM items s
             WHERE s.order_id = source.order_id AND s.payload_digest = source.payload_digest
             AND s.state = 'succeeded'
             AND s.run_id IN (SELECT other_run_id FROM same_account WHERE run_id = $1)
         ) AS success_id
         FROM source)
     INSERT INTO skipped_items (run_id, order_id, line, success_id)
     SELECT $1, order_id, line, success_id FROM found WHERE success_id IS NOT NULL";

/// Opens a run being planned inside `tx`: the run's row first, then its rows go in.
async fn begin_run(
    mut tx: Transaction<'static, Any>,
    new: &NewRun,
) -> Result<Planner, JournalError> {
    if let Some(account_id) = new.account_id {
        claim_runs(&mut tx, account_id, &new.base_url, None).await?;
    }
    let now = now_text();
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (created_at, manifest, base_url, options, updated_at, account_id)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&now)
    .bind(&new.manifest)
    .bind(&new.base_url)
    .bind(new.options.to_string())
    .bind(&now)
    .bind(new.account_id)
    .fetch_one(&mut *tx)
    .await?;
    let mut digest = Sha256::new();
    // The same manifest for the same account is the same run, whatever URL reached it.
    match new.account_id {
        Some(account_id) => digest.update(format!("account {account_id}").as_bytes()),
        None => digest.update(new.base_url.as_bytes()),
    }
    digest.update(if new.force { b"force\n" } else { b"plain\n" });
    Ok(Planner {
        tx,
        run_id,
        force: new.force,
        digest,
        counts: Counts::default(),
        batch: Vec::with_capacity(PLAN_BATCH),
        input_digest: None,
        memo_manifest_digest: None,
    })
}

/// `UPDATE` half of [`Journal::claim_runs`], inside a transaction.
async fn claim_runs(
    tx: &mut Transaction<'static, Any>,
    account_id: i64,
    base_url: &str,
    run_id: Option<i64>,
) -> Result<u64, JournalError> {
    let done = sqlx::query(
        "UPDATE runs SET account_id = $1 WHERE account_id IS NULL AND (base_url = $2 OR id = $3)",
    )
    .bind(account_id)
    .bind(base_url)
    .bind(run_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

impl Planner {
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// Adds a valid order: `skipped` when its identical payload already succeeded against the
    /// same account (unless forced), `pending` otherwise. Takes the payload by value: it is
    /// held until its batch is written, and copying 100,000 of them is avoidable work.
    pub async fn add_order(
        &mut self,
        order_id: u64,
        line: u64,
        canonical: impl Into<String>,
        payload_digest: impl Into<String>,
    ) -> Result<(), JournalError> {
        let order_id = i64::try_from(order_id).unwrap_or(i64::MAX);
        let payload_digest = payload_digest.into();
        self.digest
            .update(format!("{order_id} {payload_digest}\n").as_bytes());
        self.push(PlannedRow {
            order_id,
            line,
            payload: canonical.into(),
            payload_digest,
            state: ItemState::Pending,
            error_message: None,
        })
        .await
    }

    /// Adds an invalid row (`--skip-invalid`) with its errors; order id 0 when unreadable.
    pub async fn add_invalid(
        &mut self,
        order_id: Option<u64>,
        line: u64,
        errors: &str,
    ) -> Result<(), JournalError> {
        let order_id = order_id.and_then(|id| i64::try_from(id).ok()).unwrap_or(0);
        self.digest
            .update(format!("{order_id} invalid {line}\n").as_bytes());
        self.push(PlannedRow {
            order_id,
            line,
            payload: String::new(),
            payload_digest: String::new(),
            state: ItemState::Invalid,
            error_message: Some(errors.to_owned()),
        })
        .await
    }

    async fn push(&mut self, row: PlannedRow) -> Result<(), JournalError> {
        self.batch.push(row);
        if self.batch.len() >= PLAN_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the batch: orders whose identical payload already succeeded become one small
    /// `skipped_items` row each (pointing at that success), the rest become items.
    async fn flush(&mut self) -> Result<(), JournalError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.batch, Vec::with_capacity(PLAN_BATCH));
        let skipped = match self.force {
            true => vec![false; rows.len()],
            false => self.skip_already_succeeded(&rows).await?,
        };
        let mut items = Vec::new();
        for (row, _) in rows.iter().zip(&skipped).filter(|(_, skipped)| !**skipped) {
            items.push(serde_json::json!([
                row.order_id,
                row.line,
                row.payload,
                row.payload_digest,
                row.state.as_str(),
                row.error_message
            ]));
            self.counts.add(row.state, 1);
        }
        if !items.is_empty() {
            sqlx::query(
                "INSERT INTO items (run_id, order_id, line, payload, payload_digest, state,
                                    error_message, updated_at)
                 SELECT $1, CAST(value ->> 0 AS BIGINT), CAST(value ->> 1 AS BIGINT),
                        value ->> 2, value ->> 3, value ->> 4, value ->> 5, $2
                 FROM json_each($3) ORDER BY key",
            )
            .bind(self.run_id)
            .bind(now_text())
            .bind(serde_json::Value::Array(items).to_string())
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Writes a `skipped_items` row for each pending row whose order succeeded with the
    /// identical payload against this run's account, and says which rows those were (invalid
    /// rows never are). One statement that returns no rows when every order is done, as in a
    /// rerun that sends nothing; a second one only when some are not.
    async fn skip_already_succeeded(
        &mut self,
        rows: &[PlannedRow],
    ) -> Result<Vec<bool>, JournalError> {
        let mut skipped = vec![false; rows.len()];
        // Positions in the batch of the keys sent, and the keys as `[order_id, line, digest]`.
        let (positions, keys): (Vec<usize>, Vec<(i64, u64, &str)>) = rows
            .iter()
            .enumerate()
            .filter(|(_, row)| row.state == ItemState::Pending)
            .map(|(at, row)| (at, (row.order_id, row.line, row.payload_digest.as_str())))
            .unzip();
        if keys.is_empty() {
            return Ok(skipped);
        }
        let keys = serde_json::to_string(&keys).unwrap_or_else(|_| "[]".to_owned());
        let done = sqlx::query(super::items::SKIP_KEYS_ALREADY_SUCCEEDED)
            .bind(self.run_id)
            .bind(&keys)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        self.counts
            .add(ItemState::Skipped, i64::try_from(done).unwrap_or(i64::MAX));
        if done == 0 {
            return Ok(skipped);
        }
        for &at in &positions {
            skipped[at] = true;
        }
        if usize::try_from(done).is_ok_and(|done| done == positions.len()) {
            return Ok(skipped);
        }
        // The positions among the keys of the orders not skipped.
        let left: Vec<i64> = sqlx::query_scalar(
            "SELECT j.key FROM json_each($2) j
             WHERE NOT EXISTS (SELECT 1 FROM skipped_items k
                               WHERE k.run_id = $1 AND k.order_id = CAST(j.value ->> 0 AS BIGINT))",
        )
        .bind(self.run_id)
        .bind(&keys)
        .fetch_all(&mut *self.tx)
        .await?;
        for key in left {
            if let Some(&at) = usize::try_from(key).ok().and_then(|k| positions.get(k)) {
                skipped[at] = false;
            }
        }
        Ok(skipped)
    }

    /// Writes what is buffered; then the counts are final.
    pub async fn settle(&mut self) -> Result<&Counts, JournalError> {
        self.flush().await?;
        Ok(&self.counts)
    }

    /// The digest of everything planned so far: equal digests mean the same manifest content
    /// and options.
    pub fn manifest_digest(&self) -> String {
        match &self.memo_manifest_digest {
            Some(digest) => digest.clone(),
            None => hex::encode(self.digest.clone().finalize()),
        }
    }

    /// Records what the plan was made from, so that a later run of the same inputs may be
    /// planned from this one. Only for a plan with no invalid row: a run that recorded some as
    /// invalid stands for no complete plan.
    pub fn remember_inputs(&mut self, input_digest: String) {
        self.input_digest = Some(input_digest);
    }

    /// Commits the run.
    pub async fn commit(mut self) -> Result<i64, JournalError> {
        self.settle().await?;
        let digest = self.manifest_digest();
        sqlx::query("UPDATE runs SET manifest_digest = $1, input_digest = $2 WHERE id = $3")
            .bind(&digest)
            .bind(&self.input_digest)
            .bind(self.run_id)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        Ok(self.run_id)
    }

    /// Drops the run and every row planned for it.
    pub async fn rollback(self) -> Result<(), JournalError> {
        self.tx.rollback().await?;
        Ok(())
    }
}
