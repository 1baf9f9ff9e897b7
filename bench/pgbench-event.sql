-- pgbench script for bench/run.sh: the durable writes of one ingested event, as one
-- hand-written transaction would do them on the service's own schema.
--
--   pgbench -n -M prepared -c N -j 2 -T D -D k=0 -D slots=125 -D tag=run16 -D payload=...
--           -D participant=... -f bench/pgbench-event.sql
--
-- Per event, like the service: create or lock the conversation row, take the next seq
-- and write the summary columns (one new row version), insert the event row with its
-- payload, then, for an entry, write the participant row and open a stint, or, for an
-- exit, close one. As in bench/ingest.lua,
-- 2000 conversations are in progress at any time (each client cycles through `slots` of
-- them: 2000 / clients), each taken through six steps (NA entry, COLD exit, COLD entry,
-- WARM entry, WARM exit, NA exit), one step per transaction, then replaced by a fresh
-- one. JSON values are bound parameters, parsed on every execution as the service's are.

\set slot :k % :slots
\set round :k / :slots
\set step :round % 6
\set generation :round / 6
\set role case when :step <= 1 then 0 when :step = 3 or :step = 4 then 2 else 1 end
\set agent (:client_id * 7919 + :slot * 31 + :generation * 17 + :role * 613) % 2000
\set k :k + 1

BEGIN;

INSERT INTO conversations AS c
    (bot_id, conversation_id, last_seq, status, experience, language, started_at, ended_at,
     last_event_at, event_count, anomaly_count, cold_transfers, warm_transfers,
     redial_transfers, present_count, participant_count)
VALUES ('st-bench', 'pgbench-' || :tag || '-' || :client_id || '-' || :slot || '-' || :generation, 1,
        CASE :step::int WHEN 1 THEN 'idle' WHEN 5 THEN 'ended' ELSE 'active' END,
        'voice', 'en', now(), CASE :step::int WHEN 5 THEN now() END, now(), 1, 0,
        CASE WHEN :step::int >= 2 THEN 1 ELSE 0 END, CASE WHEN :step::int >= 3 THEN 1 ELSE 0 END, 0,
        CASE :step::int WHEN 1 THEN 0 WHEN 3 THEN 2 WHEN 5 THEN 0 ELSE 1 END,
        CASE WHEN :step::int <= 1 THEN 1 WHEN :step::int = 2 THEN 2 ELSE 3 END)
ON CONFLICT (bot_id, conversation_id) DO UPDATE SET
    last_seq = c.last_seq + 1, status = EXCLUDED.status, ended_at = EXCLUDED.ended_at,
    last_event_at = EXCLUDED.last_event_at, event_count = c.event_count + 1,
    cold_transfers = EXCLUDED.cold_transfers, warm_transfers = EXCLUDED.warm_transfers,
    present_count = EXCLUDED.present_count, participant_count = EXCLUDED.participant_count
RETURNING c.last_seq AS seq \gset

INSERT INTO events (bot_id, conversation_id, seq, received_at, name, transfer_type,
    transition, participant_identity, participant, anomalies, transfer_data, payload)
VALUES ('st-bench', 'pgbench-' || :tag || '-' || :client_id || '-' || :slot || '-' || :generation, :seq::bigint, now(),
        'INTERNAL_TRANSFER_EVENT',
        CASE WHEN :step::int IN (0, 5) THEN 'NA' WHEN :step::int IN (1, 2) THEN 'COLD' ELSE 'WARM' END,
        CASE WHEN :step::int IN (0, 2, 3) THEN 'entry' ELSE 'exit' END,
        'agent-' || :agent, :participant::jsonb, '[]', NULL, :payload::json);

\if :step = 0 or :step = 2 or :step = 3
INSERT INTO participants (bot_id, conversation_id, identity, position, name, kind, stint_count)
VALUES ('st-bench', 'pgbench-' || :tag || '-' || :client_id || '-' || :slot || '-' || :generation, 'agent-' || :agent,
        CASE :step::int WHEN 0 THEN 0 WHEN 2 THEN 1 ELSE 2 END, 'Agent ' || :agent, 'agent', 1)
ON CONFLICT (bot_id, conversation_id, identity) DO UPDATE SET
    name = EXCLUDED.name, kind = EXCLUDED.kind, stint_count = EXCLUDED.stint_count;
INSERT INTO stints (bot_id, conversation_id, identity, ordinal, joined_at, left_at,
    entry_type, exit_type)
VALUES ('st-bench', 'pgbench-' || :tag || '-' || :client_id || '-' || :slot || '-' || :generation, 'agent-' || :agent, 0, now(),
        NULL, CASE :step::int WHEN 0 THEN 'NA' WHEN 2 THEN 'COLD' ELSE 'WARM' END, NULL);
\else
UPDATE stints SET left_at = now(),
    exit_type = CASE :step::int WHEN 1 THEN 'COLD' WHEN 4 THEN 'WARM' ELSE 'NA' END
WHERE bot_id = 'st-bench' AND conversation_id = 'pgbench-' || :tag || '-' || :client_id || '-' || :slot || '-' || :generation
  AND identity = 'agent-' || :agent AND ordinal = 0;
\endif

COMMIT;
