#!/usr/bin/env bash
# The audit log's cost (SPEC 13): query throughput of the release binary on PostgreSQL with
# the audit log on and off (audit.enabled), alternating ROUNDS times so that both see the
# same machine. wrk reads random conversations of a seeded bot (bench/reads.lua) at
# CONNECTIONS connections. After each run with the audit log on, the service is stopped
# (SIGTERM, which writes what is queued) and the records written are counted against the
# reads wrk saw answered: none may be missing.
#
#   BINARY=target/ci-release/agentassist-hooks bench/audit.sh      # 64 connections, 3 rounds of 20 s
#   CONVERSATIONS=5000 DURATION=30 ROUNDS=4 bench/audit.sh
#
# Needs: cargo, psql, wrk, curl, python3. Drops and creates the database hooks_bench_audit.
# Only ever talks to 127.0.0.1.
set -euo pipefail

ADMIN_URL=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
CONVERSATIONS=${CONVERSATIONS:-2000}
DB=hooks_bench_audit

cd "$(dirname "$0")/.."
for tool in cargo psql wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
admin_base=${ADMIN_URL%%\?*}
db_url="${admin_base%/*}/${DB}?sslmode=disable"
work=$(mktemp -d)
service_pid=

cleanup() {
    if [[ -n $service_pid ]]; then
        kill "$service_pid" 2>/dev/null || true
        wait "$service_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_q() { psql "$1" -X -q -v ON_ERROR_STOP=1 -At "${@:2}"; }

echo "== machine: $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg); code $(git rev-parse --short HEAD)"
if [[ -n ${BINARY:-} ]]; then
    binary=$BINARY
else
    cargo build --release --locked --quiet
    binary=target/release/agentassist-hooks
fi
export HOOKS_BENCH_SECRET
HOOKS_BENCH_SECRET=$(head -c 32 /dev/urandom | base64)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
cat >"$work/bench.toml" <<TOML
[server]
bind = "127.0.0.1:$port"
[[apps]]
app_id = "bench"
secret_env = "HOOKS_BENCH_SECRET"
bots = ["*"]
permissions = ["ingest", "read"]
TOML

# Starts the service with the audit log $1 ("true" or "false").
start_service() {
    env -u RUST_LOG DATABASE_URL="$db_url" HOOKS__LOG__FILTER=warn HOOKS__AUDIT__ENABLED="$1" \
        "$binary" --config "$work/bench.toml" serve >>"$work/service.log" 2>&1 &
    service_pid=$!
    for _ in $(seq 100); do
        curl -fs "$base/readyz" >/dev/null && break
        sleep 0.1
    done
    curl -fs "$base/readyz" >/dev/null || { cat "$work/service.log" >&2; exit 1; }
}

stop_service() {
    kill "$service_pid"
    wait "$service_pid" 2>/dev/null || true
    service_pid=
}

psql_q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
start_service false
token=$("$binary" token --app-id bench --secret-env HOOKS_BENCH_SECRET --ttl 7200)
echo "== seeding $CONVERSATIONS conversations of 3 events"
python3 - "$port" "$token" "$CONVERSATIONS" <<'PY'
import http.client, json, sys
port, token, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
connection = http.client.HTTPConnection("127.0.0.1", port)
def event(transfer, transition, agent):
    return {"name": "INTERNAL_TRANSFER_EVENT", "transfertype": transfer, "transition": transition,
            "isExtAD": True, "experience": "chat", "language": "en",
            "participant": {"identity": agent, "name": agent, "type": "agent"}}
for n in range(1, count + 1):
    body = {"conversationId": f"c-{n}", "botId": "st-bench", "events": [
        event("NA", "entry", f"agent-{n % 40}"), event("COLD", "exit", f"agent-{n % 40}"),
        event("COLD", "entry", f"agent-{(n + 1) % 40}")]}
    connection.request("POST", "/agentassist/api/v1/hooks/st-bench", json.dumps(body),
                       {"token": token, "content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
PY
stop_service

drive() {
    wrk -t2 -c"$CONNECTIONS" -d"$1"s --timeout 10s -s bench/reads.lua "$base" -- "$token" "$CONVERSATIONS" >"$work/wrk-$2.txt"
    local requests non2xx
    requests=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$work/wrk-$2.txt")
    non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\)/\1/p' "$work/wrk-$2.txt")
    echo "$requests $(sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p' "$work/wrk-$2.txt") ${non2xx:-0}"
}

declare -a off_rps on_rps
for round in $(seq "$ROUNDS"); do
    for mode in false true; do
        start_service "$mode"
        drive "$WARMUP" "warm-$mode-$round" >/dev/null
        before=$(psql_q "$db_url" -c "SELECT count(*) FROM audit_log")
        read -r requests rps failed < <(drive "$DURATION" "$mode-$round")
        stop_service
        after=$(psql_q "$db_url" -c "SELECT count(*) FROM audit_log")
        if [[ $mode == true ]]; then
            on_rps+=("$rps")
            echo "round $round, audit on:  $rps reads/s ($requests answered, $failed not 2xx); records written: $((after - before))"
            ((after - before >= requests)) || { echo "records missing: $((after - before)) < $requests" >&2; exit 1; }
        else
            off_rps+=("$rps")
            echo "round $round, audit off: $rps reads/s ($requests answered, $failed not 2xx); records written: $((after - before))"
        fi
    done
done
mean() { python3 -c "import sys; v = [float(x) for x in sys.argv[1:]]; print(round(sum(v) / len(v), 1))" "$@"; }
off=$(mean "${off_rps[@]}")
on=$(mean "${on_rps[@]}")
echo "== $CONNECTIONS connections, $ROUNDS rounds of $DURATION s, $CONVERSATIONS conversations"
echo "reads/s with the audit log off: $off; on: $on; change $(python3 -c "print(round(100 * ($on - $off) / $off, 1))") %"
