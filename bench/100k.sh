#!/usr/bin/env bash
# The 100,000-stream benchmark (issue 27): switchboard instances in cluster mode on loopback
# over REDIS=one (one redis-server) or REDIS=cluster (a local Redis Cluster, three masters
# with a replica each, sharded pub/sub), STREAMS streams spread over INSTANCES instances,
# then one of two workloads:
# - WORKLOAD=broadcast: one broadcast a second (RATE) to all of them for BROADCASTS seconds,
#   sent to the first instance and carried to the others by Redis;
# - WORKLOAD=rooms: STREAMS / 10 rooms of 10 and room broadcasts at increasing rates
#   (ROOM_RATES, ROOM_STEP_SECS each; `switchboard-load rooms`): the highest rate whose p99
#   is within 50 ms with nothing lost. Each generator worker holds whole rooms on one
#   instance, as a balancer that pins a room's clients would, so a room's traffic stays on
#   the instance that homes it.
# Reports the delivery latency (p50, p99, max), what was lost, the RSS of each instance and
# of Redis and per stream, and Redis's CPU (INFO cpu, every node) and commands (INFO
# commandstats, the masters) between the first broadcast and the last delivery. Then, in the
# same run and under the same load, the same workload against one instance without Redis at
# BASELINE streams and, for the broadcast workload, against the floor (rawfan, a bare epoll
# writer). Not CI. Stops what it started, by pid.
#
# No proxy in front: a proxy holds two file descriptors per stream (client side and upstream)
# and one process may hold at most 20,000 here, so nginx would need more worker processes
# than streams allow to be measured on two cores, and would add its own hop to the latency.
# The load generator balances instead: each of its worker processes (at most PER_WORKER
# streams, under the same cap) registers and attaches all its sessions on one instance in
# turn, as a balancer pinning a client would (`switchboard-load --url A,B,…`). Each instance
# holds STREAMS / INSTANCES streams (about 16,700 of its ~19,000 possible).
#
#   bash bench/100k.sh                               # REDIS=one WORKLOAD=broadcast STREAMS=100000 INSTANCES=6
#   REDIS=cluster bash bench/100k.sh                 # the same over a three-master Redis Cluster
#   WORKLOAD=rooms REDIS=cluster bash bench/100k.sh  # 10,000 rooms of 10
#   STREAMS=20000 BASELINE=0 bash bench/100k.sh      # a quicker look, no single-instance run
#   SHARD_ROOMS=false REDIS=cluster WORKLOAD=rooms bash bench/100k.sh   # every room in the deployment's slot
#
# Over a Redis Cluster the report also gives each master's share of Redis's CPU and commands:
# with rooms sharded (SHARD_ROOMS=true, `--redis-shard-rooms`, the default) a room workload
# spreads over the masters; with SHARD_ROOMS=false it is all on the deployment's.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STREAMS=${STREAMS:-100000}
INSTANCES=${INSTANCES:-6}
BROADCASTS=${BROADCASTS:-30}
RATE=${RATE:-1}
PER_WORKER=${PER_WORKER:-17000}
BASELINE=${BASELINE:-10000}
REDIS=${REDIS:-one}
SHARD_ROOMS=${SHARD_ROOMS:-true}
WORKLOAD=${WORKLOAD:-broadcast}
ROOM_RATES=${ROOM_RATES:-1000,2000,5000,10000,20000,30000,50000,70000}
ROOM_STEP_SECS=${ROOM_STEP_SECS:-5}
RAWFAN_SRC=${RAWFAN_SRC:-$ROOT/../shared/tools/rawfan/rawfan.c}
case $REDIS in one | cluster) ;; *) echo "REDIS is one or cluster" >&2; exit 2 ;; esac
case $WORKLOAD in broadcast | rooms) ;; *) echo "WORKLOAD is broadcast or rooms" >&2; exit 2 ;; esac
source "$ROOT/bench/cluster-common.sh"
ulimit -n "$(ulimit -Hn)"
OUT=${OUT:-$(mktemp -d /tmp/switchboard-100k.XXXXXX)}
mkdir -p "$OUT"
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
echo "load before: $(uptime)" >"$OUT/uptime"

