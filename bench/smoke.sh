#!/usr/bin/env bash
# Smoke test of the load generator against a real switchboard, quick enough for CI: a small
# fanout (presence on, the default), a few seconds of direct messages, idle streams, one step
# of the rooms mode and a few joins; fails unless every event arrived (switchboard-load exits non-zero when events are lost). Not a benchmark:
# the numbers it prints mean nothing on a busy CI machine.
#
#   bash bench/smoke.sh            # builds debug binaries (PROFILE=release for release ones)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PROFILE=${PROFILE:-debug}
PORT=${SMOKE_PORT:-4470}

if [[ $PROFILE == release ]]; then
    timeout 1800 cargo build --release -p switchboard -p switchboard-load
else
    timeout 1800 cargo build -p switchboard -p switchboard-load
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=$TARGET_DIR/$PROFILE

LOG=$(mktemp /tmp/switchboard-smoke.XXXXXX)
# Limits off: the load generator is one address sending far faster than a person.
"$BIN/switchboard" --listen "127.0.0.1:$PORT" --log warn \
    --helo-rate 0 --message-rate 0 --byte-rate 0 --max-sessions-per-address 0 --max-streams-per-address 0 --max-connections-per-address 0 \
    --session-attaches 0 --address-attach-rate 0 --list-rate 0 \
    >"$LOG" 2>&1 &
SERVER_PID=$!
stop() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    rm -f "$LOG"
}
trap stop EXIT

up=0
for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz" 2>/dev/null; then up=1; break; fi
    sleep 0.1
done
if [[ $up != 1 ]]; then
    echo "switchboard did not start:" >&2
    cat "$LOG" >&2
    exit 1
fi

LOAD=("$BIN/switchboard-load" --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" --max-secs 120)
passed=0
failed=0
run() {
    echo "--- switchboard-load $*"
    if timeout 150 "${LOAD[@]}" "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}
run fanout --streams 100 --broadcasts 50
run fanout --streams 100 --broadcasts 5 --rate 10
run direct --pairs 10 --rate 500 --duration 3
run idle --streams 200 --settle 1 --hold 1
run idle --streams 200 --settle 1 --hold 1 --shared-connection
run rooms --rooms 10 --room-size 5 --rates 20 --step-secs 1
run join --sessions 50 --room-size 10 --joins 20 --rate 50

echo "smoke: $passed passed, $failed failed"
[[ $failed == 0 ]]
