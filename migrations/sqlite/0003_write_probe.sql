-- One row that readiness rewrites after a write failed for a full or failing disk: reads
-- keep working then, so only a write that reaches the disk shows the store can take events.
CREATE TABLE write_probe (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at INTEGER NOT NULL
);
