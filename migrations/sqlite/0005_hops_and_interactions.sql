-- SPEC 7: interactions from Bright Pattern, the Salesforce bot's escalations, and every
-- hand-over as a hop (the same change as PostgreSQL's 0004_hops_and_interactions).

ALTER TABLE conversations ADD COLUMN experience_from_events INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN escalated_transfers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN failed_transfers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN hop_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN last_emptied_by TEXT;
ALTER TABLE conversations ADD COLUMN pending_escalations TEXT NOT NULL DEFAULT '[]';
ALTER TABLE conversations ADD COLUMN awaiting_agent INTEGER;
ALTER TABLE conversations ADD COLUMN interaction TEXT;
ALTER TABLE conversations ADD COLUMN service TEXT;

UPDATE conversations SET experience_from_events = 1 WHERE experience IS NOT NULL;

CREATE INDEX conversations_by_service
    ON conversations (bot_id, service, last_event_at DESC, conversation_id DESC)
    WHERE service IS NOT NULL;

CREATE TABLE hops (
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    ordinal         INTEGER NOT NULL CHECK (ordinal >= 0),
    seq             INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('COLD', 'WARM', 'REDIAL', 'ESCALATION')),
    from_identity   TEXT,
    to_identity     TEXT,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('completed', 'failed', 'pending')),
    reason          TEXT,
    targets         TEXT,
    PRIMARY KEY (bot_id, conversation_id, ordinal),
    FOREIGN KEY (bot_id, conversation_id) REFERENCES conversations (bot_id, conversation_id)
) WITHOUT ROWID;

ALTER TABLE stints ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
UPDATE stints SET position = COALESCE((SELECT p.position FROM participants p
    WHERE p.bot_id = stints.bot_id AND p.conversation_id = stints.conversation_id
      AND p.identity = stints.identity), 0);
CREATE INDEX stints_present_longest
    ON stints (bot_id, conversation_id, joined_at, position) WHERE left_at IS NULL;
