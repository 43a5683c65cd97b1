-- SQLite's 20261202000510_verified_csrs: CSRs whose signature verified, by the SHA-256 of their
-- text, with the run that verified them first. `unhex` as SQLite has it, for the statement that
-- adds them.
CREATE FUNCTION unhex(digits text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT decode(digits, 'hex') $$;

CREATE TABLE verified_csrs (
    digest BYTEA  NOT NULL PRIMARY KEY,
    run_id BIGINT NOT NULL
);
