#!/usr/bin/env bash
# The six slowloris modes of slowloris.py against one binary started from a shell with the
# usual 1,024 open files (soft limit; `ULIMIT=-n` lowers the hard limit too), limits at their
# defaults; per mode: legitimate /healthz successes and the server's WARN lines.
#
#   bash bench/attacks/slowloris.sh target/release/switchboard
#   ULIMIT=-n bash bench/attacks/slowloris.sh target/release/switchboard
set -u
BIN=$(realpath "${1:-target/release/switchboard}")
PORT=${PORT:-47190}
ULIMIT=${ULIMIT:--Sn}
HERE=$(dirname "$0")
LOG=$(mktemp /tmp/slowloris.XXXXXX)
trap 'rm -f "$LOG"' EXIT
for mode in idle stalled trickle body keepalive stream; do
    bash -c "ulimit $ULIMIT 1024; exec \"$BIN\" --listen 127.0.0.1:$PORT" >"$LOG" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
    line=$(timeout 150 python3 "$HERE/slowloris.py" "$PORT" "$mode")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    echo "$line; WARN lines: $(grep -c WARN "$LOG")"
done
