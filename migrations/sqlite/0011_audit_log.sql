-- The audit log (SPEC 13): the same table as the PostgreSQL store (see its 0013_audit_log.sql).
CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    actor           TEXT    NOT NULL,
    actor_name      TEXT,
    actor_email     TEXT,
    method          TEXT    NOT NULL,
    route           TEXT    NOT NULL,
    status          INTEGER NOT NULL,
    bot_id          TEXT,
    conversation_id TEXT,
    participant     TEXT,
    client_address  TEXT
);

CREATE INDEX audit_log_newest ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_by_conversation ON audit_log (conversation_id, at DESC, id DESC)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX audit_log_by_actor ON audit_log (actor, at DESC, id DESC);
