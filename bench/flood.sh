#!/usr/bin/env bash
# One address floods, another is served: the per-address limits measured from outside.
#
#   bash bench/flood.sh [BINARY] [extra server flags...]
#   bash bench/flood.sh target/release/switchboard --helo-rate 0 --max-sessions-per-address 0
#                                                       # the same server with the limits off
#
# A flooder at 127.0.0.2 sends FLOOD joins (CONCURRENCY at a time, with curl) to a server
# capped at MAX_SESSIONS; then a user at 127.0.0.1 joins USERS times. Prints how many joins of
# each got 201, 429 and 503. Then one session sends BROADCASTS broadcasts of 60 KB as fast as
# it can and prints how many bytes per second were accepted: what one session can make the
# server store in (and send to) every other session.
# Loopback only. Needs curl.
set -euo pipefail

BIN=${1:-target/release/switchboard}
shift || true
PORT=${PORT:-4470}
FLOOD=${FLOOD:-3000}
CONCURRENCY=${CONCURRENCY:-32}
USERS=${USERS:-50}
MAX_SESSIONS=${MAX_SESSIONS:-2000}
BROADCASTS=${BROADCASTS:-200}
URL="http://127.0.0.1:$PORT"

"$BIN" --listen "127.0.0.1:$PORT" --log warn --max-sessions "$MAX_SESSIONS" \
    --session-ttl 600s --mailbox-bytes 67108864 "$@" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.1; done

join() { # join <source address> <count> <concurrency>: one status code per line
    seq 1 "$2" | xargs -P "$3" -I{} curl -s -o /dev/null -w '%{http_code}\n' \
        --max-time 10 --interface "$1" -H 'content-type: application/json' \
        -d '{"name":"someone"}' "$URL/helo"
}
tally() { sort | uniq -c | awk '{printf "%s×%s ", $1, $2} END {print ""}'; }

start=$(date +%s.%N)
echo "flood from 127.0.0.2: $(join 127.0.0.2 "$FLOOD" "$CONCURRENCY" | tally)"
echo "  in $(echo "$(date +%s.%N) - $start" | bc) s"
echo "user from 127.0.0.1:  $(join 127.0.0.1 "$USERS" 1 | tally)"

TOKEN=$(curl -s --interface 127.0.0.3 -H 'content-type: application/json' \
    -d '{"name":"loud"}' "$URL/helo" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
BODY=$(mktemp)
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -f "$BODY"' EXIT
printf '{"message":"%s"}' "$(head -c 60000 /dev/zero | tr '\0' x)" >"$BODY"
start=$(date +%s.%N)
codes=$(seq 1 "$BROADCASTS" | xargs -P 8 -I{} curl -s -o /dev/null -w '%{http_code}\n' \
    --max-time 10 -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    --data-binary "@$BODY" "$URL/broadcast")
secs=$(echo "$(date +%s.%N) - $start" | bc)
accepted=$(grep -c '^202$' <<<"$codes" || true)
echo "broadcasts of 60 KB from one session: $(tally <<<"$codes") in $secs s"
echo "  accepted: $(echo "$accepted * 60000 / $secs / 1048576" | bc -l | cut -c1-6) MiB/s per recipient"
