#!/usr/bin/env bash
# The 100,000-stream benchmark (issue 27): one redis-server and INSTANCES switchboard
# instances in cluster mode on loopback, STREAMS streams spread over the instances, then one
# broadcast a second (RATE) to all of them for BROADCASTS seconds, sent to the first instance
# and carried to the others by Redis. Reports the delivery latency to every stream (p50, p99,
# max), what was lost, the RSS of each instance and of Redis and per stream, and Redis's CPU
# (INFO cpu) and commands (INFO commandstats) between the first broadcast and the last
# delivery. Then the same workload against one instance without Redis at BASELINE streams
# (the single-instance figure BENCHMARKS.md reports), in the same run and under the same
# load. Not CI. Stops what it started, by pid.
#
# No proxy in front: a proxy holds two file descriptors per stream (client side and upstream)
# and one process may hold at most 20,000 here, so nginx would need more worker processes
# than streams allow to be measured on two cores, and would add its own hop to the latency.
# The load generator balances instead: each of its worker processes (at most PER_WORKER
# streams, under the same cap) registers and attaches all its sessions on one instance in
# turn, as a balancer pinning a client would (`switchboard-load --url A,B,…`). Each instance
# holds STREAMS / INSTANCES streams (about 16,700 of its ~19,000 possible).
#
#   bash bench/100k.sh              # STREAMS=100000 INSTANCES=6 BROADCASTS=30 RATE=1 BASELINE=10000
#   STREAMS=20000 BASELINE=0 bash bench/100k.sh   # a quicker look, no single-instance run
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STREAMS=${STREAMS:-100000}
INSTANCES=${INSTANCES:-6}
BROADCASTS=${BROADCASTS:-30}
RATE=${RATE:-1}
PER_WORKER=${PER_WORKER:-17000}
BASELINE=${BASELINE:-10000}
source "$ROOT/bench/cluster-common.sh"
ulimit -n "$(ulimit -Hn)"
OUT=${OUT:-$(mktemp -d /tmp/switchboard-100k.XXXXXX)}
mkdir -p "$OUT"
REDIS_PORT=6489
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
echo "load before: $(uptime)" >"$OUT/uptime"

redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --loglevel warning >>"$OUT/redis.log" 2>&1 &
REDIS=$!
PIDS+=($REDIS)
sleep 0.5
URLS=()
SERVERS=()
# A session lives 300 s unattached (not 30): registering 100,000 sessions before the first
# attach takes more than 30 s on a loaded machine, and the first would expire meanwhile.
for i in $(seq 1 "$INSTANCES"); do
    "$BIN/switchboard" --listen "127.0.0.1:$((4700 + i))" --presence false --session-ttl 300s \
        --log warn "${NO_LIMITS[@]}" --redis-url "redis://127.0.0.1:$REDIS_PORT" >>"$OUT/instance-$i.log" 2>&1 &
    PIDS+=($!)
    SERVERS+=($!)
    URLS+=("http://127.0.0.1:$((4700 + i))")
done
for i in $(seq 1 "$INSTANCES"); do wait_up $((4700 + i)); done
sleep 1
# Idle figures, before any stream: the per-stream memory is (attached - idle) / streams.
for pid in "${SERVERS[@]}" "$REDIS"; do rss_kb "$pid"; done >"$OUT/rss-idle"

# What the generator runs at each phase: RSS of every process and Redis's CPU at `attached`
# (then the command counters are reset), and both again with the commands at `drained`.
cat >"$OUT/phase.sh" <<EOF
#!/usr/bin/env bash
set -eu
for pid in ${SERVERS[*]} $REDIS; do awk '/^VmRSS:/ { print \$2 }' /proc/\$pid/status; done >"$OUT/rss-\$1"
redis-cli -p $REDIS_PORT info cpu | tr -d '\r' | grep -E '^used_cpu_(sys|user):' >"$OUT/cpu-\$1"
case \$1 in
attached) redis-cli -p $REDIS_PORT config resetstat >/dev/null ;;
drained) redis-cli -p $REDIS_PORT info commandstats | tr -d '\r' >"$OUT/commandstats" ;;
esac
EOF

"$BIN/switchboard-load" --json --quiet --max-secs 2400 --label "cluster-$STREAMS" \
    --url "$(IFS=,; echo "${URLS[*]}")" --server-pid "$(IFS=,; echo "${SERVERS[*]}")" \
    --max-per-worker "$PER_WORKER" --attach-timeout 300 --phase-cmd "bash $OUT/phase.sh" \
    fanout --streams "$STREAMS" --broadcasts "$BROADCASTS" --rate "$RATE" --drain-timeout 30 \
    >"$OUT/cluster.json" || echo "the cluster run failed (exit $?): see $OUT/cluster.json" >&2
