#!/usr/bin/env bash
# Fuzz the API against openapi.yaml with schemathesis (needs PyPI; not part of CI).
# Starts the debug binary on loopback with the server API on and the rate limits off, joins
# sessions for tokens, then runs a bounded schemathesis pass in three steps: everything but the
# stream (an endless SSE response) and the two routes that end sessions, the stream, then those two.
# Usage: bench/schemathesis.sh [max-examples per operation, default 100]; exits non-zero on a finding.
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLES=${1:-100}
TIME=${TIME:-180} # seconds for the first step; the others get less
PORT=${PORT:-4517}
BASE="http://127.0.0.1:$PORT"
WORK=target/schemathesis
mkdir -p "$WORK"

if [ ! -x target/st/bin/schemathesis ]; then
  python3 -m venv target/st
  target/st/bin/pip install -q schemathesis
fi
cargo build -q

printf 'schemathesis-api-key-0123456789abcdef' > "$WORK/api-key"
target/debug/switchboard --listen "127.0.0.1:$PORT" --api-key-file "$WORK/api-key" \
  --helo-rate 0 --message-rate 0 --byte-rate 0 --session-attaches 0 \
  --address-attach-rate 0 --list-rate 0 --max-sessions-per-address 0 \
  --max-streams-per-address 0 --max-connections-per-address 0 \
  --session-ttl 1h --log warn > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "$BASE/healthz" > /dev/null && break; sleep 0.1; done

token() {
  curl -fs -H 'Content-Type: application/json' -d "{\"name\":\"$1\"}" "$BASE/helo" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
export SESSION_TOKEN API_KEY
SESSION_TOKEN=$(token fuzzer)
API_KEY=$(cat "$WORK/api-key")
# The config gives each security scheme its credential; ${VAR}s are read from the environment.
cat > "$WORK/schemathesis.toml" <<'TOML'
[auth.openapi.bearer]
bearer = "${SESSION_TOKEN}"
[auth.openapi.apiKey]
bearer = "${API_KEY}"
TOML

run() { # from $WORK, where schemathesis and hypothesis keep their own directories
  (cd "$WORK" && ../st/bin/schemathesis --no-color --config-file schemathesis.toml run ../../openapi.yaml \
    --url "$BASE" --request-timeout "${TIMEOUT:-5}" --checks all --max-examples "$EXAMPLES" --seed 1 "$@")
}
status=0
run --max-time "$TIME" --exclude-path-regex '^/events/' --exclude-path /session --exclude-path /api/disconnect || status=$?
# The stream of a known session never ends: fuzzed ids find none, and the timeout bounds the rest.
TIMEOUT=3 run --max-time "$((TIME / 6))" --include-path-regex '^/events/' || status=$?
SESSION_TOKEN=$(token leaver)
run --max-time "$((TIME / 3))" --include-path /session --include-path /api/disconnect || status=$?
exit $status
