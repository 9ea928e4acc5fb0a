#!/usr/bin/env bash
# A deploy at scale: how long an instance told to stop takes to hand its sessions to the
# cluster. Two instances on one local redis-server; SESSIONS sessions register and attach on A
# and each gets BROADCASTS events (so every mailbox travels with events in it); the streams
# end, the sessions stay; then A gets SIGTERM. Reports, per round: A's hand-off time (its own
# log line), its whole stop, and how many sessions B holds afterwards. Stops what it started.
# SIGNAL=KILL kills A instead (a crash): then the time is from the kill until B has adopted
# every session (A's liveness key lasts 3 s of it).
#
#   bash bench/handoff.sh            # ROUNDS=3 SESSIONS=10000 BROADCASTS=20 SIGNAL=TERM by default
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-10000}
BROADCASTS=${BROADCASTS:-20}
SIGNAL=${SIGNAL:-TERM}
source "$ROOT/bench/cluster-common.sh"
OUT=$(mktemp -d /tmp/switchboard-handoff.XXXXXX)
redis-server --port 6489 --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
PIDS+=($!)
sleep 0.5
sessions_on() { curl -fsS "http://127.0.0.1:$1/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessions"])'; }
if [ "$SIGNAL" = KILL ]; then
    echo "| round | sessions | SIGKILL to all adopted by B | sessions on B after |"
    echo "|---:|---:|---:|---:|"
else
    echo "| round | sessions | hand-off (A's log) | SIGTERM to exit | sessions on B after |"
    echo "|---:|---:|---:|---:|---:|"
fi
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
    kill "-$SIGNAL" "$A"
    wait "$A" || true
    if [ "$SIGNAL" = KILL ]; then
        for _ in $(seq 1 600); do
            [ "$(sessions_on 4612)" -ge "$SESSIONS" ] && break
            sleep 0.05
        done
        adopted=$(date +%s.%N)
        printf '| %s | %s | %.2f s | %s |\n' "$round" "$SESSIONS" \
            "$(echo "$adopted - $started" | bc)" "$(sessions_on 4612)"
    else
        stopped=$(date +%s.%N)
        handoff=$(grep -o 'handed every session to the cluster.*' "$OUT/a-$round.log" | grep -o 'elapsed=[^ ]*' || echo "elapsed=none")
        printf '| %s | %s | %s | %.2f s | %s |\n' "$round" "$SESSIONS" "${handoff#elapsed=}" \
            "$(echo "$stopped - $started" | bc)" "$(sessions_on 4612)"
    fi
    kill -TERM "$B"; wait "$B" || true
done
echo "logs: $OUT" >&2
