-- One sender per account: the lease on it. `fence` rises with every new holder; a holder's
-- writes check it in their own transaction. Expiry is the database's clock; `acquired_at` and
-- `renewed_at` are the holder's (RFC 3339), for people. `request_timeout_ms` is the holder's
-- request timeout: a taker waits that long after the lease ran out before reconciling.
CREATE TABLE leases (
    account            TEXT        PRIMARY KEY,
    holder_host        TEXT        NOT NULL,
    holder_pid         BIGINT      NOT NULL,
    fence              BIGINT      NOT NULL,
    acquired_at        TEXT        NOT NULL,
    renewed_at         TEXT,
    expires_at         TIMESTAMPTZ NOT NULL,
    request_timeout_ms BIGINT      NOT NULL,
    released           BOOLEAN     NOT NULL
);
