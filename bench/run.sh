#!/usr/bin/env bash
# Ingest benchmark: the release binary on PostgreSQL, driven over HTTP by wrk, against two
# anchors at the same concurrency, in one run: pgbench doing the same durable writes with
# one event per transaction, and with GROUP events per transaction (the best grouping
# PostgreSQL itself can do on the machine).
#
#   bench/run.sh                          # PostgreSQL at postgres://postgres@127.0.0.1:5432
#   DURATION=30 CONNECTIONS="16 64" GROUP=16 bench/run.sh
#   ADMIN_URL=postgres://me@127.0.0.1:5432/postgres bench/run.sh
#   BINARY=/tmp/agentassist-hooks bench/run.sh   # a given build instead of cargo build
#   SERVICE_SSLMODE=disable bench/run.sh   # the service's sslmode (default: its own, prefer,
#                                          # which takes TLS where the server offers it)
#
# Needs: cargo, psql, pgbench, wrk (Debian: apt-get install wrk), curl, python3.
# Drops and creates the databases hooks_bench (service) and hooks_bench_pgbench.
# Prints, per concurrency: service events/s and p50/p99 latency, pgbench tps and p50/p99,
# their ratio; then the service's peak RSS, the targets, and whether every acknowledged
# event is stored (seqs gap-free, summaries equal to the events). Exits 1 if a
# correctness check fails. Only ever talks to 127.0.0.1.
set -euo pipefail

ADMIN_URL=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DURATION=${DURATION:-20}        # seconds per measured run
WARMUP=${WARMUP:-5}             # seconds of warm-up before each measured run
CONNECTIONS=${CONNECTIONS:-"16 64"}
GROUP=${GROUP:-16}              # events per transaction of the grouped pgbench anchor
SERVICE_DB=hooks_bench
PGBENCH_DB=hooks_bench_pgbench

cd "$(dirname "$0")/.."
case $ADMIN_URL in
    postgres://*@127.0.0.1:* | postgresql://*@127.0.0.1:* | postgres://*@localhost:*) ;;
    *) echo "ADMIN_URL must point at 127.0.0.1" >&2; exit 2 ;;
esac
for tool in cargo psql pgbench wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

admin_base=${ADMIN_URL%%\?*}
service_url="${admin_base%/*}/${SERVICE_DB}${SERVICE_SSLMODE:+?sslmode=$SERVICE_SSLMODE}"
pgbench_url="${admin_base%/*}/${PGBENCH_DB}"
work=$(mktemp -d)
service_pid=

cleanup() {
    if [[ -n $service_pid ]] && kill -0 "$service_pid" 2>/dev/null; then
        kill "$service_pid" 2>/dev/null || true
        wait "$service_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_q() { psql "$1" -X -q -v ON_ERROR_STOP=1 -At "${@:2}"; }

echo "== machine"
echo "cpus: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "memory: $(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')"
echo "kernel: $(uname -sr)"
echo "postgres: $(psql_q "$ADMIN_URL" -c 'SHOW server_version') (synchronous_commit=$(psql_q "$ADMIN_URL" -c 'SHOW synchronous_commit'), fsync=$(psql_q "$ADMIN_URL" -c 'SHOW fsync'), shared_buffers=$(psql_q "$ADMIN_URL" -c 'SHOW shared_buffers'), autovacuum=$(psql_q "$ADMIN_URL" -c 'SHOW autovacuum'))"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n ${BINARY:-} ]]; then
    echo "code: the given binary $BINARY (benchmark scripts from $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
else
    echo "code: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' with uncommitted changes')"
fi

if [[ -n ${BINARY:-} ]]; then
    binary=$BINARY
else
    echo "== build"
    cargo build --release --locked --quiet
    binary=${CARGO_TARGET_DIR:-target}/release/agentassist-hooks
fi

echo "== databases"
for db in "$SERVICE_DB" "$PGBENCH_DB"; do
    psql_q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
