#!/usr/bin/env bash
set -eu
for pid in 6023 6024 6025 6026 6027 6028 5888 5889 5890 5891 5892 5893; do awk '/^VmRSS:/ { print $2 }' /proc/$pid/status; done >"/work/main/bench/results/2026-12-07-session15/100k-cluster/rss-$1"
for port in 6491 6492 6493 6494 6495 6496; do redis-cli -p $port info cpu | tr -d '\r' | grep -E '^used_cpu_(sys|user):'; done >"/work/main/bench/results/2026-12-07-session15/100k-cluster/cpu-$1"
case $1 in
attached) for port in 6491 6492 6493 6494 6495 6496; do redis-cli -p $port config resetstat >/dev/null; done ;;
drained) for port in 6491 6492 6493; do redis-cli -p $port info commandstats | tr -d '\r'; done >"/work/main/bench/results/2026-12-07-session15/100k-cluster/commandstats" ;;
esac
