CREATE TABLE items (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           INTEGER NOT NULL REFERENCES runs(id),
    order_id         INTEGER NOT NULL,
    line             INTEGER NOT NULL,
    payload          TEXT    NOT NULL,
    payload_digest   TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN
        ('pending', 'in_flight', 'uncertain', 'succeeded', 'failed', 'skipped', 'invalid')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    failure_kind     TEXT    CHECK (failure_kind IN ('transient', 'rejected')),
    http_status      INTEGER,
    error_code       TEXT,
    error_message    TEXT,
    request_id       INTEGER,
    certificate_id   INTEGER,
    dcv_random_value TEXT,
    first_sent_at    TEXT,
    updated_at       TEXT    NOT NULL
);

-- One item per order and run; an invalid row may repeat an order id (that can be its error).
CREATE UNIQUE INDEX items_one_per_order ON items (run_id, order_id) WHERE state <> 'invalid';

CREATE INDEX items_by_run_state ON items (run_id, state, id);
CREATE INDEX items_by_order_payload ON items (order_id, payload_digest, state);
