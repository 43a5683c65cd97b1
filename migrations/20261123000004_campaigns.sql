-- Key-rotation campaigns: what was learned from the live order, and collection of the issued
-- certificates.
CREATE TABLE order_facts (
    order_id           INTEGER PRIMARY KEY,
    fetched_at         TEXT    NOT NULL,
    common_name        TEXT,
    dns_names          TEXT    NOT NULL DEFAULT '[]',
    server_platform_id INTEGER,
    signature_hash     TEXT
);

ALTER TABLE items ADD COLUMN issue_status TEXT;
ALTER TABLE items ADD COLUMN issued_certificate_id INTEGER;
ALTER TABLE items ADD COLUMN certificate_file TEXT;
ALTER TABLE items ADD COLUMN downloaded_at TEXT;
