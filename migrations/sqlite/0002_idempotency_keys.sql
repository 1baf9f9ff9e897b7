-- SPEC 1.5: the outcome of a request sent with an Idempotency-Key, written in the same
-- transaction as its events, so that a retry is replayed and never stored twice.
CREATE TABLE idempotency_keys (
    bot_id              TEXT    NOT NULL,
    key                 TEXT    NOT NULL,
    fingerprint         TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    conversation_id     TEXT    NOT NULL,
    accepted            INTEGER NOT NULL,
    first_seq           INTEGER NOT NULL,
    last_seq            INTEGER NOT NULL,
    conversation_status TEXT    NOT NULL,
    PRIMARY KEY (bot_id, key)
) WITHOUT ROWID;

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
