#!/usr/bin/env bash
set -eu
for pid in 20327 20328 20329 20330 20331 20332 20218 20219 20220 20221 20222 20223; do awk '/^VmRSS:/ { print $2 }' /proc/$pid/status; done >"/work/main/bench/results/2026-12-07-session16/100k-rooms-sharded/rss-$1"
for port in 6491 6492 6493 6494 6495 6496; do redis-cli -p $port info cpu | tr -d '\r' | grep -E '^used_cpu_(sys|user):'; done >"/work/main/bench/results/2026-12-07-session16/100k-rooms-sharded/cpu-$1"
case $1 in
attached) for port in 6491 6492 6493 6494 6495 6496; do redis-cli -p $port config resetstat >/dev/null; done ;;
drained) for port in 6491 6492 6493; do echo "# master $port"; redis-cli -p $port info commandstats | tr -d '\r'; done >"/work/main/bench/results/2026-12-07-session16/100k-rooms-sharded/commandstats" ;;
esac
