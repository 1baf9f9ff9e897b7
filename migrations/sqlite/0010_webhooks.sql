-- Webhooks (SPEC 12): the same tables as the PostgreSQL store (see its 0012_webhooks.sql),
-- times in INTEGER microseconds.

CREATE TABLE webhook_endpoints (
    name             TEXT    PRIMARY KEY,
    -- active | retrying | disabled
    state            TEXT    NOT NULL DEFAULT 'active',
    -- Where a bot's feed starts for this endpoint when it has no position yet.
    start_position   TEXT    NOT NULL,
    -- Bumped by `webhooks enable` and `webhooks replay`: a replica delivering an older
    -- generation stops and reads its positions again.
    generation       INTEGER NOT NULL DEFAULT 0,
    -- The replica delivering it, until lease_until (one at a time).
    lease_owner      TEXT,
    lease_until      INTEGER NOT NULL DEFAULT 0,
    -- Failed attempts of the item that has failed most since the last success.
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    last_attempt_at  INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL
);

CREATE TABLE webhook_positions (
    name        TEXT   NOT NULL REFERENCES webhook_endpoints (name) ON DELETE CASCADE,
    bot_id      TEXT   NOT NULL,
    position    TEXT   NOT NULL,
    -- When its last item was delivered (NULL: none yet).
    delivered_at INTEGER,
    PRIMARY KEY (name, bot_id)
);
