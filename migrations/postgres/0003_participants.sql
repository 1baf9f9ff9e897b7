-- An append reads and writes only what changes: the summary columns, the participants its
-- events name, and the stints they open or close. The whole-timeline snapshot goes.
--
-- The first release that tolerates newer migrations; stop replicas of earlier releases
-- before applying it (they refuse a newer schema anyway). From here on, migrations are
-- expand-then-contract.

-- One row per participant of a conversation, in order of first entry.
CREATE TABLE participants (
    bot_id          text    NOT NULL,
    conversation_id text    NOT NULL,
    identity        text    NOT NULL,
    position        bigint  NOT NULL CHECK (position >= 0),
    name            text    NOT NULL,
    kind            text    NOT NULL,
    stint_count     integer NOT NULL CHECK (stint_count >= 0),
    -- The only index: every lookup names the identity, so none can scan a large
    -- conversation's participants by the (bot_id, conversation_id) prefix alone.
    PRIMARY KEY (bot_id, conversation_id, identity),
    FOREIGN KEY (bot_id, conversation_id) REFERENCES conversations (bot_id, conversation_id)
);

INSERT INTO participants (bot_id, conversation_id, identity, position, name, kind, stint_count)
SELECT c.bot_id, c.conversation_id, p.value->>'identity', p.ordinality - 1,
       p.value->>'name', p.value->>'kind', jsonb_array_length(p.value->'stints')
FROM conversations c,
     jsonb_array_elements(c.timeline->'participants') WITH ORDINALITY AS p(value, ordinality)
WHERE c.timeline IS NOT NULL;

ALTER TABLE conversations
    ADD COLUMN present_count     bigint NOT NULL DEFAULT 0 CHECK (present_count >= 0),
    ADD COLUMN participant_count bigint NOT NULL DEFAULT 0 CHECK (participant_count >= 0);

UPDATE conversations c SET
    present_count = jsonb_array_length(c.participants_present),
    participant_count = (SELECT count(*) FROM participants p
                         WHERE p.bot_id = c.bot_id AND p.conversation_id = c.conversation_id);

ALTER TABLE conversations DROP COLUMN timeline, DROP COLUMN participants_present;

-- The open stints of a conversation: who is present, and what END_OF_CONVERSATION closes.
CREATE INDEX stints_open ON stints (bot_id, conversation_id, identity) WHERE left_at IS NULL;