done
for migration in migrations/postgres/*.sql; do
    psql_q "$pgbench_url" -f "$migration"
done

echo "== service"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOOKS_BENCH_SECRET=$(head -c 32 /dev/urandom | base64)
export HOOKS_BENCH_SECRET
cat >"$work/bench.toml" <<EOF
[server]
bind = "127.0.0.1:$port"

[[apps]]
app_id = "bench"
secret_env = "HOOKS_BENCH_SECRET"
bots = ["st-bench"]
permissions = ["ingest", "read"]
EOF
env -u RUST_LOG DATABASE_URL="$service_url" HOOKS__LOG__FILTER=warn \
    "$binary" --config "$work/bench.toml" serve >"$work/service.log" 2>&1 &
service_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 100); do
    curl -fs "$base/readyz" >/dev/null && break
    kill -0 "$service_pid" 2>/dev/null || { cat "$work/service.log" >&2; exit 1; }
    sleep 0.1
done
curl -fs "$base/readyz" >/dev/null || { echo "service not ready" >&2; exit 1; }
token=$("$binary" token --app-id bench --secret-env HOOKS_BENCH_SECRET --ttl 3600)
echo "release binary on $base, database $SERVICE_DB, pid $service_pid"

# wrk at $1 connections for $2 seconds under tag $3; prints wrk's RESULT line.
drive() {
    wrk -t2 -c"$1" -d"$2"s --timeout 10s -s bench/ingest.lua "$base/agentassist/api/v1/hooks/st-bench" \
        -- "$3" "$token" "$work/acks-$3" >"$work/wrk-$3.txt" 2>"$work/wrk-$3.err"
    grep '^RESULT' "$work/wrk-$3.txt"
}

# The stats worker's lag (SPEC 11), from /metrics every second until killed, into
# lag-$1.txt as "seconds events" lines; nothing for a binary without stats.
sample_lag() {
    while true; do
        curl -s "$base/metrics" | awk '
            /^agentassist_hooks_stats_lag_seconds / { s = $2 }
            /^agentassist_hooks_stats_lag_events / { e = $2 }
            END { if (s != "") print s, e }'
        sleep 1
    done >"$work/lag-$1.txt" 2>/dev/null
}

# pgbench at $1 clients for $2 seconds, logging each transaction under tag $3, with the
# script $4 (default: one event per transaction).
pgbench_run() {
    rm -f "$work/pgb-$3".*
    pgbench -n -M prepared -c "$1" -j 2 -T "$2" -l --log-prefix="$work/pgb-$3" \
        -D k=0 -D slots=$((2000 / $1)) -D tag="$3" -D payload="$payload" -D participant="$participant" \
        -f "${4:-bench/pgbench-event.sql}" "$pgbench_url" >"$work/pgbench-$3.txt" 2>&1 \
        || { cat "$work/pgbench-$3.txt" >&2; exit 1; }
}

# The second anchor: the same writes, GROUP events per transaction (each of another
# conversation, as a group commit gathers them): bench/pgbench-event.sql's per-event
# commands repeated GROUP times between one BEGIN and COMMIT.
grouped_script=$work/pgbench-grouped.sql
{
    echo "BEGIN;"
    for _ in $(seq "$GROUP"); do
        sed -n '/^\\set /p' bench/pgbench-event.sql
        sed -n '/^BEGIN;$/,/^COMMIT;$/p' bench/pgbench-event.sql | sed '1d;$d'
    done
    echo "COMMIT;"
} >"$grouped_script"

# One event as bench/ingest.lua sends it.
payload='{"name":"INTERNAL_TRANSFER_EVENT","transfertype":"COLD","transition":"entry","isExtAD":"true","language":"en","experience":"voice","participant":{"identity":"agent-0421","name":"Agent 0421","type":"agent","customFields":{"agentEmail":"agent-0421@example.com","queueId":"q-21","queueName":"Billing and payments"}}}'
participant='{"identity":"agent-0421","name":"Agent 0421","type":"agent"}'

# Percentile $2 (0-100) of the pgbench transaction latencies (µs, field 3) of tag $1.
pgbench_percentile() {
    cat "$work/pgb-$1".* | awk '{print $3}' | sort -n | awk -v p="$2" \
        '{v[NR] = $1} END {i = int(NR * p / 100 + 0.999999); if (i < 1) i = 1; print v[i]}'
}

field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

# CPU ticks (1/100 s) used so far: by the service; by all postgres processes, counting
# exited backends through their parent's cutime/cstime; by this script's children (the
# load generator); by the whole machine (busy, total).
service_ticks() { awk '{print $14 + $15}' "/proc/$service_pid/stat"; }
postgres_ticks() {
    local total=0 stat f
    for stat in /proc/[0-9]*/stat; do
        { read -r -a f <"$stat"; } 2>/dev/null || continue
        [[ ${f[1]} == "(postgres)" ]] && total=$((total + f[13] + f[14] + f[15] + f[16]))
    done
    echo "$total"
}
children_ticks() { awk '{print $16 + $17}' "/proc/$$/stat"; }
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat; }
cpu_sample() { echo "$(service_ticks) $(postgres_ticks) $(children_ticks) $(machine_ticks)"; }
# Between two samples, per unit of work $3: "app_ms postgres_ms loadgen_ms rest_ms busy%",
# where rest is interrupts and every other process on the machine.
cpu_use() {
    awk -v n="$3" -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        app = y[1] - x[1]; pg = y[2] - x[2]; gen = y[3] - x[3]; busy = y[4] - x[4]
        printf "%.3f %.3f %.3f %.3f %.0f", app * 10 / n, pg * 10 / n, gen * 10 / n,
            (busy - app - pg - gen) * 10 / n, 100 * busy / (y[5] - x[5]) }'
}

