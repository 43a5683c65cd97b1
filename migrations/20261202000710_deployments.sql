-- `collect --deploy-hook`: one row per certificate whose hook was started. 'running' is
-- committed before the hook starts and replaced when it ends, so a process killed in between
-- leaves 'running' and the next collect runs that hook again.
CREATE TABLE deployments (
    item_id     INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    state       TEXT    NOT NULL CHECK (state IN ('running', 'deployed', 'failed')),
    runs        INTEGER NOT NULL,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    -- 'exit 0', 'exit 3', 'killed by signal 9', 'timed out after 5m', 'cannot start: ...'
    exit_status TEXT,
    output_tail TEXT
);
