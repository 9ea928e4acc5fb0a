#!/usr/bin/env bash
# A deploy at scale: how long an instance told to stop takes to hand its sessions to the
# cluster. Two instances on one local redis-server; SESSIONS sessions register and attach on A
# and each gets BROADCASTS events (so every mailbox travels with events in it); the streams
# end, the sessions stay; then A gets SIGTERM. Reports, per round: A's hand-off time (its own
# log line), its whole stop, and how many sessions B holds afterwards. Stops what it started.
#
#   bash bench/handoff.sh            # ROUNDS=3 SESSIONS=10000 BROADCASTS=20 by default
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-10000}
BROADCASTS=${BROADCASTS:-20}
source "$ROOT/bench/cluster-common.sh"
OUT=$(mktemp -d /tmp/switchboard-handoff.XXXXXX)
redis-server --port 6489 --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
PIDS+=($!)
sleep 0.5
echo "| round | sessions | hand-off (A's log) | SIGTERM to exit | sessions on B after |"
echo "|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
    redis-cli -p 6489 flushall >/dev/null
    "$BIN/switchboard" --listen 127.0.0.1:4611 --presence false --log info "${NO_LIMITS[@]}" \
        --redis-url redis://127.0.0.1:6489 >"$OUT/a-$round.log" 2>&1 &
    A=$!; PIDS+=($A)
    "$BIN/switchboard" --listen 127.0.0.1:4612 --presence false --log warn "${NO_LIMITS[@]}" \
        --redis-url redis://127.0.0.1:6489 >"$OUT/b-$round.log" 2>&1 &
    B=$!; PIDS+=($B)
    wait_up 4611; wait_up 4612
    timeout 300 "$BIN/switchboard-load" --url http://127.0.0.1:4611 --no-cleanup --json \
        fanout --streams "$SESSIONS" --broadcasts "$BROADCASTS" --rate 10 >>"$OUT/load.jsonl"
    started=$(date +%s.%N)
    kill -TERM "$A"
    wait "$A" || true
    stopped=$(date +%s.%N)
    handoff=$(grep -o 'handed every session to the cluster.*' "$OUT/a-$round.log" | grep -o 'elapsed=[^ ]*' || echo "elapsed=none")
    on_b=$(curl -fsS http://127.0.0.1:4612/healthz | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessions"])')
    printf '| %s | %s | %s | %.2f s | %s |\n' "$round" "$SESSIONS" "${handoff#elapsed=}" \
        "$(echo "$stopped - $started" | bc)" "$on_b"
    kill -TERM "$B"; wait "$B" || true
done
echo "logs: $OUT" >&2
