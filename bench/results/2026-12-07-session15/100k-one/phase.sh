#!/usr/bin/env bash
set -eu
for pid in 21325 21326 21327 21328 21329 21330 21315; do awk '/^VmRSS:/ { print $2 }' /proc/$pid/status; done >"/work/main/bench/results/2026-12-07-session15/100k-one/rss-$1"
for port in 6489; do redis-cli -p $port info cpu | tr -d '\r' | grep -E '^used_cpu_(sys|user):'; done >"/work/main/bench/results/2026-12-07-session15/100k-one/cpu-$1"
case $1 in
attached) for port in 6489; do redis-cli -p $port config resetstat >/dev/null; done ;;
drained) for port in 6489; do redis-cli -p $port info commandstats | tr -d '\r'; done >"/work/main/bench/results/2026-12-07-session15/100k-one/commandstats" ;;
esac