cleanup
PIDS=()
echo "load after the cluster run: $(uptime)" >>"$OUT/uptime"

if [ "$BASELINE" -gt 0 ]; then
    "$BIN/switchboard" --listen 127.0.0.1:4700 --presence false --log warn "${NO_LIMITS[@]}" \
        >>"$OUT/single.log" 2>&1 &
    SINGLE=$!
    PIDS+=($SINGLE)
    wait_up 4700
    "$BIN/switchboard-load" --json --quiet --label "single-$BASELINE" --url http://127.0.0.1:4700 \
        --server-pid "$SINGLE" fanout --streams "$BASELINE" --broadcasts "$BROADCASTS" \
        --rate "$RATE" >"$OUT/single.json" || echo "the single-instance run failed (exit $?)" >&2
    echo "load after the single-instance run: $(uptime)" >>"$OUT/uptime"
fi

python3 - "$OUT" "$INSTANCES" <<'PY'
import json, os, sys
out, instances = sys.argv[1], int(sys.argv[2])
def run(name):
    path = os.path.join(out, name)
    if not os.path.exists(path) or not open(path).read().strip():
        return None
    r = json.loads(open(path).read().strip().splitlines()[-1])
    return r, {m["name"]: m["value"] for m in r["metrics"]}
def nums(name):
    return [int(x) for x in open(os.path.join(out, name)).read().split()]
def cpu(name):
    return sum(float(l.split(":")[1]) for l in open(os.path.join(out, name)))
cluster, single = run("cluster.json"), run("single.json")
if cluster is None:
    sys.exit("no result from the cluster run")
r, m = cluster
streams = int(m.get("attached", 0))
idle, attached, drained = nums("rss-idle"), nums("rss-attached"), nums("rss-drained")
print(f"{streams:,} streams attached on {instances} instances (ok: {r['ok']}; {'; '.join(r.get('failures', []) + r.get('notes', []))})")
print()
cols = ["", f"{instances} instances + Redis, {streams:,} streams"]
rows = []
def row(title, fmt, key, src=m, other=None):
    rows.append((title, fmt(src.get(key)) if src.get(key) is not None else "-",
                 fmt(other.get(key)) if other and other.get(key) is not None else "-"))
sm = single[1] if single else None
if sm:
    cols.append(f"1 instance, no Redis, {int(sm.get('attached', 0)):,} streams")
ms = lambda v: f"{v:.1f} ms"
n = lambda v: f"{v:,.0f}"
row("delivery latency p50", ms, "latency_p50_ms", m, sm)
row("delivery latency p99", ms, "latency_p99_ms", m, sm)
row("delivery latency max", ms, "latency_max_ms", m, sm)
row("broadcasts accepted", n, "broadcasts_ok", m, sm)
row("deliveries", n, "received", m, sm)
row("lost", n, "lost", m, sm)
row("server CPU during the broadcasts", lambda v: f"{v:.2f} s", "server_cpu_s", m, sm)
row("generator CPU during the broadcasts", lambda v: f"{v:.2f} s", "gen_cpu_s", m, sm)
print("| " + " | ".join(cols) + " |")
print("|---" + "|---:" * (len(cols) - 1) + "|")
for t, a, b in rows:
    print(f"| {t} | {a} |" + (f" {b} |" if sm else ""))
print()
print("| process | RSS idle | RSS, streams attached | per stream |")
print("|---|---:|---:|---:|")
names = [f"instance {i + 1}" for i in range(instances)] + ["redis-server"]
per = streams / instances
for name, a, b in zip(names, idle, attached):
    share = per if name != "redis-server" else streams
    print(f"| {name} | {a / 1024:.1f} MiB | {b / 1024:.1f} MiB | {(b - a) * 1024 / share:,.0f} B |")
grow = sum(attached) - sum(idle)
print(f"| all | {sum(idle) / 1024:.1f} MiB | {sum(attached) / 1024:.1f} MiB | {grow * 1024 / max(streams, 1):,.0f} B |")
print()
calls = {}
for line in open(os.path.join(out, "commandstats")):
    if line.startswith("cmdstat_"):
        name, rest = line[len("cmdstat_"):].split(":", 1)
        fields = dict(f.split("=") for f in rest.split(","))
        calls[name] = int(fields["calls"])
redis_cpu = cpu("cpu-drained") - cpu("cpu-attached")
total = sum(calls.values())
received = max(m.get("received", 0), 1)
print(f"Redis between the first broadcast and the last delivery: {redis_cpu:.2f} s CPU, "
      f"{total:,} commands ({total / max(m.get('broadcasts_ok', 1), 1):,.1f} per broadcast, "
      f"{total / received:.5f} per delivered message): "
      + ", ".join(f"{k} {v:,}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])))
PY
cat "$OUT/uptime"
echo "raw results: $OUT" >&2
