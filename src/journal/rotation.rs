//! How far a run's reissues have come on the way to production, for `status`: awaiting DCV,
//! awaiting approval, issued, downloaded, deployed.

use serde::Serialize;

use super::{Journal, JournalError};

/// Counts over the run's succeeded items. `issued` includes those downloaded, and `downloaded`
/// those deployed; an item awaiting DCV may await approval too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rotation {
    pub awaiting_dcv: u64,
    pub awaiting_approval: u64,
    pub issued: u64,
    pub downloaded: u64,
    pub deployed: u64,
}

impl Journal {
    pub async fn rotation(&self, run_id: i64) -> Result<Rotation, JournalError> {
        let row: (i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT
                 count(*) FILTER (WHERE NOT issued AND (dcv_random_value IS NOT NULL
                                  OR json_extract(payload, '$.dcv_method')
                                     IN ('dns-txt-token', 'dns-cname-token', 'http-token'))
                              AND coalesce(dcv_status, '') <> 'validated'),
                 count(*) FILTER (WHERE NOT issued AND (approval IN ('waiting', 'sending')
                                  OR (approval IS NULL AND issue_status = 'needs_approval'))),
                 count(*) FILTER (WHERE issued),
                 count(*) FILTER (WHERE downloaded_at IS NOT NULL),
                 count(*) FILTER (WHERE deployed)
             FROM (SELECT i.*,
                          (downloaded_at IS NOT NULL OR coalesce(issue_status, '') = 'issued')
                              AS issued,
                          coalesce(d.state = 'deployed', FALSE) AS deployed,
                          a.state AS approval
                   FROM items i LEFT JOIN deployments d ON d.item_id = i.id
                   LEFT JOIN approvals a ON a.item_id = i.id
                   WHERE run_id = $1 AND i.state = 'succeeded') AS succeeded",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Rotation {
            awaiting_dcv: count(row.0),
            awaiting_approval: count(row.1),
            issued: count(row.2),
            downloaded: count(row.3),
            deployed: count(row.4),
        })
    }
}
