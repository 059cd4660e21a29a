#!/usr/bin/env bash
# Measures the figures of docs/PERFORMANCE.md against their references, side by side.
#
#   bench/compare.sh [register|held|turns|syscalls|all]...      (default: all)
#
# Environment (defaults in brackets):
#   RUNS [5]          repetitions; every figure is reported as the median of the runs
#   DURATION [10]     seconds per load run (wrk -d, bridgechat bench -d)
#   HELD [19000]      clients held by the mio and uring servers in the `held` section
#   HELD_STD [1000]   clients held by the std server in the `held` section
#   TURNS [20000]     chat turns (messages) per ping-pong run in the `turns` section
#   OUT [target/bench-compare]   where raw outputs go
#   NO_BUILD          set to skip `cargo build --release`
#   BIN [target/release/bridgechat]   the bridgechat binary (bench and servers)
#   SERVER_BIN [$BIN]                 the binary the servers run (to compare server builds)
#   SYSCALL_SECONDS [3]  seconds of load per server under strace in the `syscalls` section
#   NICE [0]          niceness for every measured process (servers, nginx, wrk, bench);
#                     as root, NICE=-10 keeps other work on a shared machine from
#                     stealing the measured processes' CPU in the middle of a run
#
# Sections:
#   register  REGISTER req/s at 50 connections, no pipelining: wrk (bench/register.lua)
#             and `bridgechat bench --phase steady --http-host` against nginx
#             (bench/nginx.conf, 1 worker, `return 200`), the mio, std and uring
#             servers; nginx also with plain `wrk` GETs. Within a run the targets follow
#             each other, in an order rotated by one each run, so they share the
#             machine's state and none always goes first. Prints medians and the range
#             of the per-run ratios to nginx.
#   held      a fresh server per run; VmRSS idle, then with HELD clients registered and
#             held (`bridgechat bench --phase pair --hold`), then pairing them all.
#             The mio and uring servers with HELD clients, the std server with HELD_STD.
#   turns     chat turn round trip (two clients of one bench process chatting over
#             loopback after a real REGISTER/BRIDGE/CHAT) against a raw TCP ping-pong of
#             the same bytes (`bridgechat bench --phase pingpong`), alternated.
#   syscalls  system calls per REGISTER: `strace -c -f` on each server (nginx's worker,
#             mio, std, uring) during a SYSCALL_SECONDS `bridgechat bench` run at 50
#             connections; strace slows the servers, so only the counts mean anything.
#
# Needs wrk and nginx (apt-get install -y wrk nginx), and strace for `syscalls`. Starts
# nginx and the servers on loopback ports 18080 (nginx), 17070 (mio), 17071 (std) and
# 17072 (uring) and stops them on exit. Where the kernel refuses io_uring, uring is
# left out with a note.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
DURATION=${DURATION:-10}
HELD=${HELD:-19000}
HELD_STD=${HELD_STD:-1000}
TURNS=${TURNS:-20000}
OUT=${OUT:-target/bench-compare}
NICE=${NICE:-0}
BIN=${BIN:-target/release/bridgechat}
SERVER_BIN=${SERVER_BIN:-$BIN}
NGINX_PORT=18080
MIO_PORT=17070
STD_PORT=17071
URING_PORT=17072
SYSCALL_SECONDS=${SYSCALL_SECONDS:-3}
SECTIONS=("$@")
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(all)

mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: > "$RESULTS"

for tool in wrk nginx; do
    command -v "$tool" > /dev/null || { echo "compare.sh: $tool is not installed (apt-get install -y wrk nginx)" >&2; exit 1; }
done
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p bridgechat
fi
ulimit -n "$(ulimit -Hn)"

