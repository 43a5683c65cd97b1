//! The CSRs already verified, by the digest of their text: read before a manifest is, added to
//! by each run that verifies new ones, forgotten with the run that verified them.

use std::collections::HashSet;

use crate::manifest::csr::CsrDigest;

use super::{Engine, Journal, JournalError, Planner};

impl Journal {
    /// The digests of every CSR a run has verified.
    pub async fn verified_csrs(&self) -> Result<HashSet<CsrDigest>, JournalError> {
        // As one row of hex: fetched row by row, 100,000 digests cost more than verifying
        // nothing saves on a rerun. The two engines spell hex and the aggregate differently.
        let all = match self.engine {
            Engine::Sqlite => "SELECT group_concat(hex(digest), '') FROM verified_csrs",
            Engine::Postgres => "SELECT string_agg(encode(digest, 'hex'), '') FROM verified_csrs",
        };
        let digits: Option<String> = sqlx::query_scalar(all).fetch_one(&self.pool).await?;
        let digits = digits.unwrap_or_default();
        Ok(digits
            .as_bytes()
            .chunks_exact(2 * std::mem::size_of::<CsrDigest>())
            .filter_map(|digest| {
                let mut bytes = CsrDigest::default();
                hex::decode_to_slice(digest, &mut bytes)
                    .ok()
                    .map(|()| bytes)
            })
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
