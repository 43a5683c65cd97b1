//! What `collect --deploy-hook` keeps: for each downloaded certificate, whether its hook ran to
//! success. A hook is marked `running` (committed) before it starts and `deployed` or `failed`
//! when it ends: a certificate whose mark is anything but `deployed` gets its hook again.

use sqlx::FromRow;

use super::{Journal, JournalError, now_text};

/// A downloaded certificate whose hook has not succeeded yet.
#[derive(Debug, Clone, FromRow)]
pub struct Deployable {
    pub item_id: i64,
    pub order_id: i64,
    pub certificate_file: String,
}

impl Journal {
    /// The run's downloaded certificates whose hook has not succeeded, in order of the run.
    pub async fn to_deploy(&self, run_id: i64) -> Result<Vec<Deployable>, JournalError> {
        Ok(sqlx::query_as(
            "SELECT i.id AS item_id, i.order_id, i.certificate_file FROM items i
             LEFT JOIN deployments d ON d.item_id = i.id
             WHERE i.run_id = $1 AND i.state = 'succeeded' AND i.downloaded_at IS NOT NULL
             AND i.certificate_file IS NOT NULL AND coalesce(d.state, '') <> 'deployed'
             ORDER BY i.id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One item, if its certificate is downloaded and its hook has not succeeded.
    pub async fn deployable(&self, item_id: i64) -> Result<Option<Deployable>, JournalError> {
        Ok(sqlx::query_as(
            "SELECT i.id AS item_id, i.order_id, i.certificate_file FROM items i
             LEFT JOIN deployments d ON d.item_id = i.id
             WHERE i.id = $1 AND i.state = 'succeeded' AND i.downloaded_at IS NOT NULL
             AND i.certificate_file IS NOT NULL AND coalesce(d.state, '') <> 'deployed'",
        )
        .bind(item_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The certificate's file is not where the journal says (another host's `--out`, or removed):
    /// the item is collectable again, so this host's `collect` writes it before its hook runs.
    pub async fn forget_download(&self, item_id: i64) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE items SET downloaded_at = NULL, certificate_file = NULL, updated_at = $1
             WHERE id = $2 AND state = 'succeeded'",
        )
        .bind(now_text())
        .bind(item_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Committed before the hook starts: a kill from here on leaves `running`.
    pub async fn mark_deploying(&self, item_id: i64) -> Result<(), JournalError> {
        let now = now_text();
        let mut tx = self.begin_fenced().await?;
        sqlx::query(
            "INSERT INTO deployments (item_id, state, runs, started_at) VALUES ($1, 'running', 1, $2)
             ON CONFLICT (item_id) DO UPDATE SET state = 'running', runs = deployments.runs + 1,
                 started_at = excluded.started_at, finished_at = NULL, exit_status = NULL,
                 output_tail = NULL
             WHERE deployments.state <> 'deployed'",
        )
        .bind(item_id)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// How the hook ended: `deployed` (exit 0; never run again) or `failed`.
    pub async fn record_deployment(
        &self,
        item_id: i64,
        deployed: bool,
        exit_status: &str,
        output_tail: &str,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE deployments SET state = $1, finished_at = $2, exit_status = $3, output_tail = $4
             WHERE item_id = $5 AND state = 'running'",
        )
        .bind(if deployed { "deployed" } else { "failed" })
        .bind(now_text())
        .bind(exit_status)
        .bind(output_tail)
        .bind(item_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
