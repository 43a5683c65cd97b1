//! What `dcv check` keeps: which of a run's reissues await domain control, what the last check
//! found for each order and each of its names, and the token when CertCentral replaced it.

use sqlx::FromRow;

use super::{Journal, JournalError, now_text};

/// A succeeded item whose reissue awaits domain control.
#[derive(Debug, Clone, FromRow)]
pub struct DcvWaiting {
    pub id: i64,
    pub order_id: i64,
    /// The reissue body as sent: its method and names.
    pub payload: String,
    /// `None` when the answer carrying it was lost (the reissue was found by a lookup).
    pub dcv_random_value: Option<String>,
    /// RFC 3339, once CertCentral has said.
    pub dcv_token_expires_at: Option<String>,
    pub first_sent_at: Option<String>,
    /// Why the last check left it waiting.
    pub dcv_error: Option<String>,
}

/// One name's status as a check reported it (`approved`, `pending`, or the "not found" code).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct NameStatus {
    pub dns_name: String,
    pub status: String,
}

impl Journal {
    /// The run's succeeded items sent with a token DCV method (or that got a token) whose
    /// certificate is neither issued nor validated as far as the journal knows.
    pub async fn dcv_waiting(&self, run_id: i64) -> Result<Vec<DcvWaiting>, JournalError> {
        Ok(sqlx::query_as(
            // A reissue sent with a token method awaits DCV until validated.
            "SELECT id, order_id, payload, dcv_random_value, dcv_token_expires_at, first_sent_at,
                    dcv_error
             FROM items
             WHERE run_id = $1 AND state = 'succeeded' AND downloaded_at IS NULL
             AND coalesce(issue_status, '') <> 'issued'
             AND coalesce(dcv_status, '') <> 'validated'
             AND (dcv_random_value IS NOT NULL
                  OR json_extract(payload, '$.dcv_method')
                     IN ('dns-txt-token', 'dns-cname-token', 'http-token'))
             ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a check: the order's DCV `validated` or still waiting (with the reason), and
    /// each name's status, in one transaction.
    pub async fn record_dcv_check(
        &self,
        item_id: i64,
        validated: bool,
        error: Option<&str>,
        names: &[NameStatus],
    ) -> Result<(), JournalError> {
        let now = now_text();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE items SET dcv_status = $1, dcv_checked_at = $2, dcv_error = $3, updated_at = $4
             WHERE id = $5 AND state = 'succeeded'",
        )
        .bind(if validated { "validated" } else { "waiting" })
        .bind(&now)
        .bind(error)
        .bind(&now)
        .bind(item_id)
        .execute(&mut *tx)
        .await?;
        for name in names {
            sqlx::query(
                "INSERT INTO dcv_names (item_id, dns_name, status, checked_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (item_id, dns_name)
                 DO UPDATE SET status = excluded.status, checked_at = excluded.checked_at",
            )
            .bind(item_id)
            .bind(&name.dns_name)
            .bind(&name.status)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records the token CertCentral gave (`dcv-random-value`): `report --dcv` shows it from
    /// now on.
    pub async fn record_dcv_token(
        &self,
        item_id: i64,
        value: &str,
        expires_at: Option<&str>,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE items SET dcv_random_value = $1, dcv_token_expires_at = $2, updated_at = $3
             WHERE id = $4 AND state = 'succeeded'",
        )
        .bind(value)
        .bind(expires_at)
        .bind(now_text())
        .bind(item_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The names of an item as its checks reported them, in name order.
    pub async fn dcv_names(&self, item_id: i64) -> Result<Vec<NameStatus>, JournalError> {
        Ok(sqlx::query_as(
            "SELECT dns_name, status FROM dcv_names WHERE item_id = $1 ORDER BY dns_name",
        )
        .bind(item_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
