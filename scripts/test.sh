#!/usr/bin/env bash
# Runs every test: unit, API integration, docs-drift and browser tests.
# Installs the system packages the browser and cluster tests need when they are missing
# (as root, Debian): Chromium and its driver, and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${need[*]}; run: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    echo "installing ${need[*]} ..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo test --workspace --all-targets

# The same API suite again in cluster mode, against a throwaway redis-server.
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
TEST_REDIS_URL="redis://127.0.0.1:$redis_port" cargo test --workspace --test api

# The load generator against a real server, briefly: every event must arrive.
bash bench/smoke.sh