declare -A service_eps service_p50 service_p99 pg_tps pg_p50 pg_p99 service_cpu pgbench_cpu
declare -A pg_grouped_eps
total_ok=0
total_refused=0
for c in $CONNECTIONS; do
    echo "== $c connections"
    drive "$c" "$WARMUP" "warm$c" >/dev/null
    # Statistics and no dead rows, as autovacuum would keep them (it may be off here);
    # then a checkpoint, so that both runs start with the same full-page-write load.
    psql_q "$service_url" -c "VACUUM ANALYZE"
    psql_q "$ADMIN_URL" -c CHECKPOINT
    sample_lag "$c" &
    sampler=$!
    before=$(cpu_sample)
    result=$(drive "$c" "$DURATION" "run$c")
    after=$(cpu_sample)
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    echo "service: $result"
    if [[ -s "$work/lag-$c.txt" ]]; then
        awk '{ if ($1 > s) s = $1; if ($2 > e) e = $2 } END {
            printf "stats worker: at most %.1f s and %d events behind while wrk ran\n", s, e }' \
            "$work/lag-$c.txt"
    fi
    ok=$(field ok "$result")
    service_eps[$c]=$(awk -v n="$ok" -v us="$(field duration_us "$result")" 'BEGIN {printf "%.0f", n / (us / 1e6)}')
    service_p50[$c]=$(awk -v us="$(field p50_us "$result")" 'BEGIN {printf "%.1f", us / 1000}')
    service_p99[$c]=$(awk -v us="$(field p99_us "$result")" 'BEGIN {printf "%.1f", us / 1000}')
    service_cpu[$c]=$(cpu_use "$before" "$after" "$ok")

    pgbench_run "$c" "$WARMUP" "warm$c"
    psql_q "$pgbench_url" -c "VACUUM ANALYZE"
    psql_q "$ADMIN_URL" -c CHECKPOINT
    before=$(cpu_sample)
    pgbench_run "$c" "$DURATION" "run$c"
    after=$(cpu_sample)
    pg_tps[$c]=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$work/pgbench-run$c.txt" | head -1)
    transactions=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$work/pgbench-run$c.txt")
    pgbench_cpu[$c]=$(cpu_use "$before" "$after" "$transactions")
    pg_p50[$c]=$(awk -v us="$(pgbench_percentile "run$c" 50)" 'BEGIN {printf "%.1f", us / 1000}')
    pg_p99[$c]=$(awk -v us="$(pgbench_percentile "run$c" 99)" 'BEGIN {printf "%.1f", us / 1000}')
    echo "pgbench: tps=${pg_tps[$c]} p50=${pg_p50[$c]}ms p99=${pg_p99[$c]}ms" \
        "failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$work/pgbench-run$c.txt")"

    pgbench_run "$c" "$WARMUP" "gwarm$c" "$grouped_script"
    psql_q "$pgbench_url" -c "VACUUM ANALYZE"
    psql_q "$ADMIN_URL" -c CHECKPOINT
    pgbench_run "$c" "$DURATION" "grun$c" "$grouped_script"
    grouped_tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$work/pgbench-grun$c.txt" | head -1)
    pg_grouped_eps[$c]=$(awk -v t="$grouped_tps" -v g="$GROUP" 'BEGIN {printf "%.0f", t * g}')
    echo "pgbench, $GROUP events per transaction: tps=$grouped_tps events/s=${pg_grouped_eps[$c]}"
