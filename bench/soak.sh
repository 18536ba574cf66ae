#!/usr/bin/env bash
# The soak: DURATION seconds (3600) of steady single POSTs of account erasures at RATE a second
# (150: half of the 309 erasures/s bench/throughput.sh measured on 2026-11-29) into one
# `erasure serve` (API and worker in one process) against the simulator. Prints a sample every
# SAMPLE seconds (60): POST latency, accepted -> completed latency, completions, open requests,
# memory of the service (resident and live heap) and the simulator, load average; then the first
# and last quarter side by side and a verdict on whether memory and latency stayed flat (bench/soak_load.py).
#
#   bench/soak.sh                          # RATE=150 DURATION=3600 SAMPLE=60 MAX_RPS=1000
#   RATE=20 DURATION=120 SAMPLE=10 bench/soak.sh   # a quick look
source "$(dirname "$0")/lib.sh"

RATE=${RATE:-150}
DURATION=${DURATION:-3600}
SAMPLE=${SAMPLE:-60}
MAX_RPS=${MAX_RPS:-1000}

require_tools psql curl jq python3
bench_init soak
fresh_db 0
start_sim --journal-capacity 100000
seed_accounts "$(python3 -c "print(int($RATE * $DURATION))")" "$BENCH_OUT/accounts"
export ERASURE_UPSTREAM_MAX_RPS=$MAX_RPS ERASURE_UPSTREAM_MAX_CONCURRENCY=32
export ERASURE_REVERIFY_EVERY_HOURS=0
start_api
KEY=$(make_key requester)
python3 "$BENCH_DIR/soak_load.py" "$API_URL" "$KEY" "$BENCH_OUT/accounts" "$RATE" "$DURATION" "$SAMPLE" \
    "$BENCH_DB" "$API_PID" "$SIM_PID"
