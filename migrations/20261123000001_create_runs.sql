-- Marks the file as a reissuer journal ("RSSR"), so another SQLite file is never mistaken for one.
PRAGMA application_id = 1381192530;

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at    TEXT    NOT NULL,
    manifest      TEXT,
    manifest_digest TEXT,
    base_url      TEXT    NOT NULL,
    options       TEXT    NOT NULL,
    last_stop     TEXT,
    updated_at    TEXT    NOT NULL
);
