#!/usr/bin/env bash
# Webhook delivery benchmark (SPEC 12): the release binary on PostgreSQL under the ingest
# load of bench/run.sh (wrk, bench/ingest.lua) at CONNECTIONS connections, with no webhook
# and with one endpoint whose receiver answers in 5 ms (bench/webhook-receiver.mjs),
# alternating ROUNDS times so that both see the same machine. Prints per run: events/s
# acknowledged, the endpoint's largest lag in seconds while the load ran (sampled every
# second from GET /api/v1/webhooks), and how long it took to deliver the rest after the
# load stopped; the CPU each process spent per event acknowledged (the service, PostgreSQL,
# the receiver), so that the receiver's share of the 2 cores shows; then the means and the
# ingest loss with the webhook.
#
#   bench/webhooks.sh                                # 64 connections, 3 rounds of 20 s
#   BINARY=target/release/agentassist-hooks DURATION=30 ROUNDS=3 bench/webhooks.sh
#   MAX_IN_FLIGHT=32 bench/webhooks.sh               # the endpoint's max_in_flight (16)
#
# Needs: cargo, psql, wrk, curl, node, python3. Drops and creates the database
# hooks_bench_webhooks. Only ever talks to 127.0.0.1.
set -euo pipefail

ADMIN_URL=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
MAX_IN_FLIGHT=${MAX_IN_FLIGHT:-16}
DB=hooks_bench_webhooks

cd "$(dirname "$0")/.."
for tool in cargo psql wrk curl node python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
admin_base=${ADMIN_URL%%\?*}
service_url="${admin_base%/*}/${DB}?sslmode=disable"
work=$(mktemp -d)
service_pid=
receiver_pid=

cleanup() {
    for pid in $service_pid $receiver_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
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

node bench/webhook-receiver.mjs >"$work/receiver.port" &
receiver_pid=$!
for _ in $(seq 50); do [[ -s $work/receiver.port ]] && break; sleep 0.1; done
receiver="http://127.0.0.1:$(cat "$work/receiver.port")"

export HOOKS_BENCH_SECRET
HOOKS_BENCH_SECRET=$(head -c 32 /dev/urandom | base64)
export WEBHOOK_BENCH_SECRET="whsec_$(head -c 32 /dev/urandom | base64)"

# Starts the service on a fresh database; with the webhook when $1 is "on".
start_service() {
    psql_q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    {
        echo 'webhook_allow_hosts = ["127.0.0.1"]'
        echo "[server]"
        echo "bind = \"127.0.0.1:$port\""
        echo "[[apps]]"
        echo 'app_id = "bench"'
        echo 'secret_env = "HOOKS_BENCH_SECRET"'
        echo 'bots = ["*"]'
        echo 'permissions = ["ingest", "read", "admin"]'
        if [[ $1 == on ]]; then
            echo "[[webhooks]]"
            echo 'name = "bench"'
            echo "url = \"$receiver/hooks\""
            echo 'secret_env = "WEBHOOK_BENCH_SECRET"'
            echo 'bots = ["st-bench"]'
            echo 'start = "oldest"'
            echo "max_in_flight = $MAX_IN_FLIGHT"
        fi
    } >"$work/bench.toml"
    env -u RUST_LOG DATABASE_URL="$service_url" HOOKS__LOG__FILTER=warn \
        "$binary" --config "$work/bench.toml" serve >>"$work/service.log" 2>&1 &
    service_pid=$!
    base="http://127.0.0.1:$port"
    for _ in $(seq 100); do
        curl -fs "$base/readyz" >/dev/null && break
        sleep 0.1
    done
    curl -fs "$base/readyz" >/dev/null || { cat "$work/service.log" >&2; exit 1; }
    token=$("$binary" token --app-id bench --secret-env HOOKS_BENCH_SECRET --ttl 3600)
}

stop_service() {
    kill "$service_pid"
    wait "$service_pid" 2>/dev/null || true
    service_pid=
}

# The endpoint's "lagItems lagSeconds".
lag() {
    curl -s -H "token: $token" "$base/api/v1/webhooks" |
        python3 -c 'import json, sys; i = json.load(sys.stdin)["items"][0]; print(i["lagItems"], i["lagSeconds"])'
}

# CPU ticks (1/100 s) so far of process $1; of every postgres process (exited backends
# through their parent's cutime/cstime).
ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
postgres_ticks() {
    local total=0 stat f
    for stat in /proc/[0-9]*/stat; do
        { read -r -a f <"$stat"; } 2>/dev/null || continue
        [[ ${f[1]} == "(postgres)" ]] && total=$((total + f[13] + f[14] + f[15] + f[16]))
    done
    echo "$total"
}
cpu_sample() { echo "$(ticks_of "$service_pid") $(postgres_ticks) $(ticks_of "$receiver_pid")"; }
# Between two samples, ms per event ($3): "service postgres receiver".
cpu_per_event() {
    awk -v n="$3" -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        printf "%.3f %.3f %.3f", (y[1] - x[1]) * 10 / n, (y[2] - x[2]) * 10 / n, (y[3] - x[3]) * 10 / n }'
}