done

peak_rss_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$service_pid/status")
rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$service_pid/status")
kill -TERM "$service_pid"
wait "$service_pid" || { echo "service exited with $?" >&2; cat "$work/service.log" >&2; exit 1; }
service_pid=
if [[ -s $work/service.log ]]; then
    echo "== service log: $(wc -l <"$work/service.log") warnings and errors, the first ones:"
    head -5 "$work/service.log"
fi

echo "== every acknowledged event is stored"
total_unanswered=0
total_connections=0
for file in "$work"/wrk-*.txt; do
    result=$(grep '^RESULT' "$file")
    total_ok=$((total_ok + $(field ok "$result")))
    total_refused=$((total_refused + $(field refused "$result")))
    for error in connect_errors read_errors write_errors timeouts; do
        total_unanswered=$((total_unanswered + $(field "$error" "$result")))
    done
done
for c in $CONNECTIONS; do total_connections=$((total_connections + 2 * c)); done
cat "$work"/acks-*.tsv >"$work/acks.tsv"
acks=$(wc -l <"$work/acks.tsv")
check=$(psql_q "$service_url" <<SQL
CREATE TEMP TABLE acks (conversation_id text, seq bigint);
\copy acks FROM '$work/acks.tsv'
SELECT (SELECT count(*) FROM events),
       (SELECT count(*) FROM acks a WHERE NOT EXISTS (SELECT 1 FROM events e
            WHERE e.bot_id = 'st-bench' AND e.conversation_id = a.conversation_id AND e.seq = a.seq)),
       (SELECT count(*) FROM (SELECT 1 FROM acks GROUP BY conversation_id, seq HAVING count(*) > 1) d),
       (SELECT count(*) FROM conversations c LEFT JOIN (
            SELECT bot_id, conversation_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi
            FROM events GROUP BY 1, 2) e USING (bot_id, conversation_id)
        WHERE e.n IS NULL OR e.lo <> 1 OR e.hi <> e.n OR c.last_seq <> e.n OR c.event_count <> e.n),
       (SELECT count(*) FROM conversations c
        WHERE c.present_count <> (SELECT count(*) FROM stints s
            WHERE s.bot_id = c.bot_id AND s.conversation_id = c.conversation_id AND s.left_at IS NULL)),
       (SELECT count(*) FROM conversations);
SQL
)
IFS='|' read -r stored missing duplicated gapped unmatched conversations <<<"$check"
echo "acknowledged (200): $total_ok, refused (non-200): $total_refused," \
    "socket errors and timeouts: $total_unanswered, ack lines: $acks"
echo "stored events: $stored in $conversations conversations; stored but not acknowledged:" \
    "$((stored - total_ok)) (requests in flight when wrk stopped: at most $total_connections)"
echo "acknowledged but not stored: $missing; seq acknowledged twice: $duplicated;" \
    "conversations with a seq gap or a count off: $gapped; open stints != present count: $unmatched"
correct=yes
if ((missing != 0 || duplicated != 0 || gapped != 0 || unmatched != 0 || total_refused != 0 \
    || total_unanswered != 0 || acks != total_ok || stored < total_ok \
    || stored - total_ok > total_connections)); then
    correct=no