# Every node counts for CPU and memory; only the masters' commands count (a replica replays
# its master's writes: no work the instances asked for).
REDIS_PIDS=()
if [ "$REDIS" = one ]; then
    REDIS_PORTS=(6489)
    MASTERS=(6489)
    redis-server --port 6489 --bind 127.0.0.1 --save '' --appendonly no --loglevel warning >>"$OUT/redis.log" 2>&1 &
    REDIS_PIDS+=($!)
    REDIS_URL=redis://127.0.0.1:6489
else
    REDIS_PORTS=(6491 6492 6493 6494 6495 6496)
    for port in "${REDIS_PORTS[@]}"; do
        redis-server --port "$port" --cluster-port $((port + 100)) --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file "$OUT/nodes-$port.conf" --cluster-node-timeout 1000 --dir "$OUT" \
            --save '' --appendonly no --loglevel warning >>"$OUT/redis.log" 2>&1 &
        REDIS_PIDS+=($!)
    done
    REDIS_URL="redis+cluster://$(printf '127.0.0.1:%s,' "${REDIS_PORTS[@]}")"
    REDIS_URL=${REDIS_URL%,}
fi
PIDS+=("${REDIS_PIDS[@]}")
for port in "${REDIS_PORTS[@]}"; do
    for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
if [ "$REDIS" = cluster ]; then
    # shellcheck disable=SC2046 # one argument per node
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${REDIS_PORTS[@]}") --cluster-replicas 1 \
        --cluster-yes >>"$OUT/redis.log"
    for port in "${REDIS_PORTS[@]}"; do
        for _ in $(seq 1 100); do
            redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok' && break
            sleep 0.1
        done
    done
    mapfile -t MASTERS < <(for port in "${REDIS_PORTS[@]}"; do
        redis-cli -p "$port" role | head -1 | grep -qx master && echo "$port"; done)
fi
echo "redis: $REDIS_URL, masters ${MASTERS[*]}" >>"$OUT/uptime"

URLS=()
SERVERS=()
# A session lives 300 s unattached (not 30): registering 100,000 sessions before the first
# attach takes more than 30 s on a loaded machine, and the first would expire meanwhile.
for i in $(seq 1 "$INSTANCES"); do
    "$BIN/switchboard" --listen "127.0.0.1:$((4700 + i))" --presence false --session-ttl 300s \
        --log warn "${NO_LIMITS[@]}" --redis-url "$REDIS_URL" --redis-shard-rooms "$SHARD_ROOMS" \
        >>"$OUT/instance-$i.log" 2>&1 &
    PIDS+=($!)
    SERVERS+=($!)
    URLS+=("http://127.0.0.1:$((4700 + i))")
done
for i in $(seq 1 "$INSTANCES"); do wait_up $((4700 + i)); done
sleep 1
# Idle figures, before any stream: the per-stream memory is (attached - idle) / streams.
for pid in "${SERVERS[@]}" "${REDIS_PIDS[@]}"; do rss_kb "$pid"; done >"$OUT/rss-idle"

# What the generator runs at each phase: RSS of every process and Redis's CPU at `attached`
# (then the command counters are reset), and both again with the commands at `drained`.
cat >"$OUT/phase.sh" <<EOF
#!/usr/bin/env bash
set -eu
for pid in ${SERVERS[*]} ${REDIS_PIDS[*]}; do awk '/^VmRSS:/ { print \$2 }' /proc/\$pid/status; done >"$OUT/rss-\$1"
for port in ${REDIS_PORTS[*]}; do redis-cli -p \$port info cpu | tr -d '\r' | grep -E '^used_cpu_(sys|user):'; done >"$OUT/cpu-\$1"
case \$1 in
attached) for port in ${REDIS_PORTS[*]}; do redis-cli -p \$port config resetstat >/dev/null; done ;;
drained) for port in ${MASTERS[*]}; do echo "# master \$port"; redis-cli -p \$port info commandstats | tr -d '\r'; done >"$OUT/commandstats" ;;
esac
EOF

# The workload at $1 streams, as switchboard-load's subcommand and its arguments.
workload() {
    if [ "$WORKLOAD" = broadcast ]; then
        echo fanout --streams "$1" --broadcasts "$BROADCASTS" --rate "$RATE" --drain-timeout 30
    else
        echo rooms --rooms $(($1 / 10)) --room-size 10 --rates "$ROOM_RATES" --step-secs "$ROOM_STEP_SECS"
    fi
}

