//! The CSRs already verified, by the digest of their text: read before a manifest is, added to
//! by each run that verifies new ones, forgotten with the run that verified them.

use std::collections::HashSet;

use crate::manifest::csr::CsrDigest;

use super::{Journal, JournalError, Planner};

impl Journal {
    /// The digests of every CSR a run has verified.
    pub async fn verified_csrs(&self) -> Result<HashSet<CsrDigest>, JournalError> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT digest FROM verified_csrs")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|digest| CsrDigest::try_from(digest).ok())
            .collect())
    }
}

impl Planner {
    /// Remembers, with the run being planned, CSRs verified while its manifest was read; gone
    /// again if the run is rolled back.
    pub async fn remember_verified_csrs(
        &mut self,
        digests: &[CsrDigest],
    ) -> Result<(), JournalError> {
        // In batches: one statement per batch, the digests as a JSON list of `[hex]`.
        for batch in digests.chunks(10_000) {
            let list: Vec<[String; 1]> = batch.iter().map(|d| [hex::encode(d)]).collect();
            sqlx::query(
                "INSERT INTO verified_csrs (digest, run_id)
                 SELECT unhex(value ->> 0), $1 FROM json_each($2)
                 -- SQLite needs a WHERE before an upsert's ON to tell it from a join's ON.
                 WHERE true
                 ON CONFLICT DO NOTHING",
            )
            .bind(self.run_id())
            .bind(serde_json::to_string(&list).unwrap_or_else(|_| "[]".to_owned()))
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }
}
