-- The audit log (SPEC 13): every read of conversation data, who made it and what they were
-- told. Times in BIGINT microseconds, as the stats and webhook tables keep theirs. Erasing
-- a conversation leaves its records: they hold its id, not its content.
CREATE TABLE audit_log (
    id              BIGSERIAL PRIMARY KEY,
    at              BIGINT NOT NULL,
    -- app:<appId> or user:<sub>
    actor           TEXT   NOT NULL,
    actor_name      TEXT,
    actor_email     TEXT,
    method          TEXT   NOT NULL,
    -- The route template, never the path with its values.
    route           TEXT   NOT NULL,
    status          BIGINT NOT NULL,
    bot_id          TEXT,
    conversation_id TEXT,
    participant     TEXT,
    client_address  TEXT
);

-- Pages newest first, over everything or filtered by conversation or actor.
CREATE INDEX audit_log_newest ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_by_conversation ON audit_log (conversation_id, at DESC, id DESC)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX audit_log_by_actor ON audit_log (actor, at DESC, id DESC);