# shellcheck disable=SC2046 # the workload's words are meant to split
"$BIN/switchboard-load" --json --quiet --max-secs 2400 --label "cluster-$WORKLOAD-$STREAMS" \
    --url "$(IFS=,; echo "${URLS[*]}")" --server-pid "$(IFS=,; echo "${SERVERS[*]}")" \
    --max-per-worker "$PER_WORKER" --attach-timeout 300 --phase-cmd "bash $OUT/phase.sh" \
    $(workload "$STREAMS") >"$OUT/cluster.json" || echo "the cluster run failed (exit $?): see $OUT/cluster.json" >&2
cleanup
PIDS=()
echo "load after the cluster run: $(uptime)" >>"$OUT/uptime"

if [ "$BASELINE" -gt 0 ]; then
    "$BIN/switchboard" --listen 127.0.0.1:4700 --presence false --log warn "${NO_LIMITS[@]}" \
        >>"$OUT/single.log" 2>&1 &
    SINGLE=$!
    PIDS+=($SINGLE)
    wait_up 4700
    # shellcheck disable=SC2046
    "$BIN/switchboard-load" --json --quiet --label "single-$WORKLOAD-$BASELINE" --url http://127.0.0.1:4700 \
        --server-pid "$SINGLE" $(workload "$BASELINE") >"$OUT/single.json" ||
        echo "the single-instance run failed (exit $?)" >&2
    cleanup
    PIDS=()
    echo "load after the single-instance run: $(uptime)" >>"$OUT/uptime"
    if [ "$WORKLOAD" = broadcast ] && [ -r "$RAWFAN_SRC" ] && cc -O2 -pthread -o "$OUT/rawfan" "$RAWFAN_SRC"; then
        "$OUT/rawfan" 4790 >>"$OUT/rawfan.log" 2>&1 &
        FLOOR=$!
        PIDS+=($FLOOR)
        for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/4790) 2>/dev/null && break; sleep 0.1; done
        # shellcheck disable=SC2046
        "$BIN/switchboard-load" --json --quiet --label "floor-$BASELINE" --target nchan --name floor \
            --sub-url "http://127.0.0.1:4790/sub/{channel}" --pub-url "http://127.0.0.1:4790/pub/{channel}" \
            --server-pid "$FLOOR" $(workload "$BASELINE") >"$OUT/floor.json" ||
            echo "the floor run failed (exit $?)" >&2
        cleanup
        PIDS=()
        echo "load after the floor run: $(uptime)" >>"$OUT/uptime"
    fi
fi

REDIS_PORT_LIST="${REDIS_PORTS[*]}" python3 - "$OUT" "$INSTANCES" "$REDIS" "$WORKLOAD" "${#REDIS_PORTS[@]}" <<'PY'
import json, os, sys
out, instances, redis, workload, nodes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
def run(name):
    path = os.path.join(out, name)
    if not os.path.exists(path) or not open(path).read().strip():
        return None
    r = json.loads(open(path).read().strip().splitlines()[-1])
    m = {x["name"]: x["value"] for x in r["metrics"]}
    # The rooms ladder: what every step delivered and sent, for the per-message figures.
    if r.get("steps"):
        m["received"] = sum(s["received"] for s in r["steps"])
        m["broadcasts_ok"] = sum(s["broadcasts"] for s in r["steps"])
        m["lost"] = sum(s["lost"] for s in r["steps"])
    return r, m
def nums(name):
    return [int(x) for x in open(os.path.join(out, name)).read().split()]
def cpu(name):
    return sum(float(l.split(":")[1]) for l in open(os.path.join(out, name)))
cluster = run("cluster.json")
if cluster is None:
    sys.exit("no result from the cluster run")
r, m = cluster
streams = int(m.get("attached", 0))
backplane = "one Redis" if redis == "one" else "a Redis Cluster (3 masters + 3 replicas)"
print(f"{streams:,} streams attached on {instances} instances over {backplane}, {workload} "
      f"(ok: {r['ok']}; {'; '.join(r.get('failures', []) + r.get('notes', []))})")
