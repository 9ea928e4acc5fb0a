#!/usr/bin/env bash
# A reconnect storm after a deploy. INSTANCES instances on one local redis-server; CLIENTS
# clients (switchboard-storm: spread over the instances as a balancer would, in rooms of
# ROOM_SIZE so that each `ready` carries a roster) attach; then one instance is deployed:
# SIGTERM (it drains its sessions to the others, its streams end) and started again on its
# port. Its clients reconnect at once to the next instance. Reports the time from the first
# stream ending until every client is attached again, each one's time to come back, and what
# Redis executed meanwhile. Not CI; one process holds all the clients (under the ~20,000
# open-file cap). Stops what it started, by pid.
#
#   bash bench/storm.sh            # CLIENTS=10000 INSTANCES=3 ROOM_SIZE=10 by default
#   BIN=target/debug CLIENTS=2000 bash bench/storm.sh   # a quick check with a debug build
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CLIENTS=${CLIENTS:-10000}
INSTANCES=${INSTANCES:-3}
ROOM_SIZE=${ROOM_SIZE:-10}
source "$ROOT/bench/cluster-common.sh"
[ -x "$BIN/switchboard-storm" ] || { echo "no $BIN/switchboard-storm: cargo build -p switchboard-load" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
OUT=$(mktemp -d /tmp/switchboard-storm.XXXXXX)
REDIS_PORT=6499
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
PIDS+=($!)
sleep 0.5

declare -A INSTANCE_PID
start_instance() {
    "$BIN/switchboard" --listen "127.0.0.1:$((4620 + $1))" --log warn "${NO_LIMITS[@]}" \
        --redis-url "redis://127.0.0.1:$REDIS_PORT" >>"$OUT/instance-$1.log" 2>&1 &
    INSTANCE_PID[$1]=$!
    PIDS+=($!)
}
ADDRS=()
for i in $(seq 1 "$INSTANCES"); do
    start_instance "$i"
    ADDRS+=("127.0.0.1:$((4620 + i))")
done
for i in $(seq 1 "$INSTANCES"); do wait_up $((4620 + i)); done

"$BIN/switchboard-storm" --instances "$(IFS=,; echo "${ADDRS[*]}")" --clients "$CLIENTS" \
    --room-size "$ROOM_SIZE" --ready-file "$OUT/ready" >"$OUT/storm.json" &
STORM=$!
PIDS+=($STORM)
for _ in $(seq 1 9000); do
    [ -e "$OUT/ready" ] && break
    kill -0 "$STORM" 2>/dev/null || { echo "switchboard-storm failed before attaching" >&2; exit 1; }
    sleep 0.1
done
[ -e "$OUT/ready" ] || { echo "the clients did not attach in time" >&2; exit 1; }

# The deploy: instance 1 stops (draining its sessions to the others) and starts again.
redis-cli -p $REDIS_PORT config resetstat >/dev/null
deployed=$(date +%s.%N)
kill -TERM "${INSTANCE_PID[1]}"
wait "${INSTANCE_PID[1]}" || true
stopped=$(date +%s.%N)
start_instance 1
wait_up 4621
wait "$STORM"

python3 - "$OUT/storm.json" "$(echo "$stopped - $deployed" | bc)" <<'PY' 
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['clients']:,} clients in rooms of {r['room_size']} on {r['instances']} instances "
      f"(registered and attached in {r['attach_s']:.1f} s; {r['unregistered']} never registered)")
print("| streams ended by the deploy | all back after | back p50 | back p99 | back max | refused tries | sessions lost | SIGTERM to exit |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
print(f"| {r['ended']:,} | {r['all_back_s']:.2f} s | {r['back_p50_ms']:.0f} ms | {r['back_p99_ms']:.0f} ms "
      f"| {r['back_max_ms']:.0f} ms | {r['refused']:,} | {r['lost']:,} | {float(sys.argv[2]):.2f} s |")
PY
echo "Redis during the deploy and the storm (INFO commandstats):"
redis-cli -p $REDIS_PORT info commandstats | grep -E 'cmdstat_(hgetall|hscan|hget|hset|publish|evalsha|eval):' \
    | sed -E 's/^cmdstat_([a-z]+):calls=([0-9]+),usec=([0-9]+).*/  \1: \2 calls, \3 us/'
echo "logs: $OUT" >&2
