#!/usr/bin/env bash
# Runs every test: unit, API integration, client, docs-drift and browser tests and doctests
# (the cluster suite's mixed-version test runs the previous release's binary, built first from
# its commit: a clone with full history), then the operations checks: an installed binary run
# from elsewhere, the OpenAPI document through a real validator, and the systemd unit through
# systemd-analyze.
# Installs the system packages the tests need when they are missing (as root, Debian):
# Chromium and its driver, redis-server, nginx (the cluster recipe's proxy), jq (the README
# walkthrough), Python's prometheus_client (the metrics format test), Prometheus itself (the
# dashboard and alerts test: `prometheus` and `promtool`), python3-venv and systemd.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v jq >/dev/null 2>&1 || need+=(jq)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need+=(python3-prometheus-client)
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${need[*]}; run: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    echo "installing ${need[*]} ..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# A failing test's message, not a page of backtrace, is what a CI log's excerpt should show.
export RUST_BACKTRACE=0

# The previous release's binary, for the mixed-version cluster test (cached in target/prev).
bash scripts/prev-release.sh

cargo test --workspace --all-targets
# --all-targets leaves out doctests: the examples in the crates' docs must compile too.
cargo test --workspace --doc

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

# The cluster suite again over a Redis Cluster: three masters with a replica each, on free
# loopback ports, every test on a prefix of its own (tests/support/redis_cluster.rs). Nothing
# fails over here on purpose (the failover tests start clusters of their own): a node timeout
# of 5 s keeps a busy machine's slow pings from promoting a replica under the other tests.
cluster_dir=$(mktemp -d /tmp/switchboard-redis-cluster.XXXXXX)
cluster_pids=()
cluster_nodes=()
trap 'kill "$redis_pid" "${cluster_pids[@]}" 2>/dev/null || true; rm -rf "$cluster_dir"' EXIT
for _ in 1 2 3 4 5 6; do
    # Each node's cluster bus port too (by default its port + 10000, which may be taken or
    # past 65535). A port found free may be taken before the node binds it: then the node
    # exits, and it is started again on other ports.
    for attempt in 1 2 3 4 5; do
        read -r port bus < <(python3 -c 'import socket; s=[socket.socket() for _ in (0, 1)]; [x.bind(("127.0.0.1", 0)) for x in s]; print(*(x.getsockname()[1] for x in s))')
        redis-server --port "$port" --cluster-port "$bus" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file "$cluster_dir/nodes-$port.conf" --cluster-node-timeout 5000 \
            --repl-diskless-sync-delay 0 \
            --dir "$cluster_dir" --save '' --appendonly no --logfile "$cluster_dir/$port.log" &
        pid=$!
        up=no
        for _ in $(seq 1 50); do
            redis-cli -p "$port" ping >/dev/null 2>&1 && { up=yes; break; }
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if [ "$up" = yes ]; then
            cluster_pids+=("$pid")
            cluster_nodes+=("127.0.0.1:$port")
            break
        fi
        kill "$pid" 2>/dev/null || true
        echo "a Redis Cluster node did not start on $port (attempt $attempt):" >&2
        tail -3 "$cluster_dir/$port.log" >&2 || true
        [ "$attempt" -lt 5 ] || exit 1
    done
done
redis-cli --cluster create "${cluster_nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
for node in "${cluster_nodes[@]}"; do
    for _ in $(seq 1 100); do
        redis-cli -p "${node##*:}" cluster info | grep -q '^cluster_state:ok' && break
        sleep 0.1
    done
done
seeds=$(IFS=,; echo "${cluster_nodes[*]}")
TEST_REDIS_CLUSTER="redis+cluster://$seeds" cargo test --workspace --test cluster
# And the API suite in cluster mode over it.
TEST_REDIS_URL="redis+cluster://$seeds" cargo test --workspace --test api
kill "${cluster_pids[@]}" 2>/dev/null || true

# The load generator against a real server, briefly: every event must arrive.
bash bench/smoke.sh

# Installed with `cargo install` and started from another directory, the binary still serves
# its page (built in). --debug reuses the build above; a release build embeds the same way.
install_root=$(mktemp -d /tmp/switchboard-install.XXXXXX)
CARGO_TARGET_DIR=$PWD/target cargo install --quiet --debug --locked --path . --root "$install_root"
install_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd "$install_root" && exec ./bin/switchboard --listen "$install_port" --log warn) &
install_pid=$!
trap 'kill "$redis_pid" "${cluster_pids[@]}" "$install_pid" 2>/dev/null || true; rm -rf "$cluster_dir"' EXIT
page=""
for _ in $(seq 1 100); do
    page=$(curl -fsS --max-time 1 "http://127.0.0.1:$install_port/" 2>/dev/null) && break
    sleep 0.1
done
kill "$install_pid"
wait "$install_pid" || true
if ! grep -q '<title>switchboard</title>' <<<"$page"; then
    echo "the installed binary, run from $install_root, did not serve its page" >&2
    exit 1
fi
echo "installed binary serves its page from another directory: ok"

# The OpenAPI document through a real validator (openapi-spec-validator, in a venv).
venv=target/openapi-venv
[ -x "$venv/bin/openapi-spec-validator" ] || {
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet openapi-spec-validator
}
"$venv/bin/openapi-spec-validator" openapi.yaml

# The systemd unit, pointed at the installed binary (verify checks that ExecStart exists).
unit_dir=$(mktemp -d /tmp/switchboard-unit.XXXXXX)
sed "s|/usr/local/bin/switchboard|$install_root/bin/switchboard|" docs/systemd/switchboard.service \
    >"$unit_dir/switchboard.service"
systemd-analyze verify "$unit_dir/switchboard.service"
echo "systemd unit verifies: ok"
rm -rf "$install_root" "$unit_dir"
