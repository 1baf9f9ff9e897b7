-- As PostgreSQL's 0010_participants_by_identity: the list's participant filter starts from
-- the agent's conversations.
CREATE INDEX participants_by_identity ON participants (bot_id, identity, conversation_id);
