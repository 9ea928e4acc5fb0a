#!/usr/bin/env bash
set -eu
for pid in 21613 21614 21615 21616 21617 21618 21504 21505 21506 21507 21508 21509; do awk '/^VmRSS:/ { print $2 }' /proc/$pid/status; done >"/work/main/bench/results/2026-12-07-session16/100k-rooms-sharded-3/rss-$1"
for port in 6491 6492 6493 6494 6495 6496; do redis-cli -p $port info cpu | tr -d '\r' | grep -E '^used_cpu_(sys|user):'; done >"/work/main/bench/results/2026-12-07-session16/100k-rooms-sharded-3/cpu-$1"
case $1 in
attached) for port in 6491 6492 6493 6494 6495 6496; do redis-cli -p $port config resetstat >/dev/null; done ;;
drained) for port in 6491 6492 6493; do echo "# master $port"; redis-cli -p $port info commandstats | tr -d '\r'; done >"/work/main/bench/results/2026-12-07-session16/100k-rooms-sharded-3/commandstats" ;;
esac
