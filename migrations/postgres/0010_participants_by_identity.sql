-- no-transaction
-- The list's participant filter (SPEC 4.3) starts from the agent's conversations, not from
-- the bot's newest conversations probed one by one: at a million conversations, 336 ms
-- became a few (docs/queries.md). Built without blocking ingest during a rolling deploy.
CREATE INDEX CONCURRENTLY IF NOT EXISTS participants_by_identity
    ON participants (bot_id, identity, conversation_id);
