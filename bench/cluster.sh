#!/usr/bin/env bash
# The cost of cluster mode: the same fanout and direct-message workloads against one
# switchboard instance, and against a two-instance cluster over Redis with every message
# crossing instances (streams attached to B, POSTs sent to A), alternated over rounds; and the
# direct messages once more with sender and recipient on the same cluster instance.
# Prints medians and cluster/single ratios. Stops what it started, by pid.
#
#   bash bench/cluster.sh            # ROUNDS=3 STREAMS=2000 by default
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
STREAMS=${STREAMS:-2000}
source "$ROOT/bench/cluster-common.sh"
OUT=$(mktemp -d /tmp/switchboard-cluster.XXXXXX)
redis-server --port 6479 --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
PIDS+=($!)
sleep 0.5
"$BIN/switchboard" --listen 127.0.0.1:4601 --presence false --log warn "${NO_LIMITS[@]}" --redis-url redis://127.0.0.1:6479 &
A=$!; PIDS+=($A)
"$BIN/switchboard" --listen 127.0.0.1:4602 --presence false --log warn "${NO_LIMITS[@]}" --redis-url redis://127.0.0.1:6479 &
B=$!; PIDS+=($B)
"$BIN/switchboard" --listen 127.0.0.1:4603 --presence false --log warn "${NO_LIMITS[@]}" &
S=$!; PIDS+=($S)
wait_up 4601; wait_up 4602; wait_up 4603

load() { timeout 300 "$BIN/switchboard-load" --json --max-secs 240 "$@" >>"$OUT/results.jsonl"; }
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    load --label fanout-single --url http://127.0.0.1:4603 --server-pid "$S" \
        fanout --streams "$STREAMS" --broadcasts 300 --publishers 2 --window 64
    load --label fanout-cluster --url http://127.0.0.1:4602 --post-url http://127.0.0.1:4601 \
        --server-pid "$B" fanout --streams "$STREAMS" --broadcasts 300 --publishers 2 --window 64
    load --label direct-single --url http://127.0.0.1:4603 --server-pid "$S" \
        direct --pairs 50 --rate 2000 --duration 5
    load --label direct-cluster --url http://127.0.0.1:4602 --post-url http://127.0.0.1:4601 \
        --server-pid "$B" direct --pairs 50 --rate 2000 --duration 5
    load --label direct-cluster-local --url http://127.0.0.1:4602 --server-pid "$B" \
        direct --pairs 50 --rate 2000 --duration 5
done

python3 - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    run = json.loads(line)
    metrics = {m["name"]: m["value"] for m in run["metrics"]}
    runs.setdefault(run["label"], []).append(metrics)
def med(label, name):
    return statistics.median(r[name] for r in runs[label])
rows = [("fanout deliveries/s", "fanout", "deliveries_per_s"),
        ("fanout latency p99 (ms)", "fanout", "latency_p99_ms"),
        ("fanout events lost", "fanout", "lost"),
        ("direct latency p50 (ms)", "direct", "latency_p50_ms"),
        ("direct latency p99 (ms)", "direct", "latency_p99_ms"),
        ("direct sustained /s", "direct", "sustained_per_s"),
        ("direct events lost", "direct", "lost")]
print(f"| metric (median of {len(runs['fanout-single'])}) | single | cluster | cluster/single |")
print("|---|---:|---:|---:|")
for title, kind, name in rows:
    single, cluster = med(f"{kind}-single", name), med(f"{kind}-cluster", name)
    ratio = f"{cluster / single:.2f}" if single else "-"
    print(f"| {title} | {single:,.3f} | {cluster:,.3f} | {ratio} |")
# Sender and recipient on the same instance: the direct path without a second instance.
for title, _, name in rows[3:]:
    single, local = med("direct-single", name), med("direct-cluster-local", name)
    ratio = f"{local / single:.2f}" if single else "-"
    print(f"| {title}, same instance | {single:,.3f} | {local:,.3f} | {ratio} |")
PY
echo "raw results: $OUT/results.jsonl" >&2
