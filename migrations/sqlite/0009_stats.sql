-- Operations metrics (SPEC 11): the same tables as the PostgreSQL store (see its
-- 0011_stats.sql), times in INTEGER microseconds.

-- Where the worker is in each bot's feed, and when it last had counted all of it.
CREATE TABLE stats_positions (
    bot_id        TEXT   PRIMARY KEY,
    position      TEXT   NOT NULL,
    counted       INTEGER NOT NULL DEFAULT 0,
    caught_up_at  INTEGER,
    updated_at    INTEGER NOT NULL
);

-- What the facts of a 15-minute slot add up to, per grouping (cuboid) and group (key: the
-- JSON of the group's dimensions). No conversation id, payload or customer data.
CREATE TABLE stats_slots (
    bot_id  TEXT     NOT NULL,
    cuboid  INTEGER NOT NULL,
    slot    INTEGER   NOT NULL,
    key     TEXT     NOT NULL,
    tally   TEXT     NOT NULL,
    PRIMARY KEY (bot_id, cuboid, slot, key)
);

-- Stint closes per slot, grouping of the conversation's dimensions and the slot of the
-- conversation's previous close: a conversation is handled in a bucket at its first close
-- there.
CREATE TABLE stats_handled (
    bot_id         TEXT     NOT NULL,
    grouping       INTEGER NOT NULL,
    slot           INTEGER   NOT NULL,
    key            TEXT     NOT NULL,
    previous_slot  INTEGER   NOT NULL,
    count          INTEGER   NOT NULL,
    PRIMARY KEY (bot_id, grouping, slot, key, previous_slot)
);

-- Every fact, for the edges of a range that starts or ends between two slots: those a
-- page of the feed brought for a slot, as one JSON array (a long, repetitive document, which
-- PostgreSQL stores compressed).
CREATE TABLE stats_facts (
    bot_id  TEXT NOT NULL,
    slot    INTEGER NOT NULL,
    facts   TEXT NOT NULL
);
CREATE INDEX stats_facts_by_slot ON stats_facts (bot_id, slot);

-- The worker's state of each conversation (its fold), and what is happening now (SPEC
-- 11.2): open stints with their queue, and conversations not ended. These name
-- conversations; erasure and retention delete them with the conversation.
CREATE TABLE stats_conversations (
    bot_id           TEXT NOT NULL,
    conversation_id  TEXT NOT NULL,
    state            TEXT NOT NULL,
    PRIMARY KEY (bot_id, conversation_id)
);

CREATE TABLE stats_present (
    bot_id           TEXT   NOT NULL,
    conversation_id  TEXT   NOT NULL,
    identity         TEXT   NOT NULL,
    queue            TEXT,
    joined_at        INTEGER NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, identity)
);
CREATE INDEX stats_present_longest ON stats_present (bot_id, joined_at);

CREATE TABLE stats_open_conversations (
    bot_id           TEXT   NOT NULL,
    conversation_id  TEXT   NOT NULL,
    status           TEXT   NOT NULL CHECK (status IN ('active', 'idle')),
    since            INTEGER NOT NULL,
    PRIMARY KEY (bot_id, conversation_id)
);
CREATE INDEX stats_open_conversations_by_status
    ON stats_open_conversations (bot_id, status, since);
