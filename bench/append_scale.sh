#!/usr/bin/env bash
# Append latency at a conversation's 10th, 1,000th and 10,000th participant, on both
# stores: the release binary on the embedded SQLite file, then on PostgreSQL.
#
#   bench/append_scale.sh
#   ADMIN_URL=postgres://me@127.0.0.1:5432/postgres bench/append_scale.sh
#   BINARY=/tmp/agentassist-hooks bench/append_scale.sh   # a given build
#
# Needs: cargo, curl, psql, python3. Drops and creates the database hooks_scale. Exits 1
# if the 10,000th participant's append takes more than twice the 10th's on either store.
set -euo pipefail

ADMIN_URL=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
SCALE_DB=hooks_scale

cd "$(dirname "$0")/.."
case $ADMIN_URL in
    postgres://*@127.0.0.1:* | postgresql://*@127.0.0.1:* | postgres://*@localhost:*) ;;
    *) echo "ADMIN_URL must point at 127.0.0.1" >&2; exit 2 ;;
esac
work=$(mktemp -d)
service_pid=
stop_service() {
    if [[ -n $service_pid ]] && kill -0 "$service_pid" 2>/dev/null; then
        kill "$service_pid" 2>/dev/null || true
        wait "$service_pid" 2>/dev/null || true
    fi
    service_pid=
}
trap 'stop_service; rm -rf "$work"' EXIT

if [[ -n ${BINARY:-} ]]; then
    binary=$(realpath "$BINARY")
    echo "code: the given binary $BINARY"
else
    cargo build --release --locked --quiet
    binary=$(realpath "${CARGO_TARGET_DIR:-target}/release/agentassist-hooks")
    echo "code: $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' with uncommitted changes')"
fi
echo "machine: $(nproc) cpus; postgres $(psql "$ADMIN_URL" -XAtqc 'SHOW server_version')"

HOOKS_SCALE_SECRET=$(head -c 32 /dev/urandom | base64)
export HOOKS_SCALE_SECRET
token=$("$binary" token --app-id scale --secret-env HOOKS_SCALE_SECRET --ttl 3600)

# Runs the measurement against the service on database URL $1, labelled $2.
measure() {
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$work/scale.toml" <<EOF
[server]
bind = "127.0.0.1:$port"

[[apps]]
app_id = "scale"
secret_env = "HOOKS_SCALE_SECRET"
bots = ["st-scale"]
permissions = ["ingest"]
EOF
    (cd "$work" && exec env -u RUST_LOG DATABASE_URL="$1" HOOKS__LOG__FILTER=warn \
        "$binary" --config "$work/scale.toml" serve) >"$work/service-$2.log" 2>&1 &
    service_pid=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
        kill -0 "$service_pid" 2>/dev/null || { cat "$work/service-$2.log" >&2; exit 1; }
        sleep 0.1
    done
    local status=0
    python3 bench/append_scale.py --port "$port" --token "$token" --bot st-scale --label "$2" ||
        status=$?
    stop_service
    return $status
}

failed=0
measure "sqlite://$work/scale.db" sqlite || failed=1
psql "$ADMIN_URL" -XAtq -c "DROP DATABASE IF EXISTS $SCALE_DB" -c "CREATE DATABASE $SCALE_DB"
measure "${ADMIN_URL%/*}/$SCALE_DB" postgres || failed=1
exit $failed
