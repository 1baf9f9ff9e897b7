-- SPEC 8: the change feed (as PostgreSQL's 0005_change_feed). SQLite has one writer at a
-- time, so a counter taken inside the write transaction orders transactions as they
-- commit.
ALTER TABLE events ADD COLUMN feed_txn INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN status_after TEXT;

UPDATE events SET status_after = (
    SELECT c.status FROM conversations c
    WHERE c.bot_id = events.bot_id AND c.conversation_id = events.conversation_id
        AND c.last_seq = events.seq);

CREATE INDEX events_feed ON events (bot_id, feed_txn, conversation_id, seq);

CREATE TABLE feed_counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO feed_counter (id, last) VALUES (1, 0);
