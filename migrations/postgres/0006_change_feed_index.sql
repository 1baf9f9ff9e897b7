-- no-transaction
-- The change feed's order (0005_change_feed). Built without blocking the replicas that
-- keep appending during a rolling deploy; alone in its file, as CONCURRENTLY cannot run in
-- a transaction.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_feed
    ON events (bot_id, feed_txn, conversation_id, seq);
