//! What `approve` keeps: for each of a run's reissues, whether its request waits for approval
//! and whether it was approved. `sending` is committed before the approval leaves (like the
//! runner's `in_flight`), so a crash leaves a mark that the next `approve` settles by reading
//! the request back.

use super::{Journal, JournalError, now_text};

/// Where an item's approval stands, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalState {
    /// Pending at CertCentral when last listed.
    Waiting,
    /// The approval may have left; its answer was not recorded.
    Sending,
    Approved,
    /// Not pending when listed: approved elsewhere, rejected, or never needing approval.
    NotWaiting,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Waiting => "waiting",
            ApprovalState::Sending => "sending",
            ApprovalState::Approved => "approved",
            ApprovalState::NotWaiting => "not_waiting",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            ApprovalState::Waiting,
            ApprovalState::Sending,
            ApprovalState::Approved,
            ApprovalState::NotWaiting,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// A succeeded item whose request may still need approving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalItem {
    pub item_id: i64,
    pub order_id: i64,
    /// The request id recorded with the approval, else the one the reissue answer carried.
    pub request_id: Option<i64>,
    /// `None` when never looked for.
    pub state: Option<ApprovalState>,
    /// When the reissue was first sent (RFC 3339).
    pub first_sent_at: Option<String>,
}

type ApprovalRow = (i64, i64, Option<i64>, Option<String>, Option<String>);

impl Journal {
    /// The run's succeeded items, not issued as far as the journal knows, whose approval is not
    /// settled: never looked for, `waiting` or `sending`. In order of the run.
    pub async fn approval_items(&self, run_id: i64) -> Result<Vec<ApprovalItem>, JournalError> {
        let rows: Vec<ApprovalRow> = sqlx::query_as(
            "SELECT i.id, i.order_id, coalesce(a.request_id, i.request_id), a.state,
                    i.first_sent_at
             FROM items i LEFT JOIN approvals a ON a.item_id = i.id
             WHERE i.run_id = $1 AND i.state = 'succeeded' AND i.downloaded_at IS NULL
             AND coalesce(i.issue_status, '') <> 'issued'
             AND coalesce(a.state, 'waiting') IN ('waiting', 'sending')
             ORDER BY i.id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(item_id, order_id, request_id, state, first_sent_at)| ApprovalItem {
                    item_id,
                    order_id,
                    request_id,
                    state: state.as_deref().and_then(ApprovalState::parse),
                    first_sent_at,
                },
            )
            .collect())
    }

    /// Committed before the approval leaves: a crash from here on leaves `sending`.
    pub async fn mark_approving(
        &self,
        item_id: i64,
        request_id: i64,
        comment: Option<&str>,
    ) -> Result<(), JournalError> {
        let now = now_text();
        let mut tx = self.begin_fenced().await?;
        sqlx::query(
            "INSERT INTO approvals (item_id, request_id, state, comment, sent_at, updated_at)
             VALUES ($1, $2, 'sending', $3, $4, $5)
             ON CONFLICT (item_id) DO UPDATE SET request_id = excluded.request_id,
                 state = 'sending', comment = excluded.comment, sent_at = excluded.sent_at,
                 updated_at = excluded.updated_at, http_status = NULL, error = NULL",
        )
        .bind(item_id)
        .bind(request_id)
        .bind(comment)
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records where the item's approval stands now, with the answer that said so.
    pub async fn record_approval(
        &self,
        item_id: i64,
        request_id: Option<i64>,
        state: ApprovalState,
        http_status: Option<u16>,
        error: Option<&str>,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "INSERT INTO approvals (item_id, request_id, state, updated_at, http_status, error)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (item_id) DO UPDATE SET
                 request_id = coalesce(excluded.request_id, approvals.request_id),
                 state = excluded.state, updated_at = excluded.updated_at,
                 http_status = excluded.http_status, error = excluded.error",
        )
        .bind(item_id)
        .bind(request_id)
        .bind(state.as_str())
        .bind(now_text())
        .bind(http_status.map(i64::from))
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_as_written() {
        for state in [
            ApprovalState::Waiting,
            ApprovalState::Sending,
            ApprovalState::Approved,
            ApprovalState::NotWaiting,
        ] {
            assert_eq!(ApprovalState::parse(state.as_str()), Some(state));
        }
        assert_eq!(ApprovalState::parse("maybe"), None);
    }
}
