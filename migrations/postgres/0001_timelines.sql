-- One row per conversation: the per-conversation seq counter (its row lock orders
-- concurrent appends), the summary columns the list queries filter on, and the folded
-- timeline they were computed from.
CREATE TABLE conversations (
    bot_id               text        NOT NULL,
    conversation_id      text        NOT NULL,
    last_seq             bigint      NOT NULL CHECK (last_seq >= 0),
    status               text        NOT NULL CHECK (status IN ('active', 'idle', 'ended')),
    experience           text,
    language             text,
    started_at           timestamptz NOT NULL,
    ended_at             timestamptz,
    last_event_at        timestamptz NOT NULL,
    event_count          bigint      NOT NULL DEFAULT 0,
    anomaly_count        bigint      NOT NULL DEFAULT 0,
    cold_transfers       bigint      NOT NULL DEFAULT 0,
    warm_transfers       bigint      NOT NULL DEFAULT 0,
    redial_transfers     bigint      NOT NULL DEFAULT 0,
    participants_present jsonb       NOT NULL DEFAULT '[]',
    timeline             jsonb,
    PRIMARY KEY (bot_id, conversation_id)
);

CREATE INDEX conversations_by_last_event
    ON conversations (bot_id, last_event_at DESC, conversation_id DESC);
CREATE INDEX conversations_by_status
    ON conversations (bot_id, status, last_event_at DESC, conversation_id DESC);
-- A `from`/`to` window (SPEC 4.3) is answered in three ordered parts (see
-- `list_conversations_pg`): ended conversations by `conversations_by_last_event`, open
-- ones by this small partial index, and those whose [started_at, last_event_at] spans
-- `to` by the GiST index below. LEAST keeps the range valid even if the clock stepped back.
CREATE INDEX conversations_open
    ON conversations (bot_id, last_event_at DESC, conversation_id DESC) WHERE ended_at IS NULL;
CREATE INDEX conversations_spanning
    ON conversations USING gist (tstzrange(LEAST(started_at, last_event_at), last_event_at, '(]'));

-- Every stored event: `payload` is the event object exactly as received (json keeps the
-- text), beside its normalised columns.
CREATE TABLE events (
    bot_id               text        NOT NULL,
    conversation_id      text        NOT NULL,
    seq                  bigint      NOT NULL CHECK (seq >= 1),
    received_at          timestamptz NOT NULL,
    name                 text        NOT NULL,
    transfer_type        text,
    transition           text,
    participant_identity text,
    participant          jsonb,
    anomalies            jsonb       NOT NULL DEFAULT '[]',
    transfer_data        json,
    payload              json        NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, seq),
    FOREIGN KEY (bot_id, conversation_id) REFERENCES conversations (bot_id, conversation_id)
);

CREATE INDEX events_with_transfer_data
    ON events (bot_id, conversation_id, seq DESC) WHERE transfer_data IS NOT NULL;

-- One row per stint, so an agent's history across conversations runs on an index.
CREATE TABLE stints (
    bot_id               text        NOT NULL,
    conversation_id      text        NOT NULL,
    identity             text        NOT NULL,
    ordinal              integer     NOT NULL,
    joined_at            timestamptz NOT NULL,
    left_at              timestamptz,
    entry_type           text        NOT NULL,
    exit_type            text,
    PRIMARY KEY (bot_id, conversation_id, identity, ordinal),
    FOREIGN KEY (bot_id, conversation_id) REFERENCES conversations (bot_id, conversation_id)
);

CREATE INDEX stints_by_participant
    ON stints (bot_id, identity, joined_at DESC, conversation_id DESC, ordinal DESC);