PIDS=()
NGINX_PREFIX=$(mktemp -d)
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2> /dev/null || true
    done
    wait 2> /dev/null || true
    rm -rf "$NGINX_PREFIX"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every measured process runs at the same niceness (background ones call nice directly,
# so that $! is the process itself).
wrk() { nice -n "$NICE" wrk "$@"; }
bench() { nice -n "$NICE" "$BIN" bench "$@"; }

log() { echo "$*" | tee -a "$RESULTS"; }

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; then return 0; fi
        sleep 0.05
    done
    echo "compare.sh: nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

# uring_ok: whether this kernel runs the uring server (it refuses at start otherwise)
uring_ok() {
    local why
    why=$(timeout 1 "$SERVER_BIN" server --listen 127.0.0.1:0 --transport uring --quiet 2>&1 < /dev/null) && true
    [ $? -eq 124 ] && return 0 # still running when stopped: it started
    log "note: uring left out: $why"
    return 1
}

# start_server TRANSPORT PORT -> sets SERVER_PID
start_server() {
    nice -n "$NICE" "$SERVER_BIN" server --listen "127.0.0.1:$2" --transport "$1" --quiet >> "$OUT/server-$1.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_port "$2"
}

stop() {
    kill "$1" 2> /dev/null || true
    wait "$1" 2> /dev/null || true
}

start_nginx() {
    nice -n "$NICE" nginx -p "$NGINX_PREFIX/" -c "$PWD/bench/nginx.conf" 2>> "$OUT/nginx.log" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_port "$NGINX_PORT"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "nan"; else printf "%.2f", a / b }'; }
# field NAME < summary-line -> value of NAME=... in a bench summary line
field() { grep '^summary' | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }

# wrk_rps OUTFILE -> Requests/sec, and warns about non-2xx answers
wrk_rps() {
    if grep -q 'Non-2xx' "$1"; then echo "warning: $(grep 'Non-2xx' "$1") in $1" >&2; fi
    awk '/^Requests\/sec:/ { print $2 }' "$1"
}

# cpu_ticks PID... -> user+system clock ticks used so far by these processes (all threads)
cpu_ticks() {
    local total=0 pid t
    for pid in "$@"; do
        t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2> /dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

# measure NAME TOOL PORT PIDS... : one load run; writes $f.NAME (tool output) and
# $f.NAME.cpu ("requests/s requests server-CPU-us-per-request")
measure() {
    local name=$1 tool=$2 port=$3
    shift 3
    local out="$f.$name" before after requests rps
    before=$(cpu_ticks "$@")
    case "$tool" in
        wrk-get) wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:$port/" > "$out" ;;
        wrk) wrk -t1 -c50 -d"${DURATION}s" -s bench/register.lua "http://127.0.0.1:$port/" > "$out" ;;
        bench) bench -q --server "127.0.0.1:$port" -c 50 -d "$DURATION" --phase steady --http-host > "$out" ;;
    esac
    after=$(cpu_ticks "$@")
    if [ "$tool" = bench ]; then
        requests=$(field steady_requests < "$out")
        rps=$(field steady_rps < "$out")
    else
        requests=$(awk '/requests in/ { print $1 }' "$out")
        rps=$(wrk_rps "$out")
    fi
    awk -v r="$rps" -v n="$requests" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.0f %d %.2f\n", r, n, (n > 0 ? t / hz * 1e6 / n : 0) }' > "$out.cpu"
}

# col NAME FIELD -> median over the runs of field FIELD (1 req/s, 3 CPU us/request)
col() {
    for r in $(seq "$RUNS"); do awk -v k="$2" '{ print $k }' "$OUT/register-$r.$1.cpu"; done | median
}

# run_ratios A B -> "median (min-max)" of the per-run ratios (field 1 of A) / (field 1 of B)
run_ratios() {
    for r in $(seq "$RUNS"); do
        ratio "$(awk '{ print $1 }' "$OUT/register-$r.$1.cpu")" "$(awk '{ print $1 }' "$OUT/register-$r.$2.cpu")"
        echo
    done | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "x%.2f (%s-%s)", m, v[1], v[NR] }'
}

