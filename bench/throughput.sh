#!/usr/bin/env bash
# Figure 3a: throughput without upstream latency. N account erasures (default 100,000) are queued
# through the batch endpoint while no worker runs (`serve --no-worker`, then stopped); then ONE
# `erasure worker` starts with high caps and the script polls
# `select count(*) from erasure_requests where state = 'completed'` every second.
#
#   bench/throughput.sh        # N=100000 MAX_RPS=100000 UPSTREAM_CONCURRENCY=256 WORKER_CONCURRENCY=1024
#                              # DB_POOL=40 (the default of ERASURE_DB_POOL) TIMEOUT=1200 (s)
#
# WORKER_CONCURRENCY is well above the upstream cap: a step spends most of its time waiting for its
# outcome's commit, and the more steps end together, the more outcomes one commit carries
# (`src/store/group.rs`; at 64, groups of about 4 and 430 erasures/s; at 1,024, about 10 and 900).
#
# Prints completed erasures/s (all N over the time from the worker's start to the last completion),
# steps/s, when the first erasure completed, failures, the CPU of the worker, the simulator and
# PostgreSQL while it ran, and what the database sessions waited on.
source "$(dirname "$0")/lib.sh"

N=${N:-100000}
MAX_RPS=${MAX_RPS:-100000}
UPSTREAM_CONCURRENCY=${UPSTREAM_CONCURRENCY:-256}
WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-1024}
DB_POOL=${DB_POOL:-40}
TIMEOUT=${TIMEOUT:-1200}

require_tools psql curl jq python3
bench_init throughput
fresh_db 0
start_sim
seed_accounts "$N" "$BENCH_OUT/accounts"
start_api --no-worker
KEY=$(make_key requester)
batch_files "$BENCH_OUT/accounts" "$BENCH_OUT/batches" csv account
log "queueing $N account erasures"
t0=$(now)
for f in "$BENCH_OUT"/batches/batch-*; do post_batch "$f" "$KEY" >/dev/null; done
log "queued in $(fmt "$(now) - $t0" 1)s"
stop_pid "$API_PID"
queued=$(q "select count(*) from erasure_requests where state = 'queued'")
[[ $queued -eq $N ]] || die "$queued queued, expected $N"
q "analyze"

export ERASURE_UPSTREAM_MAX_RPS=$MAX_RPS ERASURE_UPSTREAM_MAX_CONCURRENCY=$UPSTREAM_CONCURRENCY
export ERASURE_WORKER_CONCURRENCY=$WORKER_CONCURRENCY ERASURE_DB_POOL=$DB_POOL
w_cpu0=0; s_cpu0=$(cpu_secs "$SIM_PID"); pg_cpu0=$(pg_cpu_secs); busy0=$(machine_busy_secs)
start_worker
start=$(date +%s.%N); SECONDS=0
: >"$BENCH_OUT/progress"
sampled=0
while :; do
    sleep 1
    IFS='|' read -r done failed < <(q "select count(*) filter (where state = 'completed'), count(*) filter (where state = 'failed') from erasure_requests")
    echo "$(date +%s.%N) $done $failed" >>"$BENCH_OUT/progress"
    if ((sampled == 0 && SECONDS >= 10)); then # where the time goes, once, 10 s in
        top -b -n 1 -w 200 | head -n 20 >"$BENCH_OUT/top-throughput.txt" || true
        wait_events "$BENCH_DB" 10 >"$BENCH_OUT/wait-events.txt" &
        WAIT_PID=$!
        sampled=1
    fi
    ((done + failed >= N)) && break
    if ((SECONDS > TIMEOUT)); then log "timeout: $done of $N completed"; break; fi
    kill -0 "$WORKER_PID" 2>/dev/null || die "the worker exited; see $BENCH_OUT/worker.log"
done
end=$(date +%s.%N)
elapsed=$(calc "$end - $start")
w_cpu=$(cpu_secs "$WORKER_PID"); s_cpu1=$(cpu_secs "$SIM_PID"); pg_cpu1=$(pg_cpu_secs); busy1=$(machine_busy_secs)
w_rss=$(awk '/VmHWM/ { print $2 }' "/proc/$WORKER_PID/status")
stop_pid "$WORKER_PID"
[[ -n ${WAIT_PID:-} ]] && wait "$WAIT_PID"

IFS='|' read -r done failed < <(q "select count(*) filter (where state = 'completed'), count(*) filter (where state = 'failed') from erasure_requests")
IFS='|' read -r first_done last_done < <(q "select round(extract(epoch from min(completed_at)) - $start, 1), round(extract(epoch from max(completed_at)) - $start, 1) from erasure_requests where state = 'completed'")
# Steps done per second, from the audit log (each step's success writes one entry).
IFS='|' read -r steps steps_p50 steps_max < <(q "
    with s as (select date_trunc('second', at) as sec, count(*) as n from audit_entries
               where event in ('inventoried', 'deleted', 'verified_absent', 'cascade_observed') group by 1)
    select sum(n), percentile_disc(0.5) within group (order by n), max(n) from s")
steps_retried=$(q "select count(*) from steps where attempts > 1")
calls=$(q "select coalesce(sum(jsonb_array_length(data->'calls')), 0) from audit_entries where data ? 'calls'")
echo
echo "== throughput: $N queued account erasures, one worker, simulator without latency =="
figure throughput.completed "$done" erasures "of $N in $(fmt "$elapsed" 1)s ($failed failed)"
figure throughput.erasures_per_s "$(fmt "$done / $elapsed")" erasures/s "from the worker's start to the last completion seen (target >= 1,000)"
figure throughput.first_completion_s "$first_done" s "after the worker's start (last: ${last_done}s): steps run oldest run_at first"
figure throughput.steps_per_s "$(fmt "$steps / $elapsed")" steps/s "$steps steps; per-second median $steps_p50, max $steps_max"
figure throughput.upstream_calls_per_s "$(fmt "$calls / $elapsed")" calls/s "$calls upstream calls in the audit log"
figure throughput.steps_retried "$steps_retried" steps "attempts > 1"
figure throughput.cpu_worker "$(fmt "$w_cpu / $elapsed * 100")" "% of 1 core" "erasure worker"
figure throughput.cpu_simulator "$(fmt "($s_cpu1 - $s_cpu0) / $elapsed * 100")" "% of 1 core" "erasure sim"
figure throughput.cpu_postgres "$(fmt "($pg_cpu1 - $pg_cpu0) / $elapsed * 100")" "% of 1 core" "all postgres processes"
figure throughput.cpu_machine "$(fmt "($busy1 - $busy0) / $elapsed * 100")" "% of 1 core" "whole machine ($(nproc) cores)"
figure throughput.worker_peak_rss "$(fmt "$w_rss / 1024" 1)" MiB "VmHWM of the worker"
if ((steps_retried > 0)); then
    echo "why attempts failed before a retry (audit log, error: count):"
    q "select '    ' || coalesce(data->>'error', '?') || ': ' || count(*) from audit_entries \
       where event = 'attempt_failed' group by data->>'error' order by count(*) desc limit 10"
fi
if ((failed > 0)); then
    echo "failures (request failure_reason, count):"
    q "select '    ' || coalesce(failure_reason, '?') || ': ' || count(*) from erasure_requests where state = 'failed' group by failure_reason"
fi
echo "what the database sessions waited on, 10 s into the run (pg_stat_activity samples, active sessions):"
cat "$BENCH_OUT/wait-events.txt"
