//! Removing old runs: which finished runs may go, deleting them with their items, attempts and
//! skipped orders, and giving the space back to the file system.
//!
//! Never removed: an unfinished run; a run holding orders that an older, unfinished run still
//! has pending (the older run would send its stale payload again); and a success that a
//! remaining run's skipped order stands for (its run stays, with only such successes left).

use sqlx::FromRow;

use super::{Journal, JournalError, now_text};

/// Which runs `prune` looks at: those matching every condition given.
#[derive(Debug, Clone, Default)]
pub struct PruneSelection {
    /// Runs created before this time (RFC 3339, UTC, as the journal writes it).
    pub before: Option<String>,
    /// Leave the newest this many runs alone.
    pub keep: Option<u32>,
}

/// What `prune` did (or, in a dry run, would do) to one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedRun {
    pub run_id: i64,
    pub created_at: String,
    /// Items (and their attempts) removed.
    pub items: u64,
    pub attempts: u64,
    /// Skipped orders removed.
    pub skipped: u64,
    /// Successes kept because a remaining run stands for them (the run itself stays too).
    pub kept_successes: u64,
    /// CSRs this run verified first, forgotten with it (verified again when next seen); none
    /// while some of the run stays.
    pub verified_csrs: u64,
}

/// A selected run that stays, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spared {
    /// It still has orders to send or reconcile.
    Unfinished { run_id: i64 },
    /// It holds orders that `older`, an unfinished run, still has pending.
    TakesOver { run_id: i64, older: i64 },
}

/// The result of a prune.
#[derive(Debug, Clone, Default)]
pub struct PruneOutcome {
    pub pruned: Vec<PrunedRun>,
    pub spared: Vec<Spared>,
}

#[derive(Debug, FromRow)]
struct Candidate {
    id: i64,
    created_at: String,
    open: i64,
}

impl Journal {
    /// Removes the selected finished runs (or, with `dry_run`, only says what would go), then
    /// reclaims the space with VACUUM.
    pub async fn prune(
        &self,
        selection: &PruneSelection,
        dry_run: bool,
    ) -> Result<PruneOutcome, JournalError> {
        let mut tx = self.pool.begin().await?;
        let candidates: Vec<Candidate> = sqlx::query_as(
            // `open`: items still to send or reconcile here; a pending order a newer run has
            // taken over is not (that run sends it).
            "SELECT r.id, r.created_at, (
                 SELECT count(*) FROM items i WHERE i.run_id = r.id
                 AND (i.state IN ('in_flight', 'uncertain')
                      OR (i.state = 'pending' AND NOT EXISTS (
                              SELECT 1 FROM items n WHERE n.order_id = i.order_id
                              AND n.run_id > i.run_id AND n.state <> 'invalid')
                          AND NOT EXISTS (
                              SELECT 1 FROM skipped_items k WHERE k.order_id = i.order_id
                              AND k.run_id > i.run_id)))) AS open
             FROM runs r
             WHERE ($1 IS NULL OR r.created_at < $1)
             AND r.id NOT IN (SELECT id FROM runs ORDER BY id DESC LIMIT $2)
             ORDER BY r.id",
        )
        .bind(&selection.before)
        .bind(selection.keep.map_or(0, i64::from))
        .fetch_all(&mut *tx)
        .await?;