print()
cols = [("", None), (f"{instances} instances + Redis, {streams:,} streams", m)]
for name, title in (("single.json", "1 instance, no Redis"), ("floor.json", "floor (rawfan)")):
    other = run(name)
    if other:
        cols.append((f"{title}, {int(other[1].get('attached', 0)):,} streams", other[1]))
ms = lambda v: f"{v:.1f} ms"
n = lambda v: f"{v:,.0f}"
secs = lambda v: f"{v:.2f} s"
if workload == "broadcast":
    rows = [("delivery latency p50", ms, "latency_p50_ms"), ("delivery latency p99", ms, "latency_p99_ms"),
            ("delivery latency max", ms, "latency_max_ms"), ("broadcasts accepted", n, "broadcasts_ok"),
            ("deliveries", n, "received"), ("lost", n, "lost"),
            ("server CPU during the broadcasts", secs, "server_cpu_s"),
            ("generator CPU during the broadcasts", secs, "gen_cpu_s")]
else:
    rows = [("highest rate with p99 ≤ 50 ms, nothing lost (/s)", n, "max_rate_per_s"),
            ("sent at that rate (/s)", n, "max_rate_sent_per_s"),
            ("deliveries at that rate (/s)", n, "max_rate_deliveries_per_s"),
            ("p99 at that rate", ms, "max_rate_latency_p99_ms"),
            ("room broadcasts, every step", n, "broadcasts_ok"), ("deliveries, every step", n, "received"),
            ("lost, every step", n, "lost"), ("server CPU over the ladder", secs, "server_cpu_s")]
print("| " + " | ".join(c for c, _ in cols) + " |")
print("|---" + "|---:" * (len(cols) - 1) + "|")
for title, fmt, key in rows:
    cells = [fmt(src[key]) if src.get(key) is not None else "-" for _, src in cols[1:]]
    print(f"| {title} | " + " | ".join(cells) + " |")
print()
idle, attached = nums("rss-idle"), nums("rss-attached")
print("| process | RSS idle | RSS, streams attached | per stream |")
print("|---|---:|---:|---:|")
names = [f"instance {i + 1}" for i in range(instances)] + [f"redis-server {i + 1}" for i in range(nodes)]
per = streams / instances
for name, a, b in zip(names, idle, attached):
    share = per if name.startswith("instance") else streams
    print(f"| {name} | {a / 1024:.1f} MiB | {b / 1024:.1f} MiB | {(b - a) * 1024 / max(share, 1):,.0f} B |")
grow = sum(attached) - sum(idle)
print(f"| all | {sum(idle) / 1024:.1f} MiB | {sum(attached) / 1024:.1f} MiB | {grow * 1024 / max(streams, 1):,.0f} B |")
print()
calls, per_master, master = {}, {}, None
for line in open(os.path.join(out, "commandstats")):
    if line.startswith("# master "):
        master = line.split()[2]
    elif line.startswith("cmdstat_"):
        name, rest = line[len("cmdstat_"):].split(":", 1)
        fields = dict(f.split("=") for f in rest.split(","))
        calls[name] = calls.get(name, 0) + int(fields["calls"])
        per_master[master] = per_master.get(master, 0) + int(fields["calls"])
redis_cpu = cpu("cpu-drained") - cpu("cpu-attached")
def node_cpu(name):
    lines = open(os.path.join(out, name)).read().split()
    return [float(a.split(":")[1]) + float(b.split(":")[1]) for a, b in zip(lines[::2], lines[1::2])]
if nodes > 1:
    spent = [b - a for a, b in zip(node_cpu("cpu-attached"), node_cpu("cpu-drained"))]
    ports = os.environ["REDIS_PORT_LIST"].split()
    print("Redis CPU per node (s): " + ", ".join(f"{p} {s:.2f}" for p, s in zip(ports, spent)))
    print("Commands per master: " + ", ".join(f"{p} {c:,}" for p, c in sorted(per_master.items())))
total = sum(calls.values())
received = max(m.get("received", 0), 1)
print(f"Redis between the first broadcast and the last delivery: {redis_cpu:.2f} s CPU over {nodes} "
      f"node(s), {total:,} commands on the masters ({total / max(m.get('broadcasts_ok', 1), 1):,.2f} per "
      f"broadcast, {total / received:.5f} per delivered message): "
      + ", ".join(f"{k} {v:,}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])))
PY
cat "$OUT/uptime"
echo "raw results: $OUT" >&2
