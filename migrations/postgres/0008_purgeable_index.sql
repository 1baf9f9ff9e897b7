-- no-transaction
-- Retention (SPEC 10) looks for the conversations nobody is in, oldest activity first.
-- Built without blocking the replicas that keep appending during a rolling deploy; alone in
-- its file, as CONCURRENTLY cannot run in a transaction.
CREATE INDEX CONCURRENTLY IF NOT EXISTS conversations_purgeable
    ON conversations (last_event_at) WHERE status <> 'active';
