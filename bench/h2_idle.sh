#!/usr/bin/env bash
# Memory per idle stream: plain HTTP/1.1 (a connection per stream, `switchboard-load idle`)
# beside HTTP/2 over TLS (`--tls-cert`; `switchboard-h2-idle`, N streams over C connections).
# Each round starts each server fresh; prints every run and the medians.
#
#   bash bench/h2_idle.sh                       # 3 rounds, 10,000 streams, 100 h2 connections
#   ROUNDS=5 N=19000 CONNECTIONS=100 bash bench/h2_idle.sh
#
# Builds the release binaries (switchboard, switchboard-load, switchboard-h2-idle). Loopback
# only; stops what it started, by pid.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
N=${N:-10000}
CONNECTIONS=${CONNECTIONS:-100}
PORT=${PORT:-4470}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
OUT=$(mktemp -d /tmp/switchboard-h2-idle.XXXXXX)
SERVER_PID=""
trap '[[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$OUT"' EXIT

echo "building release binaries" >&2
timeout 1800 cargo build --release -p switchboard -p switchboard-load >&2
SB=$TARGET_DIR/release/switchboard
LOAD=$TARGET_DIR/release/switchboard-load
H2=$TARGET_DIR/release/switchboard-h2-idle
"$H2" cert "$OUT/tls"

NO_LIMITS=(--helo-rate 0 --message-rate 0 --byte-rate 0 --max-sessions-per-address 0 --max-streams-per-address 0 --max-connections-per-address 0
    --session-attaches 0 --address-attach-rate 0 --list-rate 0)

start() {
    # start <http|https> [flags...]: a fresh server, presence off (as bench/run.sh), until it
    # answers.
    local scheme=$1
    shift
    "$SB" --listen "127.0.0.1:$PORT" --presence false --log warn "${NO_LIMITS[@]}" "$@" \
        >>"$OUT/switchboard.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        curl -fsSk -o /dev/null --max-time 1 "$scheme://127.0.0.1:$PORT/healthz" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "switchboard did not start; see $OUT/switchboard.log" >&2
    exit 1
}
stop() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
per_stream() {
    # The rss_per_stream_bytes of a JSON line (switchboard-load's metrics list, or a flat key).
    python3 -c '
import json, sys
line = json.loads(sys.stdin.read())
if "metrics" in line:
    print(next(m["value"] for m in line["metrics"] if m["name"] == "rss_per_stream_bytes"))
else:
    print(line["rss_per_stream_bytes"])'
}

plain=()
h2=()
for round in $(seq 1 "$ROUNDS"); do
    start http
    line=$(timeout 600 "$LOAD" --json --server-pid "$SERVER_PID" --url "http://127.0.0.1:$PORT" \
        idle --streams "$N" --settle 3 --hold 5 2>>"$OUT/load.log")
    stop
    plain+=("$(per_stream <<<"$line")")
    start https --tls-cert "$OUT/tls/cert.pem" --tls-key "$OUT/tls/key.pem"
    line=$(timeout 600 "$H2" run --addr "127.0.0.1:$PORT" --ca "$OUT/tls/ca.pem" \
        --server-pid "$SERVER_PID" --streams "$N" --connections "$CONNECTIONS" --settle 3 --hold 5)
    stop
    h2+=("$(per_stream <<<"$line")")
    echo "round $round: HTTP/1.1 ${plain[-1]} B, HTTP/2 ${h2[-1]} B per idle stream" >&2
done
python3 - "$N" "$CONNECTIONS" "${plain[*]}" "${h2[*]}" <<'EOF'
import statistics, sys
n, c, plain, h2 = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
med = lambda xs: statistics.median(float(x) for x in xs)
print(f"idle {n} streams, RSS per stream, median of {len(plain)}:")
print(f"  plain HTTP/1.1, a connection each: {med(plain):,.0f} B  (runs: {', '.join(f'{float(x):,.0f}' for x in plain)})")
print(f"  HTTP/2 over TLS, {c} connections:  {med(h2):,.0f} B  (runs: {', '.join(f'{float(x):,.0f}' for x in h2)})")
EOF
