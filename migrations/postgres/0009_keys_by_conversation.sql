-- no-transaction
-- Erasure and retention (SPEC 10) delete a conversation's idempotency keys with it; without
-- this index each would read every key of its bot. Built without blocking ingest.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idempotency_keys_by_conversation
    ON idempotency_keys (bot_id, conversation_id);
