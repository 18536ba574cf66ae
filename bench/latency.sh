#!/usr/bin/env bash
# Figure 4: latency on an idle system. COUNT account erasures submitted one at a time to
# `erasure serve` (API and workers in one process), each awaited before the next; the figures are
# `completed_at - received_at` from the database, and where the time goes from the audit log
# (its `at` is clock_timestamp() of each entry, written in the transaction of each step).
#
#   bench/latency.sh      # COUNT=200 MAX_RPS=1000 GAP_MS=50; POLL_MS (default: the service's
#                         # default, 1000) and WORKER_CONCURRENCY (32) are passed when set
#
# MAX_RPS: with the default ERASURE_UPSTREAM_MAX_RPS=20 the limiter alone spaces the 4 calls of an
# account erasure 50 ms apart (>= 150 ms per erasure); run with MAX_RPS=20 to see it.
source "$(dirname "$0")/lib.sh"

COUNT=${COUNT:-200}
MAX_RPS=${MAX_RPS:-1000}
GAP_MS=${GAP_MS:-50}

require_tools psql curl jq python3
bench_init latency
fresh_db 0
start_sim
seed_accounts "$COUNT" "$BENCH_OUT/accounts"
export ERASURE_UPSTREAM_MAX_RPS=$MAX_RPS
[[ -n ${POLL_MS:-} ]] && export ERASURE_POLL_MS=$POLL_MS
[[ -n ${WORKER_CONCURRENCY:-} ]] && export ERASURE_WORKER_CONCURRENCY=$WORKER_CONCURRENCY
start_api # API and workers
KEY=$(make_key requester)
sleep 1
log "submitting $COUNT erasures one at a time"
python3 "$BENCH_DIR/latency_client.py" "$API_URL" "$KEY" "$BENCH_OUT/accounts" "$COUNT" "$GAP_MS" >"$BENCH_OUT/client.txt"
stop_pid "$API_PID"

echo
echo "== latency: $COUNT account erasures one at a time, accepted -> completed (ERASURE_UPSTREAM_MAX_RPS=$MAX_RPS, ERASURE_POLL_MS=${ERASURE_POLL_MS:-default 1000}) =="
IFS='|' read -r n p50 p90 p99 mx slow failed < <(q "
    with r as (select state, extract(epoch from completed_at - received_at) * 1000 as ms from erasure_requests)
    select count(*) filter (where state = 'completed'),
           round(percentile_cont(0.5) within group (order by ms)::numeric, 1),
           round(percentile_cont(0.9) within group (order by ms)::numeric, 1),
           round(percentile_cont(0.99) within group (order by ms)::numeric, 1),
           round(max(ms)::numeric, 1),
           count(*) filter (where ms > 500),
           count(*) filter (where state <> 'completed')
    from r")
figure latency.completed "$n" erasures "$failed not completed"
figure latency.p50_ms "$p50" ms "received_at -> completed_at (target <= 30)"
figure latency.p90_ms "$p90" ms ""
figure latency.p99_ms "$p99" ms "(target <= 100)"
figure latency.max_ms "$mx" ms ""
figure latency.over_500ms "$slow" erasures "waited for a poll instead of a notification"
echo
echo "where the time goes (ms between audit entries of each request; each gap holds the step's claim, its upstream call, and its recording transaction):"
q "
    with e as (
        select request_id, id, event, at,
               lag(event) over w as prev, lag(at) over w as prev_at
        from audit_entries
        where event in ('received', 'inventoried', 'deleted', 'verified_absent', 'cascade_observed', 'completed')
        window w as (partition by request_id order by id)),
    calls as (
        select e.event, (c->>'duration_ms')::float as ms
        from audit_entries e, jsonb_array_elements(e.data->'calls') as c where e.data ? 'calls'),
    c as (
        select event, avg(ms) as mean from calls group by event),
    g as (
        select prev || ' -> ' || event as gap, event,
               extract(epoch from at - prev_at) * 1000 as ms from e where prev is not null)
    select format('  %-36s p50 %7s  p90 %7s  p99 %7s  max %7s   upstream call mean %s (whole ms)', gap,
                  round(percentile_cont(0.5) within group (order by ms)::numeric, 1),
                  round(percentile_cont(0.9) within group (order by ms)::numeric, 1),
                  round(percentile_cont(0.99) within group (order by ms)::numeric, 1),
                  round(max(ms)::numeric, 1),
                  coalesce(round(max(c.mean)::numeric, 2)::text, '-'))
    from g left join c on c.event = g.event
    group by gap, g.event
    order by array_position(array['inventoried','deleted','verified_absent','cascade_observed','completed'], g.event)"