fi

echo
echo "== summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), ${DURATION}s per run after ${WARMUP}s warm-up)"
printf '%-12s %12s %10s %10s %12s %10s %10s %8s %14s %8s\n' connections "service ev/s" "p50 ms" "p99 ms" \
    "pgbench tps" "p50 ms" "p99 ms" ratio "grouped ev/s" ratio
for c in $CONNECTIONS; do
    ratio=$(awk -v a="${service_eps[$c]}" -v b="${pg_tps[$c]}" 'BEGIN {printf "%.2f", a / b}')
    grouped_ratio=$(awk -v a="${service_eps[$c]}" -v b="${pg_grouped_eps[$c]}" 'BEGIN {printf "%.2f", a / b}')
    printf '%-12s %12s %10s %10s %12.0f %10s %10s %8s %14s %8s\n' "$c" "${service_eps[$c]}" "${service_p50[$c]}" \
        "${service_p99[$c]}" "${pg_tps[$c]}" "${pg_p50[$c]}" "${pg_p99[$c]}" "$ratio" \
        "${pg_grouped_eps[$c]}" "$grouped_ratio"
done
echo "(ratio: service events/s over pgbench with one event per transaction; then over pgbench"
echo " with $GROUP events per transaction)"
echo
echo "CPU ms per event: service (app = the service), pgbench (app = none); gen = wrk or pgbench;"
echo "rest = interrupts and any other process on the machine"
printf '%-8s %-8s %8s %9s %8s %8s %8s %6s\n' conns run app postgres gen rest total busy
for c in $CONNECTIONS; do
    for run in service pgbench; do
        if [[ $run == service ]]; then use=${service_cpu[$c]}; else use=${pgbench_cpu[$c]}; fi
        read -r app pg gen rest busy <<<"$use"
        [[ $run == pgbench ]] && app=-
        printf '%-8s %-8s %8s %9s %8s %8s %8.3f %5s%%\n' "$c" "$run" "$app" "$pg" "$gen" "$rest" \
            "$(awk -v a="${app/-/0}" -v p="$pg" -v g="$gen" -v r="$rest" 'BEGIN {print a + p + g + r}')" "$busy"
    done
done
awk -v k="$peak_rss_kib" -v r="$rss_kib" 'BEGIN {printf "service peak RSS (VmHWM): %.1f MiB (RSS at the end: %.1f MiB)\n", k / 1024, r / 1024}'

echo
echo "== targets"
verdict() { if (($(awk "BEGIN {print ($1) ? 1 : 0}"))); then echo met; else echo "NOT MET"; fi; }
last=${CONNECTIONS##* }
first=${CONNECTIONS%% *}
ratio_last=$(awk -v a="${service_eps[$last]}" -v b="${pg_tps[$last]}" 'BEGIN {printf "%.2f", a / b}')
grouped_last=$(awk -v a="${service_eps[$last]}" -v b="${pg_grouped_eps[$last]}" 'BEGIN {printf "%.2f", a / b}')
ratio_first=$(awk -v a="${service_eps[$first]}" -v b="${pg_tps[$first]}" 'BEGIN {printf "%.2f", a / b}')
echo "throughput at $last connections >= 1.5 x pgbench, one event per transaction: $ratio_last  $(verdict "$ratio_last >= 1.5")"
echo "throughput at $last connections >= 0.7 x pgbench, $GROUP events per transaction: $grouped_last  $(verdict "$grouped_last >= 0.7")"
echo "throughput at $first connections >= 1.0 x pgbench, one event per transaction: $ratio_first  $(verdict "$ratio_first >= 1.0")"
echo "p99 at $first connections <= 10 ms: ${service_p99[$first]} ms  $(verdict "${service_p99[$first]} <= 10")"
peak_mib=$(awk -v k="$peak_rss_kib" 'BEGIN {printf "%.1f", k / 1024}')
echo "peak RSS <= 50 MiB: $peak_mib MiB  $(verdict "$peak_mib <= 50")"
echo "every acknowledged event stored, seqs gap-free: $correct"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
[[ $correct == yes ]]