section_register() {
    log "== register: 50 connections, no pipelining, ${DURATION}s per run, $RUNS runs, nice $NICE ($(date -u +%F) $(date -u +%H:%M) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg))"
    log "   each entry: requests/s (server CPU us per request, user+system)"
    local servers=(mio std)
    uring_ok && servers+=(uring)
    start_nginx
    declare -A pid port
    port[mio]=$MIO_PORT port[std]=$STD_PORT port[uring]=$URING_PORT
    for t in "${servers[@]}"; do
        start_server "$t" "${port[$t]}"; pid[$t]=$SERVER_PID
    done
    local nginx_all
    nginx_all=("$NGINX_PID" $(pgrep -P "$NGINX_PID"))
    local targets=(nginx "${servers[@]}")
    for run in $(seq "$RUNS"); do
        f="$OUT/register-$run"
        measure wrk-nginx-get wrk-get "$NGINX_PORT" "${nginx_all[@]}"
        # Rotate the order by one each run.
        local n=${#targets[@]} i t order=()
        for i in $(seq 0 $((n - 1))); do order+=("${targets[$(((i + run) % n))]}"); done
        for tool in wrk bench; do
            for t in "${order[@]}"; do
                if [ "$t" = nginx ]; then
                    measure "$tool-nginx" "$tool" "$NGINX_PORT" "${nginx_all[@]}"
                else
                    measure "$tool-$t" "$tool" "${port[$t]}" "${pid[$t]}"
                fi
            done
        done
        local line="run $run (order ${order[*]}, load $(cut -d' ' -f1 /proc/loadavg)):"
        for m in wrk-nginx-get $(for t in "${targets[@]}"; do echo "wrk-$t"; done) $(for t in "${targets[@]}"; do echo "bench-$t"; done); do
            line="$line $m $(awk '{ printf "%s (%s)", $1, $3 }' "$f.$m.cpu")"
        done
        log "$line"
    done
    for tool in wrk bench; do
        local line="median $tool: nginx $(col "$tool-nginx" 1) ($(col "$tool-nginx" 3) us)"
        [ "$tool" = wrk ] && line="$line, nginx GET $(col wrk-nginx-get 1) ($(col wrk-nginx-get 3) us)"
        for t in "${servers[@]}"; do
            line="$line, $t $(col "$tool-$t" 1) ($(col "$tool-$t" 3) us)"
        done
        log "$line"
        for t in "${servers[@]}"; do
            log "  $tool $t/nginx req/s: median of the per-run ratios $(run_ratios "$tool-$t" "$tool-nginx"); nginx/$t CPU per request, ratio of medians x$(ratio "$(col "$tool-nginx" 3)" "$(col "$tool-$t" 3)")"
        done
    done
    for t in "${servers[@]}"; do stop "${pid[$t]}"; done
    stop "$NGINX_PID"
}

# held_run TRANSPORT PORT CLIENTS RUN
held_run() {
    local f="$OUT/held-$1-$4"
    start_server "$1" "$2"; local pid=$SERVER_PID
    sleep 0.5
    local idle; idle=$(rss_kib "$pid")
    nice -n "$NICE" "$BIN" bench --server "127.0.0.1:$2" -c "$3" --phase pair --hold 3 -d 0 > "$f.out" 2> "$f.err" &
    local bench=$!
    wait_line() {
        for _ in $(seq 1200); do
            grep -q "$1" "$f.err" 2> /dev/null && return 0
            kill -0 "$bench" 2> /dev/null || return 1
            sleep 0.05
        done
    }
    wait_line '^holding'
    sleep 1.5
    # Idle and held: the RSS, and the CPU time so far (nothing moves until the bridge stage).
    local held before after
    held=$(rss_kib "$pid")
    before=$(cpu_ticks "$pid")
    wait_line '^paired'
    after=$(cpu_ticks "$pid")
    wait "$bench" || echo "warning: bench failed, see $f.err" >&2
    stop "$pid"
    local per cpu_ms
    per=$(awk -v h="$held" -v i="$idle" -v n="$3" 'BEGIN { printf "%.0f", (h - i) * 1024 / n }')
    cpu_ms=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", t * 1000 / hz }')
    echo "$idle $held $per $cpu_ms" > "$f.rss"
    log "$1 run $4: $3 clients: peak registered $(field peak_registered < "$f.out"), server check $(field held_probe < "$f.out"), RSS idle ${idle} KiB held ${held} KiB = ${per} B/connection; register stage $(field register_s < "$f.out") s; $(field pairs < "$f.out") pairs in $(field bridge_s < "$f.out") s ($(field pairs_per_s < "$f.out") pairs/s, server CPU ${cpu_ms} ms), pairing ok $(field pairing_ok < "$f.out"), errors $(field status_errors < "$f.out")+$(field conn_errors < "$f.out")"
}

section_held() {
    log "== held: mio and uring $HELD clients, std $HELD_STD clients, $RUNS runs ($(date -u +%F), load average $(cut -d' ' -f1-3 /proc/loadavg))"
    local servers=(mio std)
    uring_ok && servers+=(uring)
    for run in $(seq "$RUNS"); do
        held_run mio "$MIO_PORT" "$HELD" "$run"
        held_run std "$STD_PORT" "$HELD_STD" "$run"
        if [ "${#servers[@]}" = 3 ]; then held_run uring "$URING_PORT" "$HELD" "$run"; fi
    done
    for t in "${servers[@]}"; do
        local per bridge peak cpu
        per=$(for r in $(seq "$RUNS"); do awk '{ print $3 }' "$OUT/held-$t-$r.rss"; done | median)
        cpu=$(for r in $(seq "$RUNS"); do awk '{ print $4 }' "$OUT/held-$t-$r.rss"; done | median)
        bridge=$(for r in $(seq "$RUNS"); do field bridge_s < "$OUT/held-$t-$r.out"; done | median)
        peak=$(for r in $(seq "$RUNS"); do field peak_registered < "$OUT/held-$t-$r.out"; done | median)
        log "median $t: peak registered $peak, RSS $per B/connection above idle, pairing all in $bridge s (server CPU $cpu ms)"
    done
}

section_turns() {
    log "== turns: $TURNS messages per run (one pair), $RUNS runs ($(date -u +%F))"
    start_server mio "$MIO_PORT"; local mio=$SERVER_PID
    for run in $(seq "$RUNS"); do
        local f="$OUT/turns-$run"
        bench -q --server "127.0.0.1:$MIO_PORT" -c 2 --phase pair -t "$TURNS" -d 0 > "$f.chat"
        bench -q --phase pingpong -c 2 -t "$TURNS" > "$f.raw"
        log "run $run: chat turn round trip p50 $(field rtt_p50_us < "$f.chat") us mean $(field rtt_mean_us < "$f.chat") us | raw ping-pong p50 $(field rtt_p50_us < "$f.raw") us mean $(field rtt_mean_us < "$f.raw") us"
    done
    local c50 r50 cm rm
    c50=$(for r in $(seq "$RUNS"); do field rtt_p50_us < "$OUT/turns-$r.chat"; done | median)
    r50=$(for r in $(seq "$RUNS"); do field rtt_p50_us < "$OUT/turns-$r.raw"; done | median)
    cm=$(for r in $(seq "$RUNS"); do field rtt_mean_us < "$OUT/turns-$r.chat"; done | median)
    rm=$(for r in $(seq "$RUNS"); do field rtt_mean_us < "$OUT/turns-$r.raw"; done | median)
    log "median: chat p50 $c50 us, raw p50 $r50 us (x$(ratio "$c50" "$r50")); chat mean $cm us, raw mean $rm us (x$(ratio "$cm" "$rm"))"
    stop "$mio"
}

# strace_run NAME PORT PID: strace -c -f on PID during a short bench run; logs calls per request
strace_run() {
    local f="$OUT/syscalls-$1"
    strace -c -f -S calls -p "$3" -o "$f.strace" 2> /dev/null &
    local tracer=$!
    sleep 0.5
    bench -q --server "127.0.0.1:$2" -c 50 -d "$SYSCALL_SECONDS" --phase steady --http-host > "$f.out"
    kill -INT "$tracer"
    wait "$tracer" 2> /dev/null || true
    local requests
    requests=$(field steady_requests < "$f.out")
    # Every request of the run (register stage, 50, and steady) reached the server.
    requests=$((requests + 50))
    local per
    per=$(awk -v n="$requests" '$NF == "total" { printf "%.3f", $4 / n }' "$f.strace")
    local top
    top=$(awk -v n="$requests" '$1 ~ /^[0-9.]+$/ && $NF != "total" && shown < 5 { printf "%s%s %.3f", (shown ? ", " : ""), $NF, $4 / n; shown++ }' "$f.strace")
    log "$1: $requests requests, $per system calls per request (most called: $top)"
}

section_syscalls() {
    command -v strace > /dev/null || { echo "compare.sh: strace is not installed" >&2; return; }
    log "== syscalls: strace -c -f, 50 connections, ${SYSCALL_SECONDS}s ($(date -u +%F), load average $(cut -d' ' -f1-3 /proc/loadavg))"
    local servers=(mio std)
    uring_ok && servers+=(uring)
    start_nginx
    strace_run nginx "$NGINX_PORT" "$(pgrep -P "$NGINX_PID" | head -1)"
    stop "$NGINX_PID"
    declare -A port
    port[mio]=$MIO_PORT port[std]=$STD_PORT port[uring]=$URING_PORT
    for t in "${servers[@]}"; do
        start_server "$t" "${port[$t]}"
        strace_run "$t" "${port[$t]}" "$SERVER_PID"
        stop "$SERVER_PID"
    done
}

for s in "${SECTIONS[@]}"; do
    case "$s" in
        register) section_register ;;
        held) section_held ;;
        turns) section_turns ;;
        syscalls) section_syscalls ;;
        all) section_register; section_held; section_turns; section_syscalls ;;
        *) echo "compare.sh: unknown section $s (register, held, turns, syscalls, all)" >&2; exit 2 ;;
    esac
done
echo "results in $RESULTS"
