-- `dcv check`: where each token-DCV reissue stands, and each of its names.
-- NULL until first checked; then 'waiting' or 'validated'.
ALTER TABLE items ADD COLUMN dcv_status TEXT CHECK (dcv_status IN ('waiting', 'validated'));
ALTER TABLE items ADD COLUMN dcv_checked_at TEXT;
-- Why the last check left the order waiting (invalid_dns_txt, file_random_value_not_found, ...).
ALTER TABLE items ADD COLUMN dcv_error TEXT;
-- When dcv_random_value runs out, once CertCentral has said (dcv-random-value).
ALTER TABLE items ADD COLUMN dcv_token_expires_at TEXT;

CREATE TABLE dcv_names (
    item_id    INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    dns_name   TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    checked_at TEXT    NOT NULL,
    PRIMARY KEY (item_id, dns_name)
);
