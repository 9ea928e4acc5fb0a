# Sourced by bench/cluster.sh, handoff.sh, storm.sh and 100k.sh: the binaries, a cleanup of
# what the script started (by pid), a wait for an instance, and the flags that turn the
# per-client limits off.
# Expects ROOT (the repository) and `set -euo pipefail`.

command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install -y redis-server)" >&2; exit 1; }
# BIN=dir: the switchboard and switchboard-load binaries to run (e.g. an older build, for a
# side-by-side comparison); by default this tree's, built now.
if [ -z "${BIN:-}" ]; then
    timeout 1800 cargo build --release -q -p switchboard -p switchboard-load
    BIN=$ROOT/target/release
fi
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Waits until the instance on 127.0.0.1:$1 answers /healthz.
wait_up() {
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$1/healthz" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1 did not come up" >&2; exit 1
}

# Limits off: the load generator is one address sending far faster than a person.
# shellcheck disable=SC2034 # used by the scripts that source this one
NO_LIMITS=(--helo-rate 0 --message-rate 0 --byte-rate 0 --max-sessions-per-address 0 --max-streams-per-address 0 --max-connections-per-address 0
    --session-attaches 0 --address-attach-rate 0 --list-rate 0)
