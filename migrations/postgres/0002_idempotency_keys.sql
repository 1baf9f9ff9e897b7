-- SPEC 1.5: the outcome of a request sent with an Idempotency-Key, written in the same
-- transaction as its events, so that a retry is replayed and never stored twice.
CREATE TABLE idempotency_keys (
    bot_id              text        NOT NULL,
    key                 text        NOT NULL,
    fingerprint         text        NOT NULL,
    created_at          timestamptz NOT NULL,
    conversation_id     text        NOT NULL,
    accepted            bigint      NOT NULL,
    first_seq           bigint      NOT NULL,
    last_seq            bigint      NOT NULL,
    conversation_status text        NOT NULL,
    PRIMARY KEY (bot_id, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
