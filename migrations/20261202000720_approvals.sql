-- `approve`: one row per item whose reissue request was looked for or approved. 'sending' is
-- committed before PUT /request/{id}/status leaves and replaced once its answer is in, so a
-- crash in between leaves 'sending', which the next approve settles by reading the request
-- back, never by approving again blindly.
CREATE TABLE approvals (
    item_id     INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    request_id  INTEGER,
    -- 'waiting': pending at CertCentral; 'not_waiting': not pending when listed (approved
    -- elsewhere, rejected, or never needing approval).
    state       TEXT    NOT NULL
                CHECK (state IN ('waiting', 'sending', 'approved', 'not_waiting')),
    comment     TEXT,
    sent_at     TEXT,
    updated_at  TEXT    NOT NULL,
    http_status INTEGER,
    error       TEXT
);
