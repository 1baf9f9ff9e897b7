-- SPEC 8: the change feed. Each event carries its feed transaction (the id of the
-- transaction that wrote it, or its conversation's previous event's if larger; 64 bits,
-- never wrapping) and the conversation's status after it. The feed lists a bot's events by
-- (feed_txn, conversation_id, seq), only those below the oldest transaction still running
-- (src/store/sql.rs, CHANGES), so that a transaction committing late is never skipped.
-- Expand only: a 0.2 binary keeps writing (its events get feed_txn 0 and no status, and
-- are listed first, as long committed).

ALTER TABLE events
    ADD COLUMN feed_txn     bigint NOT NULL DEFAULT 0,
    ADD COLUMN status_after text;

-- The status after each conversation's last event is the conversation's; earlier events
-- stored before the feed existed have none.
UPDATE events e SET status_after = c.status
FROM conversations c
WHERE e.bot_id = c.bot_id AND e.conversation_id = c.conversation_id AND e.seq = c.last_seq;
