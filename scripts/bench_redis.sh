#!/usr/bin/env bash
# daemonhost next to redis-server on this machine, `ping` against PING_MBULK: throughput and the
# server's CPU time per request, for a few connections × pipeline-depth configurations.
#
#   scripts/bench_redis.sh
#   ROUNDS=5 DURATION=20 CONFIGS="1x1 16x1 4x64" scripts/bench_redis.sh
#
# Environment (all optional):
#   ROUNDS     rounds, each running every configuration once on both servers (default 3);
#              the table shows the median over rounds
#   DURATION   seconds measured per run (default 10; `2`, `2s` and `1.5` work)
#   CONFIGS    space-separated CONNECTIONSxDEPTH (default "16x1 4x64")
#   WARMUP     daemonhost bench's unmeasured warmup before each run (default 1s)
#   REDIS_N    redis-benchmark's request count for every run; default: calibrated per
#              configuration so that a run takes about DURATION seconds
#   CARGO_TARGET_DIR  default $HOME/.cache/daemonhost-target (shared with CI)
#   DAEMONHOST_BIN    run this daemonhost binary instead of building the checkout (for an A/B
#                     of two commits)
#
# What it does: installs redis-server and redis-tools from Debian when redis-server or
# redis-benchmark is missing, builds daemonhost in release, starts `daemonhost run` in a temp
# data dir (socket DIR/daemonhost.sock, no web listener) and redis-server on a Unix socket in
# the same temp dir (no TCP port, no persistence), then runs, in interleaved rounds (the order of
# the two servers alternates from round to round):
#   daemonhost bench --connections C --depth P --duration DURATION --command ping --json
#   redis-benchmark -s SOCK -c C -P P -n N -t ping_mbulk -q
# daemonhost's CPU per request is the bench's own `server_cpu_us_per_req` (the host's /proc over
# the measured window); redis-server's is its /proc/PID/task/*/schedstat (ns on CPU, all
# threads) before and after each redis-benchmark run, divided by N (/proc/PID/stat utime +
# stime if its threads changed in between). Both servers are stopped on exit.
#
# Both clients run on the same machine as the servers: on a small machine the client's CPU is
# taken from the server's. The two clients differ too: redis-benchmark is one event-loop thread,
# daemonhost bench one thread per connection. CI does not run this script.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
DURATION="${DURATION%s}"
CONFIGS="${CONFIGS:-16x1 4x64}"
WARMUP="${WARMUP:-1s}"
REDIS_N="${REDIS_N:-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/daemonhost-target}"

