#!/usr/bin/env bash
# A helo flood with presence on, against 30,000 sessions: does a legitimate /response stall?
#
#   bash bench/attacks/presence-flood.sh target/release/switchboard [OUT]
#
# 1. Registers 30,000 sessions with presence off (O(N), seconds), keeps them with
#    --state-file, and restarts the server with presence on: every join now fans out
#    `new_user` to ~30,000 mailboxes.
# 2. A legitimate pair at 127.0.0.1; the recipient's stream is drained by curl.
# 3. Three rounds: 10 s of /response at 20/s (baseline), then 22 s of a helo flood from
#    127.0.0.2 (32 keep-alive connections) while the same probe runs; latencies, helo/s,
#    server CPU and RSS per round go to OUT (JSON files) and stdout.
# Limits are off (the flood is what they would stop); loopback only; needs python3, curl.
set -u
BIN=$(realpath "${1:-target/release/switchboard}")
D=$(cd "$(dirname "$0")" && pwd); cd "$D"
R=${2:-$(mktemp -d /tmp/presence-flood.XXXXXX)}; mkdir -p "$R"
PORT=${PORT:-4817}
ulimit -n 20000
health() { curl -s --max-time 10 http://127.0.0.1:$PORT/healthz; }
FLAGS="--listen 127.0.0.1:$PORT --log warn --max-sessions 100000 --session-ttl 900s \
  --helo-rate 0 --message-rate 0 --byte-rate 0 --max-sessions-per-address 0 --max-streams-per-address 0 \
  --state-file $R/state.json"
"$BIN" $FLAGS --presence false > "$R/server0.log" 2>&1 & SPID=$!
for i in $(seq 50); do health >/dev/null && break; sleep 0.2; done
timeout 900 python3 flood.py $PORT 127.0.0.1 32 --count 30000 "$R/register.json"
echo "registered: $(health)"; kill -TERM $SPID; wait $SPID
"$BIN" $FLAGS > "$R/server.log" 2>&1 & SPID=$!
trap 'kill $SPID 2>/dev/null; kill $CURL 2>/dev/null' EXIT
for i in $(seq 100); do health >/dev/null && break; sleep 0.2; done
echo "presence on: $(health)"
timeout 30 python3 probe.py $PORT pair "$R/pair.json" || exit 1
RID=$(python3 -c "import json;print(json.load(open('$R/pair.json'))['recipient']['id'])")
RTOK=$(python3 -c "import json;print(json.load(open('$R/pair.json'))['recipient']['token'])")
curl -sN --max-time 1200 "http://127.0.0.1:$PORT/events/$RID?token=$RTOK" > /dev/null & CURL=$!
sleep 1
for run in 1 2 3; do
  echo "== round $run: $(health)"
  timeout 40 python3 probe.py $PORT run "$R/pair.json" 10 20 "$R/base_$run.json"
  ./sample.sh $SPID 21 "$R/cpu_flood_$run.txt" & SAMP=$!
  timeout 60 python3 flood.py $PORT 127.0.0.2 32 --duration 22 "$R/flood_$run.json" & FL=$!
  sleep 1
  timeout 60 python3 probe.py $PORT run "$R/pair.json" 20 20 "$R/flood_lat_$run.json"
  wait $FL; wait $SAMP 2>/dev/null
  python3 cpu.py "$R/cpu_flood_$run.txt" | tee "$R/cpu_flood_$run.json"
  sleep 2
done
echo "results in $R"
