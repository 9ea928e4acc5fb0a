#!/usr/bin/env bash
# Idle sockets from one address: how long are they held, and is another address served?
#
#   bash bench/attacks/idle-sockets.sh target/release/switchboard [SOCKETS] [NOFILE] [flags...]
#   bash bench/attacks/idle-sockets.sh target/release/switchboard 3000 20000
#   bash bench/attacks/idle-sockets.sh target/release/switchboard 1000 1024 --max-connections-per-address 480
#
# SOCKETS connections from 127.0.0.2 that send nothing, against the server started with an
# open-file limit of NOFILE; a legitimate client at 127.0.0.1 tries /healthz and a whole
# exchange (two helos, a stream, a direct message) every 250 ms. Prints, as JSON: how each
# socket ended and after how long, and the legitimate success rate during and after.
set -eu
BIN=$(realpath "${1:-target/release/switchboard}")
N=${2:-1000}; NOFILE=${3:-1024}; shift 3 || shift $#
cd "$(dirname "$0")"
ulimit -n 20000
prlimit --nofile=$NOFILE:$NOFILE -- "$BIN" --listen 127.0.0.1:47180 --log warn "$@" > /dev/null 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
for i in $(seq 100); do curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:47180/healthz && break; sleep 0.1; done
timeout 200 python3 idle_sockets.py "$N" "$PID"