die() {
    echo "bench_redis: $*" >&2
    exit 1
}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ "$DURATION" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "DURATION must be seconds, e.g. 10 or 2.5 (got '$DURATION')"
for cfg in $CONFIGS; do
    [[ "$cfg" =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || die "CONFIGS entries are CONNECTIONSxDEPTH, e.g. 16x1 (got '$cfg')"
done
[[ -z "$REDIS_N" || "$REDIS_N" =~ ^[1-9][0-9]*$ ]] || die "REDIS_N must be a positive integer"

echo "== redis"
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    sudo=()
    [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
fi
redis-server --version

if [[ -n "${DAEMONHOST_BIN:-}" ]]; then
    [[ -x "$DAEMONHOST_BIN" ]] || die "DAEMONHOST_BIN is not an executable: $DAEMONHOST_BIN"
    BIN="$DAEMONHOST_BIN"
    echo "== daemonhost ($BIN, not rebuilt)"
else
    echo "== daemonhost (release build, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    cargo build --release -p daemonhost
    BIN="$CARGO_TARGET_DIR/release/daemonhost"
fi

tmp="$(mktemp -d -t bench_redis.XXXXXX)"
dh_pid=""
redis_pid=""
cleanup() {
    local pid
    for pid in "$dh_pid" "$redis_pid"; do
        if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for pid in "$dh_pid" "$redis_pid"; do
        if [[ -n "$pid" ]]; then wait "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

dh_sock="$tmp/dh/daemonhost.sock"
redis_sock="$tmp/redis.sock"

"$BIN" --data-dir "$tmp/dh" --log-level warn run --web-listen off >"$tmp/daemonhost.log" 2>&1 &
dh_pid=$!
redis-server --port 0 --unixsocket "$redis_sock" --unixsocketperm 700 --save '' \
    --appendonly no --dir "$tmp" --logfile "$tmp/redis.log" --daemonize no &
redis_pid=$!

# Wait (up to 30 s) for both to answer a ping.
for _ in $(seq 300); do
    kill -0 "$dh_pid" 2>/dev/null || { cat "$tmp/daemonhost.log" >&2; die "daemonhost run exited"; }
    kill -0 "$redis_pid" 2>/dev/null || { cat "$tmp/redis.log" >&2; die "redis-server exited"; }
    if "$BIN" --socket "$dh_sock" call ping >/dev/null 2>&1 &&
        [[ "$(redis-cli -s "$redis_sock" ping 2>/dev/null)" == PONG ]]; then
        break
    fi
    sleep 0.1
done
"$BIN" --socket "$dh_sock" call ping >/dev/null || die "daemonhost does not answer on $dh_sock"
[[ "$(redis-cli -s "$redis_sock" ping)" == PONG ]] || die "redis-server does not answer on $redis_sock"
echo "daemonhost pid $dh_pid on $dh_sock; redis-server pid $redis_pid on $redis_sock"

# --- CPU of a process from /proc ------------------------------------------------------------

CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

# The thread ids of PID, one a line, sorted.
tids() {
    local t
    for t in /proc/"$1"/task/*; do echo "${t##*/}"; done | sort
}

# ns on CPU of PID's live threads: the first field of each /proc/PID/task/TID/schedstat.
sched_ns() {
    local f v total=0
    for f in /proc/"$1"/task/*/schedstat; do
        read -r v _ <"$f" 2>/dev/null || continue
        total=$((total + v))
    done
    echo "$total"
}

# utime + stime of PID (fields 14 and 15 of /proc/PID/stat, counted after the command name's
# closing parenthesis), in ns.
stat_ns() {
    local rest
    rest="$(<"/proc/$1/stat")"
    rest="${rest##*) }"
    awk -v tck="$CLK_TCK" '{ printf "%.0f\n", ($12 + $13) * 1e9 / tck }' <<<"$rest"
}

# --- one run of each ------------------------------------------------------------------------

# JSON number of KEY in the one-line JSON on stdin ("" when null or absent).
json_num() {
    sed -n "s/.*\"$1\":\(-\{0,1\}[0-9][0-9.eE+-]*\).*/\1/p"
}

# daemonhost bench; prints "REQ_PER_S SERVER_US_PER_REQ CLIENT_US_PER_REQ" (n/a when unknown).
run_daemonhost() {
    local c=$1 p=$2 out rps server client
    out="$("$BIN" --socket "$dh_sock" bench --command ping --connections "$c" --depth "$p" \
        --duration "${DURATION}s" --warmup "$WARMUP" --json)" ||
        die "daemonhost bench failed: $out"
    rps="$(json_num req_per_s <<<"$out")"
    server="$(json_num server_cpu_us_per_req <<<"$out")"
    client="$(json_num client_cpu_us_per_req <<<"$out")"
    if [[ -z "$server" ]]; then
        echo "  daemonhost: server CPU unavailable: $(sed -n 's/.*"server_cpu_unavailable":"\([^"]*\)".*/\1/p' <<<"$out")" >&2
    fi
    echo "${rps:-n/a} ${server:-n/a} ${client:-n/a}"
}

# redis-benchmark -n N; prints "REQ_PER_S SERVER_US_PER_REQ".
run_redis() {
    local c=$1 p=$2 n=$3 before_t after_t before_s after_s before_st after_st out rps cpu
    before_t="$(tids "$redis_pid")"
    before_st="$(stat_ns "$redis_pid")"
    before_s="$(sched_ns "$redis_pid")"
    out="$(redis-benchmark -s "$redis_sock" -c "$c" -P "$p" -n "$n" -t ping_mbulk -q 2>&1)" ||
        die "redis-benchmark failed: $out"
    after_s="$(sched_ns "$redis_pid")"
    after_st="$(stat_ns "$redis_pid")"
    after_t="$(tids "$redis_pid")"
    # -q still prints progress lines ending in \r; the summary is
    # "PING_MBULK: 123456.79 requests per second, p50=0.135 msec".
    rps="$(tr '\r' '\n' <<<"$out" | sed -n 's/^PING_MBULK: \([0-9.]*\) requests per second.*/\1/p' | tail -n 1)"
    [[ -n "$rps" ]] || die "cannot read redis-benchmark's output: $out"
    if [[ "$before_t" == "$after_t" ]]; then
        cpu=$((after_s - before_s))
    else
        echo "  redis-server's threads changed during the run: CPU from /proc/$redis_pid/stat" >&2
        cpu=$((after_st - before_st))
    fi
    awk -v r="$rps" -v ns="$cpu" -v n="$n" 'BEGIN { printf "%.2f %.3f\n", r, ns / n / 1000 }'
}

# Requests for a redis-benchmark run of about DURATION seconds at C × P: from a short run
# (grown tenfold until it takes at least 0.5 s), which also warms redis-server up.
calibrate_redis() {
    local c=$1 p=$2 n=20000 rps
    while :; do
        rps="$(run_redis "$c" "$p" "$n" | cut -d' ' -f1)"
        if awk -v r="$rps" -v n="$n" 'BEGIN { exit !(n / r >= 0.5) }' || ((n >= 20000000)); then
            break
        fi
        n=$((n * 10))
    done
    awk -v r="$rps" -v d="$DURATION" 'BEGIN { n = r * d; if (n < 1000) n = 1000; printf "%.0f\n", n }'
}

# The median of the arguments that are numbers ("n/a" when none).
median() {
    printf '%s\n' "$@" | grep -E '^-?[0-9]' | sort -g |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "n/a"; exit }
            if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A redis_n dh_rps dh_cpu dh_client redis_rps redis_cpu
for cfg in $CONFIGS; do
    c="${cfg%x*}"
    p="${cfg#*x}"
    if [[ -n "$REDIS_N" ]]; then
        redis_n[$cfg]="$REDIS_N"
    else
        redis_n[$cfg]="$(calibrate_redis "$c" "$p")"
    fi
    echo "redis-benchmark at ${c}×${p}: -n ${redis_n[$cfg]} (about ${DURATION} s)"
done

echo "== $ROUNDS round(s) of: ${CONFIGS} (connections×depth), ${DURATION} s each"
for round in $(seq "$ROUNDS"); do
    for cfg in $CONFIGS; do
        c="${cfg%x*}"
        p="${cfg#*x}"
        order=(daemonhost redis)
        ((round % 2)) || order=(redis daemonhost)
        for server in "${order[@]}"; do
            if [[ "$server" == daemonhost ]]; then
                res="$(run_daemonhost "$c" "$p")"
                read -r rps cpu client <<<"$res"
                dh_rps[$cfg]+=" $rps"
                dh_cpu[$cfg]+=" $cpu"
                dh_client[$cfg]+=" $client"
                printf 'round %s %6s daemonhost  %12s req/s  server %8s µs/req  (bench client %s µs/req)\n' \
                    "$round" "$cfg" "$rps" "$cpu" "$client"
            else
                res="$(run_redis "$c" "$p" "${redis_n[$cfg]}")"
                read -r rps cpu <<<"$res"
                redis_rps[$cfg]+=" $rps"
                redis_cpu[$cfg]+=" $cpu"
                printf 'round %s %6s redis       %12s req/s  server %8s µs/req\n' \
                    "$round" "$cfg" "$rps" "$cpu"
            fi
        done
    done
done

# --- the table ------------------------------------------------------------------------------

fmt() { # FORMAT VALUE: printf unless n/a
    # shellcheck disable=SC2059 # the format is the argument
    if [[ "$2" == n/a ]]; then echo n/a; else printf "$1" "$2"; fi
}
echo
echo "daemonhost $(git rev-parse --short HEAD 2>/dev/null || echo '?') vs $(redis-server --version | awk '{print $1, $2, $3}'), $(nproc) CPUs, ${DURATION} s per run, median of $ROUNDS round(s)"
echo
echo "| connections × depth | daemonhost req/s | redis req/s | daemonhost server CPU µs/req | redis server CPU µs/req |"
echo "|---|---:|---:|---:|---:|"
for cfg in $CONFIGS; do
    # shellcheck disable=SC2086 # the lists are space-separated on purpose
    printf '| %s × %s | %s | %s | %s | %s |\n' "${cfg%x*}" "${cfg#*x}" \
        "$(fmt '%.0f' "$(median ${dh_rps[$cfg]})")" \
        "$(fmt '%.0f' "$(median ${redis_rps[$cfg]})")" \
        "$(fmt '%.2f' "$(median ${dh_cpu[$cfg]})")" \
        "$(fmt '%.2f' "$(median ${redis_cpu[$cfg]})")"
done