        let mut outcome = PruneOutcome::default();
        let mut chosen: Vec<Candidate> = Vec::new();
        // Oldest first: when a run is looked at, every older run is already decided.
        for candidate in candidates {
            if candidate.open > 0 {
                outcome.spared.push(Spared::Unfinished {
                    run_id: candidate.id,
                });
                continue;
            }
            let older: Option<i64> = sqlx::query_scalar(HOLDS_PENDING_OF_REMAINING)
                .bind(candidate.id)
                .bind(id_list(&chosen))
                .fetch_one(&mut *tx)
                .await?;
            if let Some(older) = older {
                outcome.spared.push(Spared::TakesOver {
                    run_id: candidate.id,
                    older,
                });
                continue;
            }
            chosen.push(candidate);
        }
        let ids = id_list(&chosen);
        let kept = format!("({STOOD_FOR})");
        for candidate in &chosen {
            let (items, attempts, skipped, kept_successes, verified_csrs): (
                i64,
                i64,
                i64,
                i64,
                i64,
            ) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT
                         (SELECT count(*) FROM items WHERE run_id = $1 AND id NOT IN {kept}),
                         (SELECT count(*) FROM attempts WHERE item_id IN (
                              SELECT id FROM items WHERE run_id = $1 AND id NOT IN {kept})),
                         (SELECT count(*) FROM skipped_items WHERE run_id = $1),
                         (SELECT count(*) FROM items WHERE run_id = $1 AND id IN {kept}),
                         (SELECT count(*) FROM verified_csrs WHERE run_id = $1
                          AND NOT EXISTS (
                              SELECT 1 FROM items WHERE run_id = $1 AND id IN {kept}))"
            )))
            .bind(candidate.id)
            .bind(&ids)
            .fetch_one(&mut *tx)
            .await?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            outcome.pruned.push(PrunedRun {
                run_id: candidate.id,
                created_at: candidate.created_at.clone(),
                items: count(items),
                attempts: count(attempts),
                skipped: count(skipped),
                kept_successes: count(kept_successes),
                verified_csrs: count(verified_csrs),
            });
        }
        if dry_run || chosen.is_empty() {
            tx.rollback().await?;
            return Ok(outcome);
        }
        let pruning = "(SELECT CAST(value AS BIGINT) FROM json_each($2))";
        for statement in [
            format!(
                "DELETE FROM attempts WHERE item_id IN (
                     SELECT id FROM items WHERE run_id IN {pruning} AND id NOT IN {kept})"
            ),
            format!("DELETE FROM items WHERE run_id IN {pruning} AND id NOT IN {kept}"),
            format!("DELETE FROM skipped_items WHERE run_id IN {pruning}"),
            format!(
                "DELETE FROM runs WHERE id IN {pruning}
                 AND NOT EXISTS (SELECT 1 FROM items WHERE items.run_id = runs.id)"
            ),
            // A CSR goes with the run that verified it first, once nothing of that run stays.
            format!(
                "DELETE FROM verified_csrs WHERE run_id IN {pruning}
                 AND run_id NOT IN (SELECT id FROM runs)"
            ),
            // What is left of a pruned run: the successes later runs stand for.
            format!("UPDATE runs SET pruned_at = $1, updated_at = $1 WHERE id IN {pruning}"),
        ] {
            // Built from this module's constants only; the values are bound.
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(now_text())
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        // Deleted rows leave free pages behind; VACUUM writes the file anew without them.
        // PostgreSQL's autovacuum reuses them.
        if self.engine == super::Engine::Sqlite {
            sqlx::query("VACUUM").execute(&self.pool).await?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(outcome)
    }
}

fn id_list(runs: &[Candidate]) -> String {
    serde_json::to_string(&runs.iter().map(|c| c.id).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".to_owned())
}

/// The successes that the runs staying in the journal (all but the JSON list `?2`) stand for.
const STOOD_FOR: &str = "SELECT success_id FROM skipped_items
     WHERE run_id NOT IN (SELECT CAST(value AS BIGINT) FROM json_each($2))
     UNION SELECT skipped_for FROM items
     WHERE state = 'skipped' AND skipped_for IS NOT NULL
     AND run_id NOT IN (SELECT CAST(value AS BIGINT) FROM json_each($2))";

/// The newest run older than run `?1`, staying in the journal (not in the JSON list `?2`), that
/// has pending an order run `?1` holds (sends or skips), or NULL. Removing `?1` would let that
/// run send its older payload.
const HOLDS_PENDING_OF_REMAINING: &str = "SELECT max(p.run_id) FROM items p
     WHERE p.run_id < $1 AND p.state = 'pending'
     AND p.run_id NOT IN (SELECT CAST(value AS BIGINT) FROM json_each($2))
     AND (EXISTS (SELECT 1 FROM items n WHERE n.run_id = $1 AND n.order_id = p.order_id
                  AND n.state <> 'invalid')
          OR EXISTS (SELECT 1 FROM skipped_items k WHERE k.run_id = $1
                     AND k.order_id = p.order_id))";
