#!/usr/bin/env bash
# Operations metrics at scale (SPEC 11): a scratch PostgreSQL database seeded with
# CONVERSATIONS conversations (default 1,000,000) of five events each over 30 days, the
# release binary's stats worker counting all of them from the start of the feed, then the
# stats queries timed over HTTP.
#
#   bench/stats.sh                            # postgres://postgres@127.0.0.1:5432
#   CONVERSATIONS=100000 bench/stats.sh       # a smaller run
#   BINARY=/tmp/agentassist-hooks bench/stats.sh
#   KEEP_DATABASE=1 bench/stats.sh            # count on in the database of an earlier run
#
# Needs: cargo, psql, curl, python3. Drops and creates the database hooks_stats. Prints the
# worker's rate (events counted per second, from the first to the last), the size of the
# stats tables, and the median and p95 of each query over RUNS runs.
set -euo pipefail

ADMIN_URL=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
CONVERSATIONS=${CONVERSATIONS:-1000000}
AGENTS=${AGENTS:-40}
QUEUES=${QUEUES:-6}
RUNS=${RUNS:-20}
DB=hooks_stats
BOT=st-bench
# The seed's 30 days end here, so that the queries' ranges are fixed.
NOW=2026-11-30T00:00:00Z

cd "$(dirname "$0")/.."
admin_base=${ADMIN_URL%%\?*}
db_url="${admin_base%/*}/${DB}"
work=$(mktemp -d)
service_pid=
vacuum_pid=
cleanup() {
    if [[ -n $vacuum_pid ]]; then
        kill "$vacuum_pid" 2>/dev/null || true
    fi
    if [[ -n $service_pid ]] && kill -0 "$service_pid" 2>/dev/null; then
        kill "$service_pid" 2>/dev/null || true
        wait "$service_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
psql_q() { psql "$1" -X -q -v ON_ERROR_STOP=1 -At "${@:2}"; }

if [[ -n ${BINARY:-} ]]; then
    binary=$BINARY
else
    cargo build --release --locked --bin agentassist-hooks >/dev/null
    binary=target/release/agentassist-hooks
fi

echo "== machine"
echo "cpus: $(nproc); postgres: $(psql_q "$ADMIN_URL" -c 'SHOW server_version'), shared_buffers=$(psql_q "$ADMIN_URL" -c 'SHOW shared_buffers')"

events=$((CONVERSATIONS * 5))
if [[ -n ${KEEP_DATABASE:-} ]]; then
    echo "== database ${DB} as an earlier run left it"
else
echo "== database ${DB}: ${CONVERSATIONS} conversations over 30 days"
psql_q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" -c "CREATE DATABASE ${DB}"
DATABASE_URL="$db_url" "$binary" migrate >/dev/null
# The feed lists an event once no running transaction's id is below its feed_txn: the
# seed's feed transactions (ten events each, in time order) must be old ones.
needed=$((events / 10 + 1))
current=$(psql_q "$db_url" -c "SELECT txid_current()")
if ((current <= needed)); then
    echo "burning $((needed - current)) transaction ids so that the seed's are in the past"
    psql_q "$db_url" -c "DO \$\$ BEGIN FOR i IN 1..$((needed - current + 1)) LOOP PERFORM txid_current(); COMMIT; END LOOP; END \$\$" ||
        pgbench -n -t $((needed - current + 1)) -f <(echo 'SELECT txid_current();') "$db_url" >/dev/null
fi
started=$SECONDS
psql_q "$db_url" -v conversations="$CONVERSATIONS" -v agents="$AGENTS" -v queues="$QUEUES" \
    -v now="$NOW" -v bot="$BOT" <<'SQL'
SELECT setseed(0.4242);
-- One row per conversation: when it started, its agents and queues, cold or warm.
CREATE TEMP TABLE seed AS
SELECT i, 'c-' || lpad(i::text, 7, '0') AS conversation_id,
       :'now'::timestamptz - interval '45 minutes' - random() * interval '30 days' AS t0,
       floor(random() * :agents)::int AS a, floor(random() * :queues)::int AS qa,
       floor(random() * :agents)::int AS b, floor(random() * :queues)::int AS qb,
       (ARRAY['voice', 'chat', 'email'])[1 + i % 3] AS experience,
       i % 3 = 0 AS warm
FROM generate_series(1, :conversations) AS i;

-- Five events: NA entry of A; then COLD exit of A and COLD entry of B, or WARM entry and
-- exit of B; NA exit of the one left; END_OF_CONVERSATION. Minutes apart, in order.
CREATE TEMP TABLE seed_events AS
SELECT s.conversation_id, e.seq,
       s.t0 + e.seq * interval '4 minutes' + random() * interval '3 minutes 59 seconds' AS at,
       e.name, e.kind, e.transition, e.agent, e.queue, s.experience
FROM seed s,
LATERAL (VALUES
    (1, 'INTERNAL_TRANSFER_EVENT', 'NA', 'entry', s.a, s.qa),
    (2, 'INTERNAL_TRANSFER_EVENT', CASE WHEN s.warm THEN 'WARM' ELSE 'COLD' END,
        CASE WHEN s.warm THEN 'entry' ELSE 'exit' END, CASE WHEN s.warm THEN s.b ELSE s.a END,
        CASE WHEN s.warm THEN s.qb ELSE s.qa END),
    (3, 'INTERNAL_TRANSFER_EVENT', CASE WHEN s.warm THEN 'WARM' ELSE 'COLD' END,
        CASE WHEN s.warm THEN 'exit' ELSE 'entry' END, s.b, s.qb),
    (4, 'INTERNAL_TRANSFER_EVENT', 'NA', 'exit', CASE WHEN s.warm THEN s.a ELSE s.b END,
        CASE WHEN s.warm THEN s.qa ELSE s.qb END),
    (5, 'END_OF_CONVERSATION', NULL, NULL, NULL, NULL)
) AS e(seq, name, kind, transition, agent, queue);

INSERT INTO conversations (bot_id, conversation_id, last_seq, status, experience, started_at,
                           ended_at, last_event_at, event_count)
SELECT :'bot', conversation_id, 5, 'ended', experience, min(at), max(at), max(at), 5
FROM seed_events GROUP BY conversation_id, experience;

INSERT INTO events (bot_id, conversation_id, seq, received_at, name, transfer_type, transition,
                    participant_identity, participant, payload, status_after, feed_txn)
SELECT :'bot', conversation_id, seq, at, name, kind, lower(transition),
       CASE WHEN agent IS NOT NULL THEN 'agent-' || agent END,
       CASE WHEN agent IS NOT NULL THEN jsonb_build_object('identity', 'agent-' || agent,
            'name', 'Agent ' || agent, 'type', 'agent') END,
       CASE WHEN name = 'END_OF_CONVERSATION' THEN json_build_object('name', name)
            ELSE json_build_object('name', name, 'transfertype', kind, 'transition', transition,
                'isExtAD', 'true', 'experience', experience, 'language', 'en',
                'participant', json_build_object('identity', 'agent-' || agent,
                    'name', 'Agent ' || agent, 'type', 'agent',
                    'customFields', json_build_object('queueName', 'Queue ' || queue))) END,
       CASE WHEN seq = 5 THEN 'ended' END,
       (row_number() OVER (ORDER BY at, conversation_id, seq)) / 10
FROM seed_events;
ANALYZE;
SQL
echo "seeded $(psql_q "$db_url" -c "SELECT count(*) FROM events") events in $((SECONDS - started)) s"
fi

echo "== the stats worker counts them"
secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
cat >"$work/config.toml" <<EOF
[server]
bind = "127.0.0.1:0"
[log]
format = "json"
filter = "warn,agentassist_hooks::startup=info"
[[apps]]
app_id = "bench"
secret = "$secret"
bots = ["*"]
permissions = ["read"]
EOF
env -u RUST_LOG DATABASE_URL="$db_url" "$binary" --config "$work/config.toml" serve \
    >"$work/service.log" 2>&1 &
service_pid=$!
address=
until [[ -n $address ]]; do
    sleep 0.2
    address=$(grep -o '"address":"[^"]*"' "$work/service.log" | head -n 1 | cut -d '"' -f 4 || true)
done
counting_started=$SECONDS
counted_before=$(psql_q "$db_url" -c "SELECT coalesce(sum(counted), 0) FROM stats_positions")
# This machine's PostgreSQL runs with autovacuum off (CI's setting); a production one
# would vacuum the worker's tables as they churn, so the bench does it every minute.
( while sleep 60; do
    psql_q "$db_url" -c "VACUUM stats_conversations, stats_slots, stats_handled, stats_present, stats_open_conversations, stats_positions" 2>/dev/null || true
done ) &
vacuum_pid=$!
last=0
while true; do
    counted=$(psql_q "$db_url" -c "SELECT coalesce(sum(counted), 0) FROM stats_positions")
    caught_up=$(psql_q "$db_url" -c "SELECT count(*) FROM stats_positions WHERE caught_up_at IS NOT NULL AND counted >= $events")
    if ((caught_up > 0)); then
        break
    fi
    if ((SECONDS - counting_started >= 30 && counted == last)); then
        echo "the worker stopped at ${counted} events" >&2
        tail -n 20 "$work/service.log" >&2
        exit 1
    fi
    last=$counted
    sleep 10
    echo "  ${counted} of ${events} counted after $((SECONDS - counting_started)) s"
done
kill "$vacuum_pid" 2>/dev/null || true
wait "$vacuum_pid" 2>/dev/null || true
elapsed=$((SECONDS - counting_started))
counted_now=$((events - counted_before))
echo "worker: ${counted_now} events counted in ${elapsed} s: $((counted_now / (elapsed > 0 ? elapsed : 1))) events/s"
psql_q "$db_url" -c "VACUUM ANALYZE" 
psql_q "$db_url" -c "SELECT 'stats tables: ' || string_agg(relname || ' ' || pg_size_pretty(pg_total_relation_size(oid)), ', ' ORDER BY relname) FROM pg_class WHERE relname LIKE 'stats\\_%' AND relkind = 'r'"
psql_q "$db_url" -c "SELECT 'events table: ' || pg_size_pretty(pg_total_relation_size('events'))"

echo "== queries over HTTP (${RUNS} runs each, after one warm-up)"
token=$(APP_SECRET=$secret "$binary" token --app-id bench --secret-env APP_SECRET)
base="http://${address}/api/v1/bots/${BOT}"
time_query() {
    local name=$1 url=$2
    curl -s -o /dev/null -H "token: ${token}" "$url"
    for _ in $(seq "$RUNS"); do
        curl -s -o /dev/null -w '%{http_code} %{time_total} %{size_download}\n' -H "token: ${token}" "$url"
    done | python3 -c "
import sys, statistics
rows = [line.split() for line in sys.stdin]
codes = {row[0] for row in rows}
times = sorted(float(row[1]) * 1000 for row in rows)
p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
print(f'$name: median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, {rows[0][2]} bytes, status {\",\".join(sorted(codes))}')
"
}
time_query "30 days, PT1H, by participant" \
    "${base}/stats?from=2026-10-31T00:00:00Z&to=2026-11-30T00:00:00Z&granularity=PT1H&groupBy=participant"
time_query "30 days, PT1H, one participant" \
    "${base}/stats?from=2026-10-31T00:00:00Z&to=2026-11-30T00:00:00Z&granularity=PT1H&participant=agent-7"
time_query "30 days, all, by participant" \
    "${base}/stats?from=2026-10-31T00:00:00Z&to=2026-11-30T00:00:00Z&groupBy=participant"
time_query "1 day, PT15M" \
    "${base}/stats?from=2026-11-28T00:00:00Z&to=2026-11-29T00:00:00Z&granularity=PT15M"
time_query "30 days, P1D, Europe/Berlin, by queue" \
    "${base}/stats?from=2026-10-31T00:00:00Z&to=2026-11-30T00:00:00Z&granularity=P1D&timeZone=Europe/Berlin&groupBy=queue"
time_query "30 days, all, by experience" \
    "${base}/stats?from=2026-10-31T00:00:00Z&to=2026-11-30T00:00:00Z&groupBy=experience"
time_query "1 day off the grid, PT1H" \
    "${base}/stats?from=2026-11-28T00:07:13.5Z&to=2026-11-28T23:52:01Z&granularity=PT1H"
time_query "stats/now" "${base}/stats/now"
