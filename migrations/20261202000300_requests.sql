-- Requests that are not an item's reissue attempt or lookup: fill-from-order, collect's polls
-- and downloads, and whatever else a command asks CertCentral. With `attempts`, they are what
-- the next process counts in its rate windows. No reference to runs: a pruned run leaves them.
CREATE TABLE requests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL,
    order_id    INTEGER,
    started_at  TEXT    NOT NULL,
    finished_at TEXT    NOT NULL,
    http_status INTEGER,
    outcome     TEXT
);

CREATE INDEX requests_by_finish ON requests (finished_at);
