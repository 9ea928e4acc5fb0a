#!/usr/bin/env bash
# A reconnect storm after a deploy. INSTANCES instances on one local redis-server; CLIENTS
# clients (switchboard-storm: spread over the instances as a balancer would, in rooms of
# ROOM_SIZE so that each `ready` carries a roster) attach; then one instance is deployed:
# SIGTERM (it drains its sessions to the others, its streams end) and started again on its
# port. Its clients reconnect at once to the next instance. Reports the time from the first
# stream ending until every client is attached again, each one's time to come back, and what
# Redis executed meanwhile. Each of ROUNDS rounds starts Redis and the instances afresh; with
# more than one, the medians follow. Not CI; one process holds all the clients (10,000 streams
# and the connections being opened, under the ~20,000 open-file cap; the instances are ports
# of their own, so the 28,000 ephemeral ports per destination are not a limit either).
# Stops what it started, by pid.
#
#   bash bench/storm.sh            # CLIENTS=10000 INSTANCES=3 ROOM_SIZE=10 ROUNDS=1 by default
#   ROUNDS=3 bash bench/storm.sh   # the figure in BENCHMARKS.md
#   BIN=target/debug CLIENTS=2000 bash bench/storm.sh   # a quick check with a debug build
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CLIENTS=${CLIENTS:-10000}
ROUNDS=${ROUNDS:-1}
INSTANCES=${INSTANCES:-3}
ROOM_SIZE=${ROOM_SIZE:-10}
source "$ROOT/bench/cluster-common.sh"
[ -x "$BIN/switchboard-storm" ] || { echo "no $BIN/switchboard-storm: cargo build -p switchboard-load" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
OUT=${OUT:-$(mktemp -d /tmp/switchboard-storm.XXXXXX)}
mkdir -p "$OUT"
REDIS_PORT=6499
echo "load before: $(uptime)"

declare -A INSTANCE_PID
start_instance() {
    "$BIN/switchboard" --listen "127.0.0.1:$((4620 + $1))" --log warn "${NO_LIMITS[@]}" \
        --redis-url "redis://127.0.0.1:$REDIS_PORT" >>"$OUT/instance-$1.log" 2>&1 &
    INSTANCE_PID[$1]=$!
    PIDS+=($!)
}

# One round, everything fresh: Redis, the instances, the clients, the deploy.
round() {
    local dir=$OUT/round-$1
    mkdir -p "$dir"
    redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --loglevel warning >>"$OUT/redis.log" 2>&1 &
    PIDS+=($!)
    sleep 0.5
    local addrs=()
    for i in $(seq 1 "$INSTANCES"); do
        start_instance "$i"
        addrs+=("127.0.0.1:$((4620 + i))")
    done
    for i in $(seq 1 "$INSTANCES"); do wait_up $((4620 + i)); done

    "$BIN/switchboard-storm" --instances "$(IFS=,; echo "${addrs[*]}")" --clients "$CLIENTS" \
        --room-size "$ROOM_SIZE" --ready-file "$dir/ready" >"$dir/storm.json" &
    local storm=$!
    PIDS+=($storm)
    for _ in $(seq 1 9000); do
        [ -e "$dir/ready" ] && break
        kill -0 "$storm" 2>/dev/null || { echo "switchboard-storm failed before attaching" >&2; exit 1; }
        sleep 0.1
    done
    [ -e "$dir/ready" ] || { echo "the clients did not attach in time" >&2; exit 1; }

    # The deploy: instance 1 stops (draining its sessions to the others) and starts again.
    redis-cli -p $REDIS_PORT config resetstat >/dev/null
    local deployed stopped
    deployed=$(date +%s.%N)
    kill -TERM "${INSTANCE_PID[1]}"
    wait "${INSTANCE_PID[1]}" || true
    stopped=$(date +%s.%N)
    start_instance 1
    wait_up 4621
    wait "$storm"
    echo "$stopped - $deployed" | bc >"$dir/sigterm_s"
    redis-cli -p $REDIS_PORT info commandstats | tr -d '\r' >"$dir/commandstats"
    echo "$(uptime)" >"$dir/uptime"
    cleanup
    PIDS=()
}

for r in $(seq 1 "$ROUNDS"); do
    echo "round $r/$ROUNDS" >&2
    round "$r"
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = []
for k in range(1, rounds + 1):
    d = os.path.join(out, f"round-{k}")
    r = json.load(open(os.path.join(d, "storm.json")))
    calls = {}
    for line in open(os.path.join(d, "commandstats")):
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            calls[name] = int(dict(f.split("=") for f in rest.split(","))["calls"])
    r["hgetall"] = calls.get("hgetall", 0)
    r["commands"] = sum(calls.values())
    r["sigterm_s"] = float(open(os.path.join(d, "sigterm_s")).read())
    r["load"] = open(os.path.join(d, "uptime")).read().split("load average:")[1].strip()
    rows.append(r)
r = rows[0]
print(f"{r['clients']:,} clients in rooms of {r['room_size']} on {r['instances']} instances")
print("| round | streams ended by the deploy | all back after | back p50 | back p99 | back max "
      "| refused tries | sessions lost | SIGTERM to exit | Redis commands (HGETALL) | load average after |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
def line(name, r):
    print(f"| {name} | {r['ended']:,.0f} | {r['all_back_s']:.2f} s | {r['back_p50_ms']:.0f} ms "
          f"| {r['back_p99_ms']:.0f} ms | {r['back_max_ms']:.0f} ms | {r['refused']:,.0f} "
          f"| {r['lost']:,.0f} | {r['sigterm_s']:.2f} s | {r['commands']:,.0f} ({r['hgetall']:,.0f}) "
          f"| {r.get('load', '')} |")
for k, r in enumerate(rows, 1):
    line(str(k), r)
    if r["unregistered"]:
        print(f"  round {k}: {r['unregistered']} clients never registered")
if len(rows) > 1:
    keys = ["ended", "all_back_s", "back_p50_ms", "back_p99_ms", "back_max_ms", "refused",
            "lost", "sigterm_s", "commands", "hgetall"]
    line("median", {k: statistics.median(r[k] for r in rows) for k in keys})
print("Redis commands during the deploy and the storm, round 1: " + ", ".join(
    f"{l.split(':')[0][8:]} {l.split('calls=')[1].split(',')[0]}"
    for l in open(os.path.join(out, "round-1", "commandstats")) if l.startswith("cmdstat_")))
PY
echo "load after: $(uptime)"
echo "logs: $OUT" >&2
