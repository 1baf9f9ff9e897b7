#!/usr/bin/env bash
# Slowloris: the release binary, with its default limits, on the embedded SQLite store,
# while bench/slowloris.py holds thousands of idle sockets and trickled request heads
# against it and times valid ingests. Prints the latencies and the service's memory.
#
#   bench/slowloris.sh                              # 5000 idle + 400 trickled, 25 s
#   IDLE=2000 TRICKLE=100 SECONDS_=10 bench/slowloris.sh
#   BINARY=/tmp/agentassist-hooks bench/slowloris.sh  # a given build instead of cargo build
#
# Needs: cargo, curl, python3. Only ever talks to 127.0.0.1.
set -euo pipefail

IDLE=${IDLE:-5000}
TRICKLE=${TRICKLE:-400}
SECONDS_=${SECONDS_:-25}

cd "$(dirname "$0")/.."
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

if [[ -n ${BINARY:-} ]]; then
    binary=$BINARY
    echo "code: the given binary $BINARY"
else
    cargo build --release --locked --quiet
    binary=${CARGO_TARGET_DIR:-target}/release/agentassist-hooks
    echo "code: $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' with uncommitted changes')"
fi
binary=$(realpath "$binary")
echo "machine: $(nproc) cpus, open-file limit of this shell: $(ulimit -Sn) soft / $(ulimit -Hn) hard"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOOKS_SLOWLORIS_SECRET=$(head -c 32 /dev/urandom | base64)
export HOOKS_SLOWLORIS_SECRET
cat >"$work/slowloris.toml" <<EOF
[server]
bind = "127.0.0.1:$port"

[database]
url = "sqlite://$work/hooks.db"

[[apps]]
app_id = "slowloris"
secret_env = "HOOKS_SLOWLORIS_SECRET"
bots = ["st-slowloris"]
permissions = ["ingest"]
EOF
(cd "$work" && exec env -u RUST_LOG -u DATABASE_URL HOOKS__LOG__FILTER=warn \
    "$binary" --config "$work/slowloris.toml" serve) >"$work/service.log" 2>&1 &
service_pid=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
    kill -0 "$service_pid" 2>/dev/null || { cat "$work/service.log" >&2; exit 1; }
    sleep 0.1
done
token=$("$binary" token --app-id slowloris --secret-env HOOKS_SLOWLORIS_SECRET --ttl 3600)
echo "service: pid $service_pid on 127.0.0.1:$port, open-file limit $(awk '/Max open files/ {print $4 " soft / " $5 " hard"}' "/proc/$service_pid/limits")"

python3 bench/slowloris.py --port "$port" --pid "$service_pid" --token "$token" \
    --idle "$IDLE" --trickle "$TRICKLE" --seconds "$SECONDS_"
