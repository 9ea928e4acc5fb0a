#!/usr/bin/env bash
# Peak heap of one switchboard binary under heaptrack, holding N idle connections of one kind:
# where RSS (bench/ab.sh) says how much, this says which allocations (heaptrack_print, or
# heaptrack_gui on the .zst it leaves). Not CI.
#
#   bash bench/heap.sh /tmp/ab/after/switchboard                 # 5,000 idle streams
#   KIND=keepalive bash bench/heap.sh /tmp/ab/after/switchboard  # 2,000 keep-alive connections
#
# KIND=streams: `switchboard-load idle` (each stream on a connection of its own, the lean path).
# KIND=keepalive: N connections that each sent one `GET /healthz` and wait, served by hyper
# (what a browser's connection holds between requests). Needs heaptrack (apt-get install
# heaptrack). Loopback only; stops what it started, by pid.
set -euo pipefail

BIN=${1:?usage: bash bench/heap.sh <switchboard binary>}
KIND=${KIND:-streams}
PORT=${PORT:-4470}
case $KIND in
    streams) N=${N:-5000} ;;
    keepalive) N=${N:-2000} ;;
    *) echo "KIND is streams or keepalive" >&2; exit 2 ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/switchboard-heap.XXXXXX)}
command -v heaptrack >/dev/null || { echo "heaptrack is not installed" >&2; exit 1; }

limits=(--helo-rate 0 --message-rate 0 --byte-rate 0 --max-sessions-per-address 0
    --max-streams-per-address 0 --max-connections-per-address 0 --session-attaches 0
    --address-attach-rate 0 --list-rate 0)
heaptrack -o "$OUT/heap" "$BIN" --listen "127.0.0.1:$PORT" --presence false --log warn \
    "${limits[@]}" >"$OUT/heaptrack.log" 2>&1 &
WRAPPER=$!
for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
SERVER=$(pgrep -f "^$BIN --listen 127.0.0.1:$PORT" | head -1)
trap 'kill -INT "$SERVER" 2>/dev/null || true' EXIT

if [ "$KIND" = streams ]; then
    (cd "$ROOT" && timeout 1800 cargo build --release -q -p switchboard-load)
    timeout 300 "$ROOT/target/release/switchboard-load" --url "http://127.0.0.1:$PORT" \
        --max-secs 200 idle --streams "$N" --hold 2 >"$OUT/load.txt" 2>&1
else
    timeout 300 python3 - "$PORT" "$N" <<'EOF'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    held.append(s)
for s in held:
    s.settimeout(10)
    assert s.recv(4096).startswith(b"HTTP/1.1 "), "no answer"
time.sleep(2)
EOF
fi

kill -INT "$SERVER"
wait "$WRAPPER" || true
trap - EXIT
peak=$(heaptrack_print -f "$OUT/heap.zst" 2>/dev/null | sed -n 's/^peak heap memory consumption: //p')
echo "$KIND, $N: peak heap $peak ($BIN); heaptrack's file: $OUT/heap.zst"
