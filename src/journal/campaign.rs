//! What key-rotation campaigns keep: facts read from the live order (so a rerun does not fetch
//! them again) and how far each succeeded item's certificate has come (issued, downloaded).

use sqlx::FromRow;

use super::{Journal, JournalError, now_text};

/// The fields `--fill-from-order` takes from the order's current certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFacts {
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub server_platform_id: Option<i64>,
    pub signature_hash: Option<String>,
}

/// `order_facts` as stored: common name, DNS names (JSON), platform id, signature hash.
type FactsRow = (Option<String>, String, Option<i64>, Option<String>);

/// A succeeded item whose certificate is not downloaded yet.
#[derive(Debug, Clone, FromRow)]
pub struct Collectable {
    pub id: i64,
    pub order_id: i64,
    pub payload: String,
    pub issue_status: Option<String>,
    pub issued_certificate_id: Option<i64>,
}

/// How far the run's succeeded items have come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Collection {
    pub downloaded: u64,
    pub issued: u64,
    pub awaiting_issuance: u64,
    /// Succeeded reissues whose certificate `collect` cannot take (no CSR was sent to check it
    /// against, a certificate for another key, ...): not awaiting anything, `collect` says why.
    pub cannot_collect: u64,
}

impl Journal {
    pub async fn order_facts(&self, order_id: u64) -> Result<Option<OrderFacts>, JournalError> {
        let row: Option<FactsRow> = sqlx::query_as(
            "SELECT common_name, dns_names, server_platform_id, signature_hash
             FROM order_facts WHERE order_id = $1",
        )
        .bind(i64::try_from(order_id).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(common_name, dns_names, server_platform_id, signature_hash)| OrderFacts {
                common_name,
                dns_names: serde_json::from_str(&dns_names).unwrap_or_default(),
                server_platform_id,
                signature_hash,
            },
        ))
    }

    pub async fn store_order_facts(
        &self,
        order_id: u64,
        facts: &OrderFacts,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "INSERT INTO order_facts
                 (order_id, fetched_at, common_name, dns_names, server_platform_id, signature_hash)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (order_id) DO UPDATE SET fetched_at = excluded.fetched_at,
                 common_name = excluded.common_name, dns_names = excluded.dns_names,
                 server_platform_id = excluded.server_platform_id,
                 signature_hash = excluded.signature_hash",
        )
        .bind(i64::try_from(order_id).unwrap_or(i64::MAX))
        .bind(now_text())
        .bind(&facts.common_name)
        .bind(serde_json::to_string(&facts.dns_names).unwrap_or_else(|_| "[]".into()))
        .bind(facts.server_platform_id)
        .bind(&facts.signature_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Succeeded items of the run, and the successes its skipped orders stand for, whose
    /// certificate is not downloaded yet.
    pub async fn collectable(&self, run_id: i64) -> Result<Vec<Collectable>, JournalError> {
        Ok(sqlx::query_as(
            "SELECT id, order_id, payload, issue_status, issued_certificate_id FROM items
             WHERE id IN (SELECT id FROM items WHERE run_id = $1 AND state = 'succeeded'
                          UNION ALL SELECT success_id FROM skipped_items WHERE run_id = $1
                          UNION ALL SELECT skipped_for FROM items
                              WHERE run_id = $1 AND state = 'skipped')
             AND state = 'succeeded' AND downloaded_at IS NULL ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records what CertCentral says of the item's reissue (`issued`, `pending`,
    /// `needs_approval`, ...), and the issued certificate's id once known.
    pub async fn record_issue(
        &self,
        item_id: i64,
        status: &str,
        certificate_id: Option<u64>,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE items SET issue_status = $1,
                    issued_certificate_id = coalesce($2, issued_certificate_id), updated_at = $3
             WHERE id = $4 AND state = 'succeeded'",
        )
        .bind(status)
        .bind(certificate_id.and_then(|id| i64::try_from(id).ok()))
        .bind(now_text())
        .bind(item_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that the certificate is on disk at `file`.
    pub async fn record_download(&self, item_id: i64, file: &str) -> Result<(), JournalError> {
        let now = now_text();
        sqlx::query(
            "UPDATE items SET issue_status = 'issued', certificate_file = $1, downloaded_at = $2,
                    updated_at = $3
             WHERE id = $4 AND state = 'succeeded'",
        )
        .bind(file)
        .bind(&now)
        .bind(&now)
        .bind(item_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn collection(&self, run_id: i64) -> Result<Collection, JournalError> {
        let (downloaded, issued, awaiting, cannot): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT
                 count(*) FILTER (WHERE downloaded_at IS NOT NULL),
                 count(*) FILTER (WHERE downloaded_at IS NULL AND issue_status = 'issued'),
                 count(*) FILTER (WHERE downloaded_at IS NULL
                                  AND coalesce(issue_status, '') NOT IN ('issued', 'problem')),
                 count(*) FILTER (WHERE downloaded_at IS NULL AND issue_status = 'problem')
             FROM items
             WHERE id IN (SELECT id FROM items WHERE run_id = $1 AND state = 'succeeded'
                          UNION ALL SELECT success_id FROM skipped_items WHERE run_id = $1
                          UNION ALL SELECT skipped_for FROM items
                              WHERE run_id = $1 AND state = 'skipped')
             AND state = 'succeeded'",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Collection {
            downloaded: count(downloaded),
            issued: count(issued),
            awaiting_issuance: count(awaiting),
            cannot_collect: count(cannot),
        })
    }
}
