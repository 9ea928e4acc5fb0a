#!/usr/bin/env bash
# Side-by-side benchmark: switchboard against nginx+nchan on this host, with the project's
# own load generator (bench/load, `switchboard-load`).
#
#   bash bench/run.sh                 # the comparison (idle memory + fanout), 3 rounds
#   ROUNDS=5 bash bench/run.sh        # more rounds
#   EXTRA=1 bash bench/run.sh         # also switchboard-only targets: direct messages,
#                                     # presence cost at 1k/10k, churn (CHURN_SECS, 600 s)
#   COMPARE=0 bash bench/run.sh       # only the sweeps behind the charts (below), ~10 minutes
#   SWEEP=0 ROOMS=0 bash bench/run.sh # only the comparison table
#
# What it does, bounded in time (every run has --max-secs, every wait a limit):
#   1. installs nginx + libnginx-mod-nchan from Debian when missing (apt-get update first);
#   2. builds the release binaries (switchboard, switchboard-load);
#   3. for each round, for each target (the order alternates between rounds): starts the
#      server fresh on loopback, measures idle memory with IDLE_N streams (switchboard also
#      `idle-N-shared`: on a fresh server again, each stream's POST /helo and GET /events on
#      one keep-alive connection, as a browser sends them), then the fanout workloads, and
#      stops the server it started, by pid;
#      The floor, rawfan (a bare epoll writer, ../shared/tools/rawfan, built here with cc), runs
#      the one-broadcast-a-second fanout beside them: it drops what does not fit a socket, so
#      it has no saturated figure.
#   4. the sweeps the charts draw (SWEEP=1, SWEEP_ROUNDS rounds): for each size in
#      SWEEP_STREAMS, on a fresh server, idle memory then p99 of one broadcast a second
#      (SWEEP_BROADCASTS of them), for switchboard, nchan and the floor (no idle run); direct
#      messages at each rate of DIRECT_RATES; and (ROOMS=1) the rooms ladder, ROOM_COUNT rooms
#      of ROOM_SIZE at ROOM_RATES, for nchan and, when the server has rooms, switchboard, plus
#      the join cost into a 10-member room at each of JOIN_SESSIONS (presence on);
#   5. draws the charts (`switchboard-load chart`) into $OUT/charts, and copies them to
#      CHARTS_DIR when set (BENCHMARKS.md shows bench/results/charts);
#   6. prints medians and switchboard/nchan and switchboard/floor ratios (`switchboard-load report`) and keeps every
#      raw result under target/bench-results/<UTC time>/ (results.jsonl, report.md, logs,
#      machine.txt; set OUT to choose). bench/results/ holds the runs BENCHMARKS.md quotes.
#
# Only loopback addresses are used. The nginx configuration is bench/nchan.conf.
set -euo pipefail

