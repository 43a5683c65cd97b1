-- An order a run skips (its identical payload already succeeded) is one small row pointing at
-- the success it stands for, not an item holding the payload again: a rerun that sends nothing
-- adds a few bytes per order. Items keep the orders a run sends (or found done only later).
CREATE TABLE skipped_items (
    run_id     INTEGER NOT NULL REFERENCES runs(id),
    order_id   INTEGER NOT NULL,
    line       INTEGER NOT NULL,
    -- The succeeded item this order stands for. No foreign key: `prune` keeps every success a
    -- remaining run stands for, and an enforced key would need one more index per row.
    success_id INTEGER NOT NULL,
    PRIMARY KEY (run_id, order_id)
-- Stored in its primary key's order, without a separate rowid tree: about 26 bytes per row
-- with the index below, against 45 as a rowid table (elsewhere, a plain table with this key).
) WITHOUT ROWID;

-- A newer run that skips an order takes it over from an older run that still has it pending.
CREATE INDEX skipped_items_by_order ON skipped_items (order_id, run_id);

-- A skipped item (found done after planning, or written before this migration) names its success.
ALTER TABLE items ADD COLUMN skipped_for INTEGER;

UPDATE items SET skipped_for = (
    SELECT max(s.id) FROM items s
    WHERE s.order_id = items.order_id AND s.payload_digest = items.payload_digest
    AND s.state = 'succeeded' AND s.run_id IN (SELECT id FROM runs WHERE base_url =
        (SELECT base_url FROM runs WHERE id = items.run_id)))
WHERE state = 'skipped';

-- `prune` keeps a run's successes that later runs stand for, and marks what is left of the run.
ALTER TABLE runs ADD COLUMN pruned_at TEXT;
