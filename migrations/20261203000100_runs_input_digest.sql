-- A run planned from a manifest whose every row was valid remembers what its plan was made
-- from: a digest of the program's version, the options that shape payloads and validation, the
-- manifest's bytes and the bytes of every file it references. A later run with the same digest
-- against the same account, whose source run is still wholly done, is planned from that run
-- without validating anything again (a nightly rerun that sends nothing).
ALTER TABLE runs ADD COLUMN input_digest TEXT;

CREATE INDEX runs_by_input_digest ON runs (input_digest);