# Everything runs inside main, which bash reads whole before starting: editing this file
# during a run cannot break the run.
main() {

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
IDLE_N=${IDLE_N:-19000}         # one process may hold at most 20,000 open files here
FANOUT_N=${FANOUT_N:-10000}
FANOUT_MAX_N=${FANOUT_MAX_N:-19000}
SAT_BROADCASTS=${SAT_BROADCASTS:-200}
RATE_BROADCASTS=${RATE_BROADCASTS:-20}
EXTRA=${EXTRA:-0}
COMPARE=${COMPARE:-1}
SWEEP=${SWEEP:-1}
SWEEP_ROUNDS=${SWEEP_ROUNDS:-1}
SWEEP_STREAMS=${SWEEP_STREAMS:-1000 5000 10000 19000}
SWEEP_BROADCASTS=${SWEEP_BROADCASTS:-10}
DIRECT_RATES=${DIRECT_RATES:-1000 2000 5000 10000}
DIRECT_PAIRS=${DIRECT_PAIRS:-50}
DIRECT_SECS=${DIRECT_SECS:-5}
ROOMS=${ROOMS:-1}
ROOM_COUNT=${ROOM_COUNT:-1900}
ROOM_SIZE=${ROOM_SIZE:-10}
ROOM_RATES=${ROOM_RATES:-100,200,500,1000,2000,5000,10000,20000,30000,50000,70000,100000}
ROOM_STEP_SECS=${ROOM_STEP_SECS:-5}
JOIN_SESSIONS=${JOIN_SESSIONS:-1000 19000}
CHARTS_DIR=${CHARTS_DIR:-}
CHURN_SECS=${CHURN_SECS:-600}
CHURN_RATE=${CHURN_RATE:-1000}
CHURN_PRESENCE=${CHURN_PRESENCE:-false}
SB_PORT=${SB_PORT:-4400}
NCHAN_PORT=${NCHAN_PORT:-4480}
FLOOR_PORT=${FLOOR_PORT:-4490}
RAWFAN_SRC=${RAWFAN_SRC:-$ROOT/../shared/tools/rawfan/rawfan.c}
OUT=${OUT:-$ROOT/target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
WORK=$(mktemp -d /tmp/switchboard-bench.XXXXXX)
SERVER_PID=""

log() { printf '\n=== %s ===\n' "$*" >&2; }

stop_server() {
    # Stops the server this script started, by its pid, and waits (bounded) for it to exit.
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_http() {
    # Waits up to 10 s for $1 to answer.
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server at $1 did not come up" >&2
    return 1
}

# --- 1. nginx + nchan --------------------------------------------------------------------
if ! command -v nginx >/dev/null || [[ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
    log "installing nginx + libnginx-mod-nchan from Debian"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq
    timeout 900 apt-get install -y -qq nginx-light libnginx-mod-nchan >/dev/null ||
        timeout 900 apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
fi

# --- 2. binaries -------------------------------------------------------------------------
log "building release binaries"
timeout 1800 cargo build --release -p switchboard -p switchboard-load >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
SB=$TARGET_DIR/release/switchboard
LOAD=$TARGET_DIR/release/switchboard-load
RAWFAN=""
if [[ -r $RAWFAN_SRC ]] && cc -O2 -pthread -o "$WORK/rawfan" "$RAWFAN_SRC"; then
    RAWFAN=$WORK/rawfan
else
    echo "no floor column: cannot build rawfan from $RAWFAN_SRC (set RAWFAN_SRC)" >&2
fi

for p in "$SB_PORT" "$NCHAN_PORT" "$FLOOR_PORT"; do
    port_free "$p" || { echo "port $p is in use; set SB_PORT / NCHAN_PORT / FLOOR_PORT" >&2; exit 2; }
done

{
    echo "date: $(date -u +%FT%TZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
    echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "kernel: $(uname -r)"
    echo "open files: soft $(ulimit -Sn) hard $(ulimit -Hn)"
    echo "nginx: $(nginx -v 2>&1)"
    echo "nchan: $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
    echo "switchboard: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "rustc: $(rustc --version)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# --- servers -----------------------------------------------------------------------------
start_nchan() {
    local dir=$WORK/nginx
    rm -rf "$dir" && mkdir -p "$dir"
    sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$NCHAN_PORT#g" bench/nchan.conf >"$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" >>"$OUT/nginx.log" 2>&1 &
    SERVER_PID=$!
    # nchan answers 404 on / : any HTTP answer means it is up.
    for _ in $(seq 1 100); do
        curl -sS -o /dev/null --max-time 1 "http://127.0.0.1:$NCHAN_PORT/" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nginx did not start; see $OUT/nginx.log and $dir/error.log" >&2
    return 1
}

start_floor() {
    "$RAWFAN" "$FLOOR_PORT" >>"$OUT/rawfan.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$FLOOR_PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "rawfan did not start; see $OUT/rawfan.log" >&2
    return 1
}

NO_LIMITS=(--helo-rate 0 --message-rate 0 --byte-rate 0 --max-sessions-per-address 0 --max-streams-per-address 0 --max-connections-per-address 0
    --session-attaches 0 --address-attach-rate 0 --list-rate 0)

start_switchboard() {
    # Presence off: the large audiences here would cost O(N²) join announcements (measured
    # separately with EXTRA=1). Log level warn: info logs one line per session lifecycle event.
    # Limits off: every load client comes from 127.0.0.1 and sends far faster than a person.
    local presence=${1:-false}
    shift || true
    "$SB" --listen "127.0.0.1:$SB_PORT" --presence "$presence" --log warn "${NO_LIMITS[@]}" "$@" \
        >>"$OUT/switchboard.log" 2>&1 &
    SERVER_PID=$!
    wait_http "http://127.0.0.1:$SB_PORT/healthz"
}

load() {
    # load <target> <label> <mode args...>: one run, its JSON line appended to results.jsonl.
    local target=$1 label=$2
    shift 2
    local args=(--json --label "$label" --server-pid "$SERVER_PID" --max-secs 900)
    if [[ $target == nchan ]]; then
        args+=(--target nchan
            --sub-url "http://127.0.0.1:$NCHAN_PORT/sub/{channel}"
            --pub-url "http://127.0.0.1:$NCHAN_PORT/pub/{channel}")
    elif [[ $target == floor ]]; then
        args+=(--target nchan --name floor
            --sub-url "http://127.0.0.1:$FLOOR_PORT/sub/{channel}"
            --pub-url "http://127.0.0.1:$FLOOR_PORT/pub/{channel}")
    else
        args+=(--target switchboard --url "http://127.0.0.1:$SB_PORT")
    fi
    echo "--- $target $label: $*" >&2
    local line
    if line=$(timeout 1000 "$LOAD" "${args[@]}" "$@" 2>>"$OUT/load.log"); then
        :
    else
        echo "    (run reported a failure: exit $?)" >&2
    fi
    if [[ -n "$line" ]]; then
        echo "$line" >>"$RESULTS"
        # A short summary on the console.
        echo "$line" | tr ',' '\n' | grep -E '"name":"(deliveries_per_s|latency_p50_ms|latency_p99_ms|rss_per_stream_bytes|attach_s|lost|sustained_per_s|rss_growth_pct|gen_cpu_pct)"' -A1 |
            paste -sd' ' | sed 's/"name"://g; s/"value"://g; s/--//g; s/}//g' >&2 || true
    fi
}

comparison_round() {
    local target=$1
    if [[ $target == floor ]]; then
        start_floor
        load floor "fanout-${FANOUT_N}-1hz" fanout --streams "$FANOUT_N" --broadcasts "$RATE_BROADCASTS" --rate 1
        stop_server
        return
    fi
    if [[ $target == nchan ]]; then start_nchan; else start_switchboard false; fi
    # Idle memory first, on the fresh server.
    load "$target" "idle-${IDLE_N}" idle --streams "$IDLE_N" --settle 3 --hold 5
    if [[ $target == switchboard ]]; then
        # As a browser connects: helo, then the stream on the same connection (nchan has no
        # helo). A fresh server again, so both idle rows start from the same memory.
        stop_server
        start_switchboard false
        load "$target" "idle-${IDLE_N}-shared" idle --shared-connection --streams "$IDLE_N" --settle 3 --hold 5
    fi
    # Saturated: two publishing connections (nchan answers a publish only after delivering it,
    # so a lone sequential publisher could be what limits it; 1, 2, 4 and 8 gave nchan the same
    # rate here). The window keeps every stream within 64 broadcasts of the newest.
    local sat=(--publishers 2 --window 64)
    load "$target" "fanout-${FANOUT_N}-saturated" fanout "${sat[@]}" --streams "$FANOUT_N" --broadcasts "$SAT_BROADCASTS"
    load "$target" "fanout-${FANOUT_N}-1hz" fanout --streams "$FANOUT_N" --broadcasts "$RATE_BROADCASTS" --rate 1
    load "$target" "fanout-1000-saturated" fanout "${sat[@]}" --streams 1000 --broadcasts 1000
    load "$target" "fanout-${FANOUT_MAX_N}-saturated" fanout "${sat[@]}" --streams "$FANOUT_MAX_N" --broadcasts 100
    stop_server
}

extra_round() {
    start_switchboard false
    load switchboard "direct-5000-per-s" direct --pairs 50 --rate 5000 --duration 10
    load switchboard "direct-closed-loop" direct --pairs 64 --rate 0 --duration 10
    stop_server
    for n in 1000 10000; do
        # Presence on: 10,000 clients take long enough to attach that the default 30 s TTL
        # would expire sessions registered early; a longer TTL measures the cost itself.
        start_switchboard true --session-ttl 300s
        load switchboard "presence-on-idle-$n" idle --streams "$n" --settle 2 --hold 2
        stop_server
        start_switchboard false
        load switchboard "presence-off-idle-$n" idle --streams "$n" --settle 2 --hold 2
        stop_server
    done
}

sweep_round() {
    # The sizes of the p99 and memory charts: idle first on each fresh server, then 1 Hz.
    local target=$1 n
    for n in $SWEEP_STREAMS; do
        case $target in
            floor) start_floor ;;
            nchan) start_nchan ;;
            *) start_switchboard false ;;
        esac
        if [[ $target != floor ]]; then
            load "$target" "sweep-idle-$n" idle --streams "$n" --settle 2 --hold 2
        fi
        load "$target" "sweep-fanout-$n-1hz" fanout --streams "$n" --broadcasts "$SWEEP_BROADCASTS" --rate 1
        stop_server
    done
}

direct_sweep() {
    local r
    start_switchboard false
    for r in $DIRECT_RATES; do
        load switchboard "direct-$r-per-s" direct --pairs "$DIRECT_PAIRS" --rate "$r" --duration "$DIRECT_SECS"
    done
    stop_server
}

server_has_rooms() {
    # A server with rooms answers a helo naming rooms with its "rooms".
    local reply
    start_switchboard false
    reply=$(curl -sS --max-time 5 -X POST -H 'Content-Type: application/json' \
        -d '{"name":"probe","rooms":[]}' "http://127.0.0.1:$SB_PORT/helo" 2>/dev/null || true)
    stop_server
    [[ $reply == *'"rooms"'* ]]
}

rooms_sweep() {
    local rooms=(rooms --rooms "$ROOM_COUNT" --room-size "$ROOM_SIZE" --rates "$ROOM_RATES" --step-secs "$ROOM_STEP_SECS")
    start_nchan
    load nchan "rooms-$ROOM_COUNT-x-$ROOM_SIZE" "${rooms[@]}"
    stop_server
    if ! server_has_rooms; then
        echo "this switchboard has no rooms (POST /helo ignores \"rooms\"): switchboard's room runs left out" >&2
        return
    fi
    start_switchboard false
    load switchboard "rooms-$ROOM_COUNT-x-$ROOM_SIZE" "${rooms[@]}"
    stop_server
    local n
    for n in $JOIN_SESSIONS; do
        # Presence on: a join's cost is its announcement to the room.
        start_switchboard true --session-ttl 300s
        load switchboard "join-10-at-$n" join --sessions "$n" --room-size 10 --joins 500 --rate 50
        stop_server
    done
}

T0=$(date +%s)
for round in $(seq 1 "$ROUNDS"); do
    [[ $COMPARE == 1 ]] || break
    order=(nchan switchboard)
    [[ -n $RAWFAN ]] && order+=(floor)
    if ((round % 2 == 0)); then
        for ((i = 0, j = ${#order[@]} - 1; i < j; i++, j--)); do
            t=${order[i]} && order[i]=${order[j]} && order[j]=$t
        done
    fi
    for target in "${order[@]}"; do
        log "round $round/$ROUNDS: $target"
        comparison_round "$target"
    done
    if [[ $EXTRA == 1 ]]; then
        log "round $round/$ROUNDS: switchboard-only targets"
        extra_round
    fi
done
if [[ $EXTRA == 1 ]]; then
    # Presence off by default: with it on, each join and leave goes to every live session and
    # this 2-core host cannot sustain 1,000 joins/s (CHURN_PRESENCE=true to see that).
    log "churn: $CHURN_RATE sessions/s for $CHURN_SECS s (presence $CHURN_PRESENCE)"
    start_switchboard "$CHURN_PRESENCE"
    load switchboard "churn-$CHURN_RATE-per-s-presence-$CHURN_PRESENCE" churn --rate "$CHURN_RATE" --duration "$CHURN_SECS" --hold-ms 1000 --sample 10 --warmup 30
    stop_server
fi

for round in $(seq 1 "$SWEEP_ROUNDS"); do
    order=(nchan switchboard)
    [[ -n $RAWFAN ]] && order+=(floor)
    if ((round % 2 == 0)); then
        for ((i = 0, j = ${#order[@]} - 1; i < j; i++, j--)); do
            t=${order[i]} && order[i]=${order[j]} && order[j]=$t
        done
    fi
    if [[ $SWEEP == 1 ]]; then
        for target in "${order[@]}"; do
            log "sweep $round/$SWEEP_ROUNDS: $target"
            sweep_round "$target"
        done
        log "sweep $round/$SWEEP_ROUNDS: direct messages"
        direct_sweep
    fi
    if [[ $ROOMS == 1 ]]; then
        log "rooms $round/$SWEEP_ROUNDS"
        rooms_sweep
    fi
done

log "results ($(( $(date +%s) - T0 )) s): $OUT"
if "$LOAD" chart "$RESULTS" --out "$OUT/charts"; then
    if [[ -n $CHARTS_DIR ]]; then
        mkdir -p "$CHARTS_DIR"
        cp "$OUT"/charts/*.svg "$OUT/charts/charts.json" "$CHARTS_DIR"/
    fi
else
    echo "no charts drawn" >&2
fi
"$LOAD" report "$RESULTS" >"$OUT/report-all.md"
KEY=attached,attach_s,register_s,rss_per_stream_bytes,pss_per_stream_bytes,deliveries_per_s
KEY=$KEY,latency_p50_ms,latency_p99_ms,latency_max_ms,lost,lagged_missed,sustained_per_s
KEY=$KEY,post_rtt_p99_ms,events_received,stream_bytes_received,server_cpu_s,server_cpu_pct,gen_cpu_pct
KEY=$KEY,cycles_per_s,cycle_failures,rss_warm_kb,rss_end_kb,rss_max_kb,rss_growth_pct
"$LOAD" report "$RESULTS" --metrics "$KEY" | tee "$OUT/report.md"
}

main "$@"
exit $?
