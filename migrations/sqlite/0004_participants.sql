-- An append reads and writes only what changes: the summary columns, the participants its
-- events name, and the stints they open or close. The whole-timeline snapshot goes.
-- (The same change as PostgreSQL's 0003_participants.)

CREATE TABLE participants (
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    identity        TEXT    NOT NULL,
    position        INTEGER NOT NULL CHECK (position >= 0),
    name            TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    stint_count     INTEGER NOT NULL CHECK (stint_count >= 0),
    -- The only index: every lookup names the identity, so none can scan a large
    -- conversation's participants by the (bot_id, conversation_id) prefix alone.
    PRIMARY KEY (bot_id, conversation_id, identity),
    FOREIGN KEY (bot_id, conversation_id) REFERENCES conversations (bot_id, conversation_id)
) WITHOUT ROWID;

INSERT INTO participants (bot_id, conversation_id, identity, position, name, kind, stint_count)
SELECT c.bot_id, c.conversation_id, json_extract(p.value, '$.identity'), p.key,
       json_extract(p.value, '$.name'), json_extract(p.value, '$.kind'),
       json_array_length(p.value, '$.stints')
FROM conversations c, json_each(c.timeline, '$.participants') AS p
WHERE c.timeline IS NOT NULL;

ALTER TABLE conversations ADD COLUMN present_count INTEGER NOT NULL DEFAULT 0
    CHECK (present_count >= 0);
ALTER TABLE conversations ADD COLUMN participant_count INTEGER NOT NULL DEFAULT 0
    CHECK (participant_count >= 0);

UPDATE conversations SET
    present_count = json_array_length(participants_present),
    participant_count = (SELECT count(*) FROM participants p
                         WHERE p.bot_id = conversations.bot_id
                           AND p.conversation_id = conversations.conversation_id);

ALTER TABLE conversations DROP COLUMN timeline;
ALTER TABLE conversations DROP COLUMN participants_present;

CREATE INDEX stints_open ON stints (bot_id, conversation_id, identity) WHERE left_at IS NULL;
