-- SPEC 10 (as PostgreSQL's 0007 to 0009): the tombstones an erasure leaves in the change
-- feed, the index retention looks through, and idempotency keys found by conversation.
CREATE TABLE erasures (
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    feed_txn        INTEGER NOT NULL,
    seq             INTEGER NOT NULL CHECK (seq >= 1),
    erased_at       INTEGER NOT NULL,
    PRIMARY KEY (bot_id, feed_txn, conversation_id, seq)
);

CREATE INDEX erasures_by_age ON erasures (erased_at);
CREATE INDEX erasures_by_conversation ON erasures (bot_id, conversation_id, feed_txn);

CREATE INDEX conversations_purgeable ON conversations (last_event_at) WHERE status <> 'active';

CREATE INDEX idempotency_keys_by_conversation ON idempotency_keys (bot_id, conversation_id);
