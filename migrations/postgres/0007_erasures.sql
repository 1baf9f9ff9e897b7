-- SPEC 10: an erased conversation leaves nothing but its tombstone in the change feed: the
-- bot, the conversation's id, the feed position it takes and the time. Tombstones are
-- listed with the events (src/store/sql.rs, changes) and deleted after
-- retention.tombstone_days. Expand only: a 0.3 binary never reads or writes it.
CREATE TABLE erasures (
    bot_id          text        NOT NULL,
    conversation_id text        NOT NULL,
    feed_txn        bigint      NOT NULL,
    seq             bigint      NOT NULL CHECK (seq >= 1),
    erased_at       timestamptz NOT NULL,
    PRIMARY KEY (bot_id, feed_txn, conversation_id, seq)
);

CREATE INDEX erasures_by_age ON erasures (erased_at);
-- A conversation started again after its erasure is placed after its tombstone in the feed.
CREATE INDEX erasures_by_conversation ON erasures (bot_id, conversation_id, feed_txn);
