CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id     INTEGER NOT NULL REFERENCES items(id),
    attempt     INTEGER NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('reissue', 'order_info', 'reissue_list')),
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    duration_ms INTEGER,
    http_status INTEGER,
    outcome     TEXT
);

CREATE INDEX attempts_by_item ON attempts (item_id);
