#!/usr/bin/env bash
# EXPLAIN (ANALYZE, BUFFERS) of the query API's list and stint queries on a scratch
# database seeded with 100,000 conversations by default (CONVERSATIONS=1000000 for a
# million; three participants and stints each, over 2,000 agents, 30 days). The SQL is the shape src/store/postgres.rs builds, binds written as literals.
#
#   bench/explain.sh                      # uses postgres://postgres@127.0.0.1:5432/postgres
#   ADMIN_URL=postgres://me@db:5432/postgres EXPLAIN_DB=scratch bench/explain.sh
#
# The scratch database is dropped and created again on every run.
set -euo pipefail

ADMIN_URL=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
EXPLAIN_DB=${EXPLAIN_DB:-hooks_explain}
CONVERSATIONS=${CONVERSATIONS:-100000}
# "Now" for the seed and the queries: fixed, so that every run prints the same plans.
NOW=${NOW:-2026-03-31T12:00:00Z}

if [[ ! $EXPLAIN_DB =~ ^[a-z_][a-z0-9_]*$ ]]; then
    echo "EXPLAIN_DB must be a plain lower-case identifier" >&2
    exit 2
fi

cd "$(dirname "$0")/.."
admin_base=${ADMIN_URL%%\?*}
db_url="${admin_base%/*}/${EXPLAIN_DB}"

