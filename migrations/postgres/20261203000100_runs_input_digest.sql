-- SQLite's 20261203000100_runs_input_digest: what a run's plan was made from, so that a later
-- run of the same inputs against the same account is planned from it without validating again.
ALTER TABLE runs ADD COLUMN input_digest TEXT;

CREATE INDEX runs_by_input_digest ON runs (input_digest);
