#!/usr/bin/env bash
# Side by side: one workload of the load generator against several switchboard binaries (and
# the floor, rawfan), alternating their order round by round, then the medians. For "did this
# change help", where bench/run.sh measures one binary against nchan.
#
#   bash bench/ab.sh /tmp/before /tmp/after                    # 1 Hz to 10,000 streams + floor
#   ROUNDS=5 bash bench/ab.sh /tmp/before /tmp/after
#   WORKLOAD="fanout --streams 10000 --broadcasts 200 --publishers 2 --window 64" FLOOR=0 \
#       bash bench/ab.sh /tmp/before /tmp/after               # saturated fanout
#   WORKLOAD="direct --pairs 64 --rate 0 --duration 10" FLOOR=0 bash bench/ab.sh ...
#   WORKLOAD="idle --streams 19000" FLOOR=0 bash bench/ab.sh ...           # memory per idle stream
#
# Each argument is a directory holding a release `switchboard` (copy it there: a binary that
# the next build overwrites would be measured twice). The generator is this checkout's
# `switchboard-load` (built here). The floor is built from ../shared/tools/rawfan as in run.sh
# and only makes sense for the 1 Hz fanout (it drops what does not fit a socket).
# Only loopback addresses are used; every run is bounded by the generator's --max-secs.
set -euo pipefail

main() {
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
WORKLOAD=${WORKLOAD:-fanout --streams 10000 --broadcasts 20 --rate 1}
FLOOR=${FLOOR:-1}
PORT=${PORT:-4410}
RAWFAN_SRC=${RAWFAN_SRC:-$ROOT/../shared/tools/rawfan/rawfan.c}
(($# > 0)) || { echo "usage: bash bench/ab.sh <dir with switchboard>..." >&2; exit 2; }

WORK=$(mktemp -d /tmp/switchboard-ab.XXXXXX)
SERVER_PID=""
trap 'stop; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

timeout 1800 cargo build --release -p switchboard-load >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
LOAD=$TARGET_DIR/release/switchboard-load
targets=("$@")
if [[ $FLOOR == 1 ]]; then
    cc -O2 -pthread -o "$WORK/rawfan" "$RAWFAN_SRC"
    targets+=(floor)
fi

NO_LIMITS=(--helo-rate 0 --message-rate 0 --byte-rate 0 --max-sessions-per-address 0
    --max-streams-per-address 0 --max-connections-per-address 0)
read -r -a workload <<<"$WORKLOAD"
: >"$WORK/results.txt"

for round in $(seq 1 "$ROUNDS"); do
    order=("${targets[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#targets[@]} - 1; i >= 0; i--)); do order+=("${targets[i]}"); done
    fi
    for target in "${order[@]}"; do
        if [[ $target == floor ]]; then
            "$WORK/rawfan" "$PORT" >/dev/null 2>&1 &
            SERVER_PID=$!
            args=(--target nchan --name floor --sub-url "http://127.0.0.1:$PORT/sub/{channel}"
                --pub-url "http://127.0.0.1:$PORT/pub/{channel}")
        else
            # Limits off; a build from before the limits existed (November's) has no flags.
            limits=()
            if "$target/switchboard" --help | grep -q -- --helo-rate; then limits=("${NO_LIMITS[@]}"); fi
            # Attach and listing limits came later (December).
            if "$target/switchboard" --help | grep -q -- --address-attach-rate; then
                limits+=(--session-attaches 0 --address-attach-rate 0 --list-rate 0)
            fi
            "$target/switchboard" --listen "127.0.0.1:$PORT" --presence false --log warn \
                "${limits[@]}" >>"$WORK/server.log" 2>&1 &
            SERVER_PID=$!
            args=(--url "http://127.0.0.1:$PORT")
        fi
        up
        line=$(timeout 1000 "$LOAD" "${args[@]}" --server-pid "$SERVER_PID" --max-secs 900 \
            --json "${workload[@]}" 2>>"$WORK/load.log") || true
        stop
        echo "$line" | python3 -c '
import json, sys
run = json.load(sys.stdin)
m = {x["name"]: x["value"] for x in run["metrics"]}
keys = ["deliveries_per_s", "sustained_per_s", "latency_p50_ms", "latency_p99_ms", "lost", "rss_per_stream_bytes", "server_cpu_s"]
print(sys.argv[1], sys.argv[2], " ".join(f"{k}={m[k]:.6g}" for k in keys if k in m))
' "$round" "$target" | tee -a "$WORK/results.txt"
    done
done

echo "medians of $ROUNDS rounds: $WORKLOAD"
python3 - "$WORK/results.txt" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    _, target, *pairs = line.split()
    for pair in pairs:
        key, value = pair.split("=")
        runs.setdefault(target, {}).setdefault(key, []).append(float(value))
for target, metrics in runs.items():
    print(target, " ".join(f"{k}={statistics.median(v):.6g}" for k, v in metrics.items()))
EOF
}

up() {
    # Waits up to 10 s for the server's port.
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server did not come up on $PORT" >&2
    return 1
}

stop() {
    # Stops the server this script started, by its pid, bounded.
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

main "$@"
