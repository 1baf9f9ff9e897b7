-- Operations metrics (SPEC 11), kept by the stats worker as it follows each bot's change
-- feed: its position, written in the same transaction as what it counted, so that every
-- event is counted exactly once across restarts and replicas. Times are bigint
-- microseconds since the Unix epoch, as in the SQLite store, so both stores read alike.

-- Where the worker is in each bot's feed, and when it last had counted all of it.
CREATE TABLE stats_positions (
    bot_id        text   PRIMARY KEY,
    position      text   NOT NULL,
    counted       bigint NOT NULL DEFAULT 0,
    caught_up_at  bigint,
    updated_at    bigint NOT NULL
);

-- What the facts of a 15-minute slot add up to, per grouping (cuboid) and group (key: the
-- JSON of the group's dimensions). No conversation id, payload or customer data.
CREATE TABLE stats_slots (
    bot_id  text     NOT NULL,
    cuboid  smallint NOT NULL,
    slot    bigint   NOT NULL,
    key     text     NOT NULL,
    tally   text     NOT NULL,
    PRIMARY KEY (bot_id, cuboid, slot, key)
);

-- Stint closes per slot, grouping of the conversation's dimensions and the slot of the
-- conversation's previous close: a conversation is handled in a bucket at its first close
-- there.
CREATE TABLE stats_handled (
    bot_id         text     NOT NULL,
    grouping       smallint NOT NULL,
    slot           bigint   NOT NULL,
    key            text     NOT NULL,
    previous_slot  bigint   NOT NULL,
    count          bigint   NOT NULL,
    PRIMARY KEY (bot_id, grouping, slot, key, previous_slot)
);

-- Every fact, for the edges of a range that starts or ends between two slots: those a
-- page of the feed brought for a slot, as one JSON array (a long, repetitive document, which
-- PostgreSQL stores compressed).
CREATE TABLE stats_facts (
    bot_id  text NOT NULL,
    slot    bigint NOT NULL,
    facts   text NOT NULL
);
CREATE INDEX stats_facts_by_slot ON stats_facts (bot_id, slot);
-- LZ4 compresses these documents several times faster than the default, where the server
-- has it (PostgreSQL 14 and later, built with lz4, as the common distributions are).
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 AND EXISTS (
        SELECT 1 FROM pg_settings
        WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals))
    THEN
        ALTER TABLE stats_facts ALTER COLUMN facts SET COMPRESSION lz4;
    END IF;
END $$;

-- The worker's state of each conversation (its fold), and what is happening now (SPEC
-- 11.2): open stints with their queue, and conversations not ended. These name
-- conversations; erasure and retention delete them with the conversation.
CREATE TABLE stats_conversations (
    bot_id           text NOT NULL,
    conversation_id  text NOT NULL,
    state            text NOT NULL,
    PRIMARY KEY (bot_id, conversation_id)
);

CREATE TABLE stats_present (
    bot_id           text   NOT NULL,
    conversation_id  text   NOT NULL,
    identity         text   NOT NULL,
    queue            text,
    joined_at        bigint NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, identity)
);
CREATE INDEX stats_present_longest ON stats_present (bot_id, joined_at);

CREATE TABLE stats_open_conversations (
    bot_id           text   NOT NULL,
    conversation_id  text   NOT NULL,
    status           text   NOT NULL CHECK (status IN ('active', 'idle')),
    since            bigint NOT NULL,
    PRIMARY KEY (bot_id, conversation_id)
);
CREATE INDEX stats_open_conversations_by_status
    ON stats_open_conversations (bot_id, status, since);
