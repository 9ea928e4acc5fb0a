#!/usr/bin/env bash
set -eu
for pid in 21925 21926 21927 21928 21929 21930 21815 21816 21817 21818 21819 21820; do awk '/^VmRSS:/ { print $2 }' /proc/$pid/status; done >"/work/main/bench/results/2026-12-07-session16/100k-rooms-oneslot-3/rss-$1"
for port in 6491 6492 6493 6494 6495 6496; do redis-cli -p $port info cpu | tr -d '\r' | grep -E '^used_cpu_(sys|user):'; done >"/work/main/bench/results/2026-12-07-session16/100k-rooms-oneslot-3/cpu-$1"
case $1 in
attached) for port in 6491 6492 6493 6494 6495 6496; do redis-cli -p $port config resetstat >/dev/null; done ;;
drained) for port in 6491 6492 6493; do echo "# master $port"; redis-cli -p $port info commandstats | tr -d '\r'; done >"/work/main/bench/results/2026-12-07-session16/100k-rooms-oneslot-3/commandstats" ;;
esac