psql_admin() { psql "$ADMIN_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_db() { psql "$db_url" -X -q -v ON_ERROR_STOP=1 "$@"; }

echo "== scratch database ${EXPLAIN_DB}"
psql_admin -c "DROP DATABASE IF EXISTS ${EXPLAIN_DB}" -c "CREATE DATABASE ${EXPLAIN_DB}"

for migration in migrations/postgres/*.sql; do
    echo "== applying ${migration}"
    psql_db -f "$migration"
done

echo "== seeding ${CONVERSATIONS} conversations"
psql_db -v now="$NOW" -v conversations="$CONVERSATIONS" <<'SQL'
DO $$ BEGIN PERFORM setseed(0.4242); END $$;

-- One row per conversation: when it started, how long it lasted, its fate and the
-- first of its three agents. 90% ended, 5% idle (between a cold exit and the next
-- entry), 5% still active; open ones started in the last two days.
CREATE TEMP TABLE seed AS
SELECT i,
       'c-' || lpad(i::text, 7, '0') AS conversation_id,
       CASE WHEN i % 20 = 0 THEN 'active' WHEN i % 20 = 1 THEN 'idle' ELSE 'ended' END AS status,
       -- At most 41 minutes long, so nothing happens after "now".
       :'now'::timestamptz - interval '41 minutes'
           - random() * CASE WHEN i % 20 < 2 THEN interval '2 days' ELSE interval '30 days' END
           AS started_at,
       interval '1 minute' + random() * interval '40 minutes' AS duration,
       floor(random() * 2000)::int AS first_agent,
       (ARRAY['voice', 'chat', 'email'])[1 + i % 3] AS experience
FROM generate_series(1, :conversations) AS i;

-- Three stints: NA entry, two cold transfers; agents 677 apart so never the same twice.
CREATE TEMP TABLE seed_stints AS
SELECT s.i, s.conversation_id, s.status, k AS position,
       'agent-' || lpad(((s.first_agent + k * 677) % 2000)::text, 4, '0') AS identity,
       s.started_at + s.duration * k / 3 AS joined_at,
       CASE
           WHEN k = 2 AND s.status = 'active' THEN NULL
           WHEN k = 2 AND s.status = 'idle' THEN s.started_at + s.duration * 5 / 6
           ELSE s.started_at + s.duration * (k + 1) / 3
       END AS left_at,
       CASE k WHEN 0 THEN 'NA' ELSE 'COLD' END AS entry_type,
       CASE
           WHEN k = 2 AND s.status = 'active' THEN NULL
           WHEN k = 2 AND s.status = 'ended' THEN 'NA'
           ELSE 'COLD'
       END AS exit_type
FROM seed s, generate_series(0, 2) AS k;
CREATE INDEX ON seed_stints (i, position);
ANALYZE seed, seed_stints;

INSERT INTO conversations (bot_id, conversation_id, last_seq, status, experience, language,
                           started_at, ended_at, last_event_at, event_count, anomaly_count,
                           cold_transfers, warm_transfers, redial_transfers, present_count,
                           participant_count, hop_count)
SELECT bot.id, s.conversation_id, events.n, s.status, s.experience, 'en',
       s.started_at,
       CASE WHEN s.status = 'ended' THEN s.started_at + s.duration END,
       CASE s.status
           WHEN 'ended' THEN s.started_at + s.duration
           WHEN 'idle' THEN s.started_at + s.duration * 5 / 6
           ELSE s.started_at + s.duration * 2 / 3
       END,
       events.n, 0, 2, 0, 0, CASE WHEN s.status = 'active' THEN 1 ELSE 0 END, 3, 2
FROM seed s
-- A second bot with a tenth as many conversations, so that bot_id is not a constant.
JOIN (VALUES ('st-1234', 1, 0), ('st-9999', 10, 7)) AS bot (id, every, rest) ON s.i % bot.every = bot.rest
CROSS JOIN LATERAL (SELECT CASE s.status WHEN 'ended' THEN 6 WHEN 'idle' THEN 5 ELSE 4 END AS n) AS events
-- Rows arrive in time order, as the first event of each conversation creates its row.
ORDER BY s.started_at;

INSERT INTO participants (bot_id, conversation_id, identity, position, name, kind, stint_count)
SELECT 'st-1234', conversation_id, identity, position, 'Name of ' || identity, 'agent', 1
FROM seed_stints
ORDER BY joined_at;

INSERT INTO stints (bot_id, conversation_id, identity, ordinal, joined_at, left_at,
                    entry_type, exit_type, position)
SELECT 'st-1234', conversation_id, identity, 0, joined_at, left_at, entry_type, exit_type,
       position
FROM seed_stints
ORDER BY joined_at;
SQL

psql_db -c "VACUUM ANALYZE"
psql_db -c "SELECT bot_id, status, count(*) FROM conversations GROUP BY 1, 2 ORDER BY 1, 2" \
    -c "SELECT count(*) AS stints, count(DISTINCT identity) AS agents FROM stints"

explain() {
    local title=$1 sql=$2
    echo
    echo "== ${title}"
    echo "${sql}"
    psql_db -c "EXPLAIN (ANALYZE, BUFFERS) ${sql}"
}

# The statements src/store/sql.rs builds (list_conversations_pg, list_stints), with each
# bind written as a literal of the type sqlx binds it as.
bot="'st-1234'"
now="'${NOW}'::timestamptz"
columns="c.bot_id, c.conversation_id, c.last_seq, c.status, c.experience, c.language,
    c.started_at, c.ended_at, c.last_event_at, c.event_count, c.anomaly_count,
    c.cold_transfers, c.warm_transfers, c.redial_transfers, c.present_count,
    c.participant_count, c.experience_from_events, c.escalated_transfers,
    c.failed_transfers, c.hop_count, c.last_emptied_by,
    CAST(c.pending_escalations AS TEXT) AS pending_escalations, c.awaiting_agent, c.service,
    CAST(c.interaction AS TEXT) AS interaction"
newest="ORDER BY c.last_event_at DESC, c.conversation_id DESC LIMIT 51"
select="SELECT ${columns} FROM conversations c WHERE c.bot_id = ${bot}"

# list_conversations_pg with a from/to window: three ordered parts, merged.
window() {
    local from="'$1'::timestamptz" to="'$2'::timestamptz"
    local kept="${select} AND COALESCE(c.ended_at, ${now}) >= ${from} AND c.started_at < ${to}"
    echo "WITH spanning AS MATERIALIZED (${kept} AND tstzrange(LEAST(c.started_at, c.last_event_at), c.last_event_at, '(]') @> ${to}) SELECT * FROM ((SELECT * FROM spanning c ${newest}) UNION ALL (${kept} AND c.ended_at IS NOT NULL AND c.last_event_at >= ${from} AND c.last_event_at < ${to} ${newest}) UNION ALL (${kept} AND c.ended_at IS NULL AND c.last_event_at < ${to} ${newest})) c ${newest}"
}

# Where page 41 (of 50 each) starts: the keyset cursor of item 2,000.
cursor=$(psql_db -At -F '|' -c "SELECT last_event_at, conversation_id FROM conversations
    WHERE bot_id = 'st-1234' ORDER BY last_event_at DESC, conversation_id DESC OFFSET 1999 LIMIT 1")
cursor_at="'${cursor%|*}'::timestamptz" cursor_id="'${cursor#*|}'"

explain "(a) list by participant: ?participant=agent-0042" \
    "${select} AND EXISTS (SELECT 1 FROM participants p WHERE p.bot_id = c.bot_id AND p.conversation_id = c.conversation_id AND p.identity = 'agent-0042') ${newest}"

echo
echo "== (a2) as (a), a generic plan of the prepared statement (as the service plans it)"
psql_db -c "SET plan_cache_mode = force_generic_plan" \
    -c "PREPARE by_participant (text, text, bigint) AS SELECT ${columns} FROM conversations c WHERE c.bot_id = \$1 AND EXISTS (SELECT 1 FROM participants p WHERE p.bot_id = c.bot_id AND p.conversation_id = c.conversation_id AND p.identity = \$2) ORDER BY c.last_event_at DESC, c.conversation_id DESC LIMIT \$3" \
    -c "EXPLAIN (ANALYZE, BUFFERS) EXECUTE by_participant('st-1234', 'agent-0042', 51)"

explain "(b) list by time window, one day two weeks back: ?from=2026-03-16T00:00:00Z&to=2026-03-17T00:00:00Z" \
    "$(window 2026-03-16T00:00:00Z 2026-03-17T00:00:00Z)"

explain "(b1) for comparison, (b) as one ordered scan: the portable list_conversations" \
    "${select} AND COALESCE(c.ended_at, ${now}) >= '2026-03-16T00:00:00Z'::timestamptz AND c.started_at < '2026-03-17T00:00:00Z'::timestamptz ${newest}"

explain "(b2) list by time window, the last seven days: ?from=2026-03-24T12:00:00Z&to=${NOW}" \
    "$(window 2026-03-24T12:00:00Z "${NOW}")"

# The same statement as the service sends it: a prepared statement with 20 binds, planned
# generically (as PostgreSQL may after five executions), so no plan depends on the values.
generic_window() {
    local kept1="SELECT ${columns} FROM conversations c WHERE c.bot_id = \$1 AND COALESCE(c.ended_at, \$2) >= \$3 AND c.started_at < \$4"
    local kept2="SELECT ${columns} FROM conversations c WHERE c.bot_id = \$7 AND COALESCE(c.ended_at, \$8) >= \$9 AND c.started_at < \$10"
    local kept3="SELECT ${columns} FROM conversations c WHERE c.bot_id = \$14 AND COALESCE(c.ended_at, \$15) >= \$16 AND c.started_at < \$17"
    local order="ORDER BY c.last_event_at DESC, c.conversation_id DESC LIMIT"
    echo "PREPARE list_window (text, timestamptz, timestamptz, timestamptz, timestamptz, bigint, text, timestamptz, timestamptz, timestamptz, timestamptz, timestamptz, bigint, text, timestamptz, timestamptz, timestamptz, timestamptz, bigint, bigint) AS WITH spanning AS MATERIALIZED (${kept1} AND tstzrange(LEAST(c.started_at, c.last_event_at), c.last_event_at, '(]') @> \$5) SELECT * FROM ((SELECT * FROM spanning c ${order} \$6) UNION ALL (${kept2} AND c.ended_at IS NOT NULL AND c.last_event_at >= \$11 AND c.last_event_at < \$12 ${order} \$13) UNION ALL (${kept3} AND c.ended_at IS NULL AND c.last_event_at < \$18 ${order} \$19)) c ${order} \$20"
}
generic_args() {
    local bot=$1 now=$2 from=$3 to=$4 limit=$5
    echo "'${bot}', '${now}', '${from}', '${to}', '${to}', ${limit}, '${bot}', '${now}', '${from}', '${to}', '${from}', '${to}', ${limit}, '${bot}', '${now}', '${from}', '${to}', '${to}', ${limit}, ${limit}"
}
echo
echo "== (b3) as (b), a generic plan of the prepared statement"
generic_window
psql_db -c "SET plan_cache_mode = force_generic_plan" -c "$(generic_window)" \
    -c "EXPLAIN (ANALYZE, BUFFERS) EXECUTE list_window($(generic_args st-1234 "$NOW" 2026-03-16T00:00:00Z 2026-03-17T00:00:00Z 51))"

explain "(c) first page without filters" \
    "${select} ${newest}"

explain "(c2) page 41 without filters: ?cursor=… (after ${cursor})" \
    "${select} AND (c.last_event_at, c.conversation_id) < (${cursor_at}, ${cursor_id}) ${newest}"

explain "(d) an agent's stints: /participants/agent-0042/stints" \
    "SELECT conversation_id, ordinal, joined_at, left_at, entry_type, exit_type
         FROM stints WHERE bot_id = ${bot} AND identity = 'agent-0042' ORDER BY joined_at DESC, conversation_id DESC, ordinal DESC LIMIT 51"

explain "(d2) an agent's stints in a window: /participants/agent-0042/stints?from=2026-03-16T00:00:00Z&to=2026-03-23T00:00:00Z" \
    "SELECT conversation_id, ordinal, joined_at, left_at, entry_type, exit_type
         FROM stints WHERE bot_id = ${bot} AND identity = 'agent-0042' AND joined_at < '2026-03-23T00:00:00Z'::timestamptz AND COALESCE(left_at, ${now}) >= '2026-03-16T00:00:00Z'::timestamptz ORDER BY joined_at DESC, conversation_id DESC, ordinal DESC LIMIT 51"
