-- SPEC 7: interactions from Bright Pattern, the Salesforce bot's escalations, and every
-- hand-over as a hop. Expand only: a replica of the release before keeps working.

ALTER TABLE conversations
    ADD COLUMN experience_from_events boolean NOT NULL DEFAULT false,
    ADD COLUMN escalated_transfers    bigint  NOT NULL DEFAULT 0,
    ADD COLUMN failed_transfers       bigint  NOT NULL DEFAULT 0,
    ADD COLUMN hop_count              bigint  NOT NULL DEFAULT 0,
    -- Who left the conversation empty, while it still is: a COLD entry's hop comes from them.
    ADD COLUMN last_emptied_by        text,
    -- Ordinals of the escalations still pending, oldest first.
    ADD COLUMN pending_escalations    jsonb   NOT NULL DEFAULT '[]',
    -- A completed escalation waiting for the agent who will enter.
    ADD COLUMN awaiting_agent         bigint,
    -- The merged InteractionData (with deliveredTo), and its service for the list filter.
    ADD COLUMN interaction            jsonb,
    ADD COLUMN service                text;

-- Every experience so far came from hooks events.
UPDATE conversations SET experience_from_events = true WHERE experience IS NOT NULL;

CREATE INDEX conversations_by_service
    ON conversations (bot_id, service, last_event_at DESC, conversation_id DESC)
    WHERE service IS NOT NULL;

-- One row per hand-over, in seq order. Conversations from before this migration have
-- hops only for the events that arrive after it.
CREATE TABLE hops (
    bot_id          text        NOT NULL,
    conversation_id text        NOT NULL,
    ordinal         bigint      NOT NULL CHECK (ordinal >= 0),
    seq             bigint      NOT NULL,
    at              timestamptz NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('COLD', 'WARM', 'REDIAL', 'ESCALATION')),
    from_identity   text,
    to_identity     text,
    outcome         text        NOT NULL CHECK (outcome IN ('completed', 'failed', 'pending')),
    reason          text,
    targets         jsonb,
    PRIMARY KEY (bot_id, conversation_id, ordinal),
    FOREIGN KEY (bot_id, conversation_id) REFERENCES conversations (bot_id, conversation_id)
);

-- Who is present longest, without reading everyone present: a stint carries its
-- participant's position (order of first entry) to break ties of joined_at.
ALTER TABLE stints ADD COLUMN position bigint NOT NULL DEFAULT 0;
UPDATE stints s SET position = p.position FROM participants p
    WHERE p.bot_id = s.bot_id AND p.conversation_id = s.conversation_id
      AND p.identity = s.identity;
CREATE INDEX stints_present_longest
    ON stints (bot_id, conversation_id, joined_at, position) WHERE left_at IS NULL;
