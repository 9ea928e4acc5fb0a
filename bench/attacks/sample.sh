#!/bin/bash
# sample.sh PID SECS OUT : every 1 s record utime+stime (ticks) and RSS of PID
pid=$1; secs=$2; out=$3; tck=$(getconf CLK_TCK)
: > "$out"
end=$(( $(date +%s) + secs ))
while [ "$(date +%s)" -lt "$end" ] && [ -r /proc/$pid/stat ]; do
  read -r -a f < <(sed 's/^.*) //' /proc/$pid/stat)
  # after stripping "pid (comm) ", field index: utime=11, stime=12
  rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  echo "$(date +%s.%N) $(( ${f[11]} + ${f[12]} )) $rss $tck" >> "$out"
  sleep 1
done
