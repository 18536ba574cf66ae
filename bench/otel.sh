#!/usr/bin/env bash
# Intake with traces on against off, interleaved in one run: single `POST /v1/erasure-requests`
# at 64 connections (wrk and bench/intake.lua, as bench/intake.sh) against `erasure serve
# --no-worker`, started afresh for each round, alternately without OpenTelemetry settings (off)
# and with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a do-nothing OTLP/HTTP receiver on this
# machine (on: bench/otlp_sink.py, which answers without decoding). The order flips every round
# (off-on, on-off, ...) so that a drift of the machine or the growing table weighs on both.
#
#   bench/otel.sh        # ROUNDS=4 DURATION=20 CONNECTIONS=64 THREADS=2 WARMUP=3
#
# Prints each round's rate and the service's CPU per request, the median of each mode, on as a
# share of off (aim: >= 95 %), and what the receiver got (requests, bytes). On a machine shared
# with other work the rates swing by more than 5 % between rounds; the CPU per request is the
# steadier figure then.
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-3}

require_tools wrk psql curl python3
bench_init otel
fresh_db 0
KEY=$(make_key requester)
export BENCH_KEY=$KEY

python3 "$BENCH_DIR/otlp_sink.py" "$BENCH_OUT/sink-counts.txt" >"$BENCH_OUT/sink.out" 2>"$BENCH_OUT/sink.log" &
SINK_PID=$!
_BENCH_PIDS+=("$SINK_PID")
for _ in $(seq 1 50); do grep -q listening "$BENCH_OUT/sink.out" 2>/dev/null && break; sleep 0.1; done
SINK_URL="http://127.0.0.1:$(awk '/listening/ { print $2 }' "$BENCH_OUT/sink.out")"
log "OTLP sink on $SINK_URL (pid $SINK_PID)"

declare -a OFF ON OFF_CPU ON_CPU
prefix=10
run_mode() { # MODE: one round of one mode; sets RPS and CPU_US (service CPU per request, µs)
    local mode=$1 non2xx cpu0 cpu1
    if [[ $mode == on ]]; then
        export OTEL_EXPORTER_OTLP_ENDPOINT=$SINK_URL OTEL_SERVICE_NAME=erasure-bench
    fi
    start_api --no-worker
    unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_SERVICE_NAME
    prefix=$((prefix + 1))
    if ((WARMUP > 0)); then
        BENCH_ID_PREFIX=$prefix wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$BENCH_DIR/intake.lua" \
            "$API_URL/v1/erasure-requests" >"$BENCH_OUT/wrk-warmup-$prefix.txt"
    fi
    prefix=$((prefix + 1))
    cpu0=$(cpu_secs "$API_PID")
    BENCH_ID_PREFIX=$prefix wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$BENCH_DIR/intake.lua" \
        "$API_URL/v1/erasure-requests" >"$BENCH_OUT/wrk-$mode-$prefix.txt"
    cpu1=$(cpu_secs "$API_PID")
    stop_pid "$API_PID"
    RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$BENCH_OUT/wrk-$mode-$prefix.txt")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$BENCH_OUT/wrk-$mode-$prefix.txt")
    [[ -n $RPS ]] || die "round $prefix ($mode): wrk gave no rate (see $BENCH_OUT/wrk-$mode-$prefix.txt)"
    [[ -z $non2xx ]] || die "round $prefix ($mode): $non2xx non-2xx responses"
    CPU_US=$(calc "round(($cpu1 - $cpu0) / ($RPS * $DURATION) * 1e6, 1)")
    log "round $prefix: traces $mode: $RPS req/s, $CPU_US µs of service CPU a request"
}

for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2 == 1)); then order=(off on); else order=(on off); fi
    for mode in "${order[@]}"; do
        run_mode "$mode"
        if [[ $mode == on ]]; then ON+=("$RPS") ON_CPU+=("$CPU_US"); else OFF+=("$RPS") OFF_CPU+=("$CPU_US"); fi
    done
done
stop_pid "$SINK_PID"
read -r sink_requests sink_bytes <"$BENCH_OUT/sink-counts.txt"
committed=$(q "select count(*) from erasure_requests")
traced=$(q "select count(*) from erasure_requests where traceparent is not null")

median() { printf '%s\n' "$@" | sort -g | python3 -c 'import sys, statistics; print(statistics.median(float(l) for l in sys.stdin))'; }
off_median=$(median "${OFF[@]}")
on_median=$(median "${ON[@]}")
echo
echo "== intake with traces on (OTLP/HTTP to a do-nothing receiver) against off, $ROUNDS rounds of ${DURATION}s each, interleaved =="
echo "off: ${OFF[*]} req/s; ${OFF_CPU[*]} µs of service CPU a request"
echo "on:  ${ON[*]} req/s; ${ON_CPU[*]} µs of service CPU a request"
figure otel.intake_off "$(fmt "$off_median")" req/s "median of $ROUNDS rounds, no OTEL settings"
figure otel.intake_on "$(fmt "$on_median")" req/s "median of $ROUNDS rounds, OTEL_EXPORTER_OTLP_ENDPOINT set"
figure otel.on_share_of_off "$(fmt "$on_median / $off_median * 100" 1)" "%" "aim >= 95 %"
off_cpu=$(median "${OFF_CPU[@]}")
on_cpu=$(median "${ON_CPU[@]}")
figure otel.cpu_per_request_off "$off_cpu" "µs" "service CPU a request, median"
figure otel.cpu_per_request_on "$on_cpu" "µs" "service CPU a request, median ($(fmt "($on_cpu / $off_cpu - 1) * 100" 1) % more)"
figure otel.receiver "$sink_requests" "exports" "$(fmt "$sink_bytes / 1048576" 1) MiB of protobuf; $traced of $committed requests keep a traceparent"
