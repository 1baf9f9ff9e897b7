-- The same tables as the PostgreSQL store. Times are INTEGER microseconds since the Unix
-- epoch (UTC), so they sort and compare exactly; JSON columns are TEXT.
CREATE TABLE conversations (
    bot_id               TEXT    NOT NULL,
    conversation_id      TEXT    NOT NULL,
    last_seq             INTEGER NOT NULL CHECK (last_seq >= 0),
    status               TEXT    NOT NULL CHECK (status IN ('active', 'idle', 'ended')),
    experience           TEXT,
    language             TEXT,
    started_at           INTEGER NOT NULL,
    ended_at             INTEGER,
    last_event_at        INTEGER NOT NULL,
    event_count          INTEGER NOT NULL DEFAULT 0,
    anomaly_count        INTEGER NOT NULL DEFAULT 0,
    cold_transfers       INTEGER NOT NULL DEFAULT 0,
    warm_transfers       INTEGER NOT NULL DEFAULT 0,
    redial_transfers     INTEGER NOT NULL DEFAULT 0,
    participants_present TEXT    NOT NULL DEFAULT '[]',
    timeline             TEXT,
    PRIMARY KEY (bot_id, conversation_id)
) WITHOUT ROWID;

CREATE INDEX conversations_by_last_event
    ON conversations (bot_id, last_event_at DESC, conversation_id DESC);
CREATE INDEX conversations_by_status
    ON conversations (bot_id, status, last_event_at DESC, conversation_id DESC);

CREATE TABLE events (
    bot_id               TEXT    NOT NULL,
    conversation_id      TEXT    NOT NULL,
    seq                  INTEGER NOT NULL CHECK (seq >= 1),
    received_at          INTEGER NOT NULL,
    name                 TEXT    NOT NULL,
    transfer_type        TEXT,
    transition           TEXT,
    participant_identity TEXT,
    participant          TEXT,
    anomalies            TEXT    NOT NULL DEFAULT '[]',
    transfer_data        TEXT,
    payload              TEXT    NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, seq),
    FOREIGN KEY (bot_id, conversation_id) REFERENCES conversations (bot_id, conversation_id)
) WITHOUT ROWID;

CREATE TABLE stints (
    bot_id               TEXT    NOT NULL,
    conversation_id      TEXT    NOT NULL,
    identity             TEXT    NOT NULL,
    ordinal              INTEGER NOT NULL,
    joined_at            INTEGER NOT NULL,
    left_at              INTEGER,
    entry_type           TEXT    NOT NULL,
    exit_type            TEXT,
    PRIMARY KEY (bot_id, conversation_id, identity, ordinal),
    FOREIGN KEY (bot_id, conversation_id) REFERENCES conversations (bot_id, conversation_id)
) WITHOUT ROWID;

CREATE INDEX stints_by_participant
    ON stints (bot_id, identity, joined_at DESC, conversation_id DESC, ordinal DESC);

CREATE INDEX events_with_transfer_data
    ON events (bot_id, conversation_id, seq DESC) WHERE transfer_data IS NOT NULL;
