#!/usr/bin/env bash
# Figure 5: memory and claim time as the queue grows.
#  - TOTAL requests (default 1,000,000) are queued through the batch endpoint, 10,000 a call, with
#    no worker running. At 10k, 100k and TOTAL queued, the claim query of src/store/steps.rs
#    `claim()` (taken from the source by sql_from_src.py) is timed: one EXPLAIN ANALYZE for the plan,
#    then REPEAT executions with psql's \timing, each in a transaction rolled back (limit 64,
#    lease 30 s, as a worker with 64 free slots would run it).
#  - Then ONE `erasure worker` runs for WORKER_SECS against the simulator (ids unknown upstream:
#    each erasure is 3 calls answered 404, "already erased") and its VmRSS is sampled every second.
#  - The claim query is timed once more after the worker ran (dead tuples from its claims).
#
#   bench/memory.sh      # TOTAL=1000000 WORKER_SECS=60 REPEAT=7
source "$(dirname "$0")/lib.sh"

TOTAL=${TOTAL:-1000000}
WORKER_SECS=${WORKER_SECS:-60}
REPEAT=${REPEAT:-7}

require_tools psql curl jq python3
bench_init memory
fresh_db 0
start_sim
start_api --no-worker
KEY=$(make_key requester)
python3 "$BENCH_DIR/sql_from_src.py" src/store/steps.rs claim >"$BENCH_OUT/claim.sql"

# claim_time LABEL: prints the claim figures at the current queue size.
claim_time() {
    local label=$1 ready sql
    ready=$(q "select count(*) from steps where state = 'ready'")
    sql=$(cat "$BENCH_OUT/claim.sql")
    {
        echo "prepare claim(bigint, interval) as $sql;"
        echo "begin; explain (analyze, buffers) execute claim(64, '30 seconds'); rollback;"
        echo '\timing on'
        echo '\o /dev/null'
        for ((i = 0; i < REPEAT; i++)); do
            echo "begin; execute claim(64, '30 seconds'); rollback;"
        done
    } | psql -X -q -d "$BENCH_DB" >"$BENCH_OUT/claim-$label.txt" 2>&1
    python3 - "$BENCH_OUT/claim-$label.txt" "$label" "$ready" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
label, ready = sys.argv[2], int(sys.argv[3])
explain = re.search(r"Execution Time: ([\d.]+) ms", text)
# \timing prints a line per statement (BEGIN, EXECUTE, ROLLBACK): keep every third, the EXECUTE.
times = [float(t) for t in re.findall(r"^Time: ([\d.]+) ms", text, re.M)]
execs = times[1::3] if len(times) % 3 == 0 and times else times
med = statistics.median(execs) if execs else float("nan")
print(f"FIGURE {'memory.claim_ms.' + label:<42} {med:>14.2f} {'ms':<10} median of {len(execs)} "
      f"(min {min(execs):.2f}, max {max(execs):.2f}); EXPLAIN ANALYZE {explain.group(1) if explain else '?'} ms; "
      f"{ready:,} steps ready")
PY
}

log "writing $((TOTAL / 10000)) batch bodies"
gen_ids 5 "$TOTAL" >"$BENCH_OUT/ids"
batch_files "$BENCH_OUT/ids" "$BENCH_OUT/batches" json account
rm -f "$BENCH_OUT/ids"

echo
echo "== memory and claim time: $TOTAL queued requests =="
queued=0; t0=$(now)
for f in "$BENCH_OUT"/batches/batch-*; do
    read -r c _ < <(post_batch "$f" "$KEY")
    queued=$((queued + c))
    rm -f "$f"
    case $queued in
        10000) claim_time 10k ;;
        100000) claim_time 100k ;;
    esac
    ((queued % 100000 == 0)) && log "$queued queued"
done
t1=$(now)
figure memory.intake_items_per_s "$(fmt "$queued / ($t1 - $t0)")" items/s "$queued items in 10,000-item calls, claim timings included"
claim_time "$((TOTAL / 1000))k"
api_rss=$(awk '/VmHWM/ { print $2 }' "/proc/$API_PID/status")
figure memory.api_peak_rss "$(fmt "$api_rss / 1024" 1)" MiB "VmHWM of serve --no-worker after the intake"
figure memory.database_size "$(q "select pg_size_pretty(pg_database_size(current_database()))")" "" ""
stop_pid "$API_PID"

export ERASURE_UPSTREAM_MAX_RPS=100000 ERASURE_UPSTREAM_MAX_CONCURRENCY=64 ERASURE_WORKER_CONCURRENCY=64
start_worker
: >"$BENCH_OUT/rss"
for ((s = 1; s <= WORKER_SECS; s++)); do
    sleep 1
    kill -0 "$WORKER_PID" 2>/dev/null || die "the worker exited; see $BENCH_OUT/worker.log"
    awk -v s="$s" '/VmRSS/ { print s, $2 }' "/proc/$WORKER_PID/status" >>"$BENCH_OUT/rss"
done
hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$WORKER_PID/status")
stop_pid "$WORKER_PID"
IFS='|' read -r done open < <(q "select count(*) filter (where state = 'completed'), count(*) filter (where state not in ('completed', 'cancelled')) from erasure_requests")
steps_done=$(q "select count(*) from steps where state = 'succeeded'")
read -r max last < <(awk '{ if ($2 > m) m = $2; l = $2 } END { print m, l }' "$BENCH_OUT/rss")
figure memory.worker_rss_max "$(fmt "$max / 1024" 1)" MiB "max VmRSS sampled each second for ${WORKER_SECS}s (target <= 100)"
figure memory.worker_rss_last "$(fmt "$last / 1024" 1)" MiB "VmRSS at the end"
figure memory.worker_peak_rss "$(fmt "$hwm / 1024" 1)" MiB "VmHWM"
figure memory.worker_steps_done "$steps_done" steps "in ${WORKER_SECS}s; $done erasures completed, $open still open (oldest steps first)"
claim_time "$((TOTAL / 1000))k_after_worker"
