-- Runs remember whose they are: the account the API key belonged to (GET /user/me) when the run
-- was planned. "Already succeeded", reconciliation and takeover look only at runs of the same
-- account, whatever base URL reached it. Runs recorded before accounts were identified have
-- none: they are matched by base URL, until the first identified run through that base URL
-- claims them for its account. (SQLite: 20261202000600_run_account.sql.)
ALTER TABLE runs ADD COLUMN account_id BIGINT;

CREATE INDEX runs_by_account ON runs (account_id);

-- Every pair of runs against the same account (each run is paired with itself).
CREATE VIEW same_account (run_id, other_run_id) AS
SELECT r.id, o.id FROM runs r JOIN runs o
ON (r.account_id IS NOT NULL AND o.account_id = r.account_id)
OR (r.account_id IS NULL AND o.account_id IS NULL AND o.base_url = r.base_url);
