-- Webhooks (SPEC 12): each configured endpoint's delivery state, and where it is in each
-- subscribed bot's change feed. Times are integer microseconds, positions the feed's JSON
-- (as stats_positions), so that both stores run the same SQL.

CREATE TABLE webhook_endpoints (
    name             TEXT    PRIMARY KEY,
    -- active | retrying | disabled
    state            TEXT    NOT NULL DEFAULT 'active',
    -- Where a bot's feed starts for this endpoint when it has no position yet.
    start_position   TEXT    NOT NULL,
    -- Bumped by `webhooks enable` and `webhooks replay`: a replica delivering an older
    -- generation stops and reads its positions again.
    generation       BIGINT  NOT NULL DEFAULT 0,
    -- The replica delivering it, until lease_until (one at a time).
    lease_owner      TEXT,
    lease_until      BIGINT  NOT NULL DEFAULT 0,
    -- Failed attempts of the item that has failed most since the last success.
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    last_attempt_at  BIGINT,
    last_error       TEXT,
    created_at       BIGINT  NOT NULL
);

CREATE TABLE webhook_positions (
    name        TEXT   NOT NULL REFERENCES webhook_endpoints (name) ON DELETE CASCADE,
    bot_id      TEXT   NOT NULL,
    position    TEXT   NOT NULL,
    -- When its last item was delivered (NULL: none yet).
    delivered_at BIGINT,
    PRIMARY KEY (name, bot_id)
);