drive() {
    wrk -t2 -c"$CONNECTIONS" -d"$1"s --timeout 10s -s bench/ingest.lua \
        "$base/agentassist/api/v1/hooks/st-bench" -- "$2" "$token" "$work/acks-$2" >"$work/wrk-$2.txt"
    sed -n 's/^RESULT ok=\([0-9]*\) .*duration_us=\([0-9]*\).*/\1 \2/p' "$work/wrk-$2.txt"
}

declare -a off_eps on_eps on_lag on_drain off_cpu on_cpu
for round in $(seq "$ROUNDS"); do
    for mode in off on; do
        start_service "$mode"
        drive "$WARMUP" "warm-$mode-$round" >/dev/null
        max_lag=0
        if [[ $mode == on ]]; then
            (while true; do lag; sleep 1; done) >"$work/lag-$round.txt" 2>/dev/null &
            sampler=$!
        fi
        before=$(cpu_sample)
        read -r ok micros < <(drive "$DURATION" "$mode-$round")
        after=$(cpu_sample)
        eps=$(python3 -c "print(round($ok / ($micros / 1e6)))")
        cpu=$(cpu_per_event "$before" "$after" "$ok")
        if [[ $mode == on ]]; then
            kill "$sampler"; wait "$sampler" 2>/dev/null || true
            max_lag=$(awk 'BEGIN {m = 0} $2 > m {m = $2} END {print m}' "$work/lag-$round.txt")
            started=$SECONDS
            until [[ $(lag | cut -d' ' -f1) == 0 ]]; do sleep 0.2; done
            drain=$((SECONDS - started))
            on_eps+=("$eps"); on_lag+=("$max_lag"); on_drain+=("$drain"); on_cpu+=("$cpu")
            echo "round $round with webhook: $eps events/s, largest lag ${max_lag} s, rest delivered ${drain} s after the load; CPU ms/event service postgres receiver: $cpu"
        else
            off_eps+=("$eps"); off_cpu+=("$cpu")
            echo "round $round without webhook: $eps events/s; CPU ms/event service postgres receiver: $cpu"
        fi
        stop_service
    done
done
echo "== receiver: $(curl -s "$receiver/count") (requests, distinct webhook-ids)"
mean() { python3 -c "import sys; v = [float(x) for x in sys.argv[1:]]; print(round(sum(v) / len(v), 1))" "$@"; }
off=$(mean "${off_eps[@]}")
on=$(mean "${on_eps[@]}")
echo "== $CONNECTIONS connections, $ROUNDS rounds of $DURATION s, max_in_flight $MAX_IN_FLIGHT"
echo "ingest without webhook: $off events/s; with: $on events/s; change $(python3 -c "print(round(100 * ($on - $off) / $off, 1))") %"
# Mean CPU ms per event of column $1 (1 service, 2 postgres, 3 receiver) over the samples.
mean_cpu() { local column=$1; shift; printf '%s\n' "$@" | awk -v c="$column" '{s += $c} END {printf "%.3f", s / NR}'; }
echo "CPU ms per event without webhook: service $(mean_cpu 1 "${off_cpu[@]}"), postgres $(mean_cpu 2 "${off_cpu[@]}")"
echo "CPU ms per event with webhook:    service $(mean_cpu 1 "${on_cpu[@]}"), postgres $(mean_cpu 2 "${on_cpu[@]}"), receiver $(mean_cpu 3 "${on_cpu[@]}")"
echo "largest lag while loaded: $(printf '%s\n' "${on_lag[@]}" | sort -g | tail -1) s; longest drain after: $(printf '%s\n' "${on_drain[@]}" | sort -g | tail -1) s"
