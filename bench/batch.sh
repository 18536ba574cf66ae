#!/usr/bin/env bash
# Figure 2: batch intake. `POST /v1/erasure-requests/batch` with 10,000-item bodies, as JSON and
# as CSV, against `erasure serve --no-worker`; items committed per second.
#
#   bench/batch.sh            # BATCHES=10 (per format) PARALLEL=2 (clients of the last pass)
#   BATCH_ITEMS=1000 bench/batch.sh   # calls of 1,000 items instead of 10,000 (as many items a pass)
#
# Three passes on one database: JSON from one client, CSV from one client, JSON from PARALLEL
# clients at once. Each body holds fresh ids, so every item is created. PRE_SQL: a statement run
# on the migrated database first, to try a schema change end to end
# (`PRE_SQL="alter table steps drop constraint steps_request_id_fkey"`).
source "$(dirname "$0")/lib.sh"

BATCHES=${BATCHES:-10}
export BATCH_ITEMS=${BATCH_ITEMS:-10000}
PARALLEL=${PARALLEL:-2}

require_tools psql curl jq python3
bench_init batch
fresh_db 0
start_api --no-worker
KEY=$(make_key requester)
[[ -z ${PRE_SQL:-} ]] || q "$PRE_SQL" >/dev/null

log "writing batch bodies"
gen_ids 1 $((BATCHES * 10000)) >"$BENCH_OUT/ids-json"
gen_ids 2 $((BATCHES * 10000)) >"$BENCH_OUT/ids-csv"
gen_ids 3 $((BATCHES * 10000 * PARALLEL)) >"$BENCH_OUT/ids-par"
batch_files "$BENCH_OUT/ids-json" "$BENCH_OUT/json" json account
batch_files "$BENCH_OUT/ids-csv" "$BENCH_OUT/csv" csv account
batch_files "$BENCH_OUT/ids-par" "$BENCH_OUT/par" json account

# warm-up: one small batch
gen_ids 4 100 >"$BENCH_OUT/ids-warm"; batch_files "$BENCH_OUT/ids-warm" "$BENCH_OUT/warm" json account
post_batch "$BENCH_OUT/warm/batch-0000.json" "$KEY" >/dev/null

# Start from a checkpoint: one that the benchmark before this one started (its WAL, against
# max_wal_size) would otherwise run on into these passes, with full-page images of every page it
# touches first, and the figure would depend on what ran before (in run-all.sh, intake).
q "checkpoint" >/dev/null

# run_pass NAME DIR: posts every file of DIR one after the other; prints items/s and per-call times.
# The client reads the answers (a 10,000-item JSON each) once the clock has stopped: the figure is
# the service's, not jq's.
run_pass() {
    local name=$1 dir=$2 created=0 t0 t1 f c d i times=()
    local cpu0 pg0; cpu0=$(cpu_secs "$API_PID"); pg0=$(pg_cpu_secs)
    mkdir -p "$BENCH_OUT/answers-$name"
    t0=$(now)
    for f in "$dir"/batch-*; do
        times+=("$(send_batch "$f" "$KEY" "$BENCH_OUT/answers-$name/${f##*/}")")
    done
    t1=$(now)
    local cpu1 pg1; cpu1=$(cpu_secs "$API_PID"); pg1=$(pg_cpu_secs)
    for f in "$BENCH_OUT/answers-$name"/*; do
        read -r c d i < <(batch_counts "$f")
        ((d == 0 && i == 0)) || die "$f: $d duplicates, $i invalid"
        created=$((created + c))
    done
    local el; el=$(calc "$t1 - $t0")
    figure "batch.$name.items_per_s" "$(fmt "$created / $el")" items/s \
        "$created items in $(fmt "$el" 1)s, one client (target >= 30,000)"
    figure "batch.$name.call_seconds" "$(python3 -c "import statistics as s; t=[float(x) for x in '${times[*]}'.split()]; print(f'{s.median(t):.2f} med / {max(t):.2f} max')")" s "per $BATCH_ITEMS-item call"
    figure "batch.$name.cpu_service" "$(fmt "($cpu1 - $cpu0) / $el * 100")" "% of 1 core" ""
    figure "batch.$name.cpu_postgres" "$(fmt "($pg1 - $pg0) / $el * 100")" "% of 1 core" "all postgres processes"
}

echo
echo "== batch intake: POST /v1/erasure-requests/batch, $BATCH_ITEMS items a call, $((BATCHES * 10000 / BATCH_ITEMS)) calls a pass =="
run_pass json "$BENCH_OUT/json"
run_pass csv "$BENCH_OUT/csv"

# PARALLEL clients, each posting its share of the files.
files=("$BENCH_OUT"/par/batch-*)
t0=$(now); pids=()
for ((k = 0; k < PARALLEL; k++)); do
    (
        for ((n = k; n < ${#files[@]}; n += PARALLEL)); do send_batch "${files[n]}" "$KEY" /dev/null >/dev/null; done
    ) &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || die "a parallel client failed"; done
t1=$(now)
n=$(q "select count(*) from erasure_requests")
figure "batch.json_x$PARALLEL.items_per_s" "$(fmt "$(wc -l <"$BENCH_OUT/ids-par") / ($t1 - $t0)")" items/s "$PARALLEL clients at once"
figure batch.total_rows "$n" rows "requests in the database after the three passes (+100 warm-up)"

# Look-ups by target at this size: `POST /v1/subjects/lookup` for targets of the first pass (found)
# and targets never sent (not found), one keep-alive connection, each call timed.
python3 - "$API_URL" "$KEY" "$BENCH_OUT/ids-json" >"$BENCH_OUT/lookup.txt" <<'PY'
import http.client, json, random, statistics, sys, time, urllib.parse
url, key, ids = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2], open(sys.argv[3]).read().split()
random.seed(7)
targets = [(t, True) for t in random.sample(ids, 100)] + [(str(9_000_000_000 + n), False) for n in range(100)]
conn, times = http.client.HTTPConnection(url.hostname, url.port), []
for target, sent in targets:
    body = json.dumps({"scope": "account", "target_id": target})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/subjects/lookup", body, {"authorization": f"Bearer {key}", "content-type": "application/json"})
    answer = conn.getresponse().read()
    times.append((time.perf_counter() - t0) * 1000)
    found = len(json.loads(answer)["requests"])
    assert found == (1 if sent else 0), (target, answer[:200])
times.sort()
print(f"{statistics.median(times):.2f} {times[int(len(times) * 0.99)]:.2f}")
PY
read -r med p99 <"$BENCH_OUT/lookup.txt"
figure batch.lookup_ms "$med med / $p99 p99" ms "POST /v1/subjects/lookup at $n requests (200 targets, half of them never sent)"
