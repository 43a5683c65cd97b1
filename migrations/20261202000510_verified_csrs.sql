-- CSRs whose signature verified, by the SHA-256 of their text (trimmed). Verifying signatures is
-- most of the cost of reading a manifest; a rerun of the same manifest parses each CSR again
-- but verifies only those not in here. About 40 bytes per distinct CSR, written once: a rerun
-- adds nothing for the CSRs it saw before.
CREATE TABLE verified_csrs (
    digest BLOB NOT NULL PRIMARY KEY,
    -- The run whose planning verified it first; `prune` forgets what removed runs verified.
    run_id INTEGER NOT NULL
) WITHOUT ROWID;
