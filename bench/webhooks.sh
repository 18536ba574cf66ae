#!/usr/bin/env bash
# Webhook figures (BENCHMARKS.md, "Webhooks"):
# 1. Delivery lag, p50 and p99, from an event's commit to its arrival at a receiver, at RATE
#    events a second (default 500) for DURATION seconds (default 30), to 1 endpoint and then to 20
#    (each subscribed to the event: 20 deliveries per event). The events are `at_risk` audit
#    entries with their outbox rows (one per subscription, as `store::audit::append_all` writes
#    them) that pgbench commits one by one; one `erasure worker` delivers; the receiver
#    (bench/webhook_receiver.py) takes the lag from each body's `timestamp` (the outbox row's
#    time, just before its commit).
# 2. The outbox's cost per erasure: N account erasures (default 2,000) with one subscription to
#    `request.completed`: outbox and delivery-log rows per erasure, and the WAL of the records
#    that touch the webhook tables and their indexes (pg_walinspect, so that what other databases
#    of the cluster write does not count), against the same run's total WAL per erasure.
#
#   bench/webhooks.sh                  # RATE=500 DURATION=30 ENDPOINTS="1 20" N=2000
#
# Needs PostgreSQL 15+ (pg_walinspect, a contrib extension), pgbench, python3, jq, curl.
source "$(dirname "$0")/lib.sh"

RATE=${RATE:-500}
DURATION=${DURATION:-30}
ENDPOINTS=${ENDPOINTS:-"1 20"}
N=${N:-2000}

require_tools psql curl jq python3 pgbench
bench_init webhooks
export ERASURE_WEBHOOK_ALLOW_HTTP_HOSTS=127.0.0.1
export ERASURE_WEBHOOK_CONCURRENCY=${WEBHOOK_CONCURRENCY:-32}
export ERASURE_WEBHOOK_POLL_MS=${WEBHOOK_POLL_MS:-200}
export ERASURE_UPSTREAM_MAX_RPS=100000 ERASURE_UPSTREAM_MAX_CONCURRENCY=256
export ERASURE_WORKER_CONCURRENCY=1024
fresh_db 0
q "create extension if not exists pg_walinspect"
start_sim
seed_accounts "$N" "$BENCH_OUT/accounts"

RPORT=$(free_port)
python3 "$BENCH_DIR/webhook_receiver.py" "$RPORT" 2>"$BENCH_OUT/receiver.log" &
_BENCH_PIDS+=("$!")
RECEIVER="http://127.0.0.1:$RPORT"
wait_http "$RECEIVER/stats"

start_api --no-worker
ADMIN=$(make_key admin)
start_worker

api() { # METHOD PATH [BODY]
    curl -fsS -X "$1" "$API_URL$2" -H "authorization: Bearer $ADMIN" \
        -H 'content-type: application/json' ${3:+-d "$3"}
}

pending() { q "select count(*) from webhook_events where state = 'pending'"; }

wait_drained() { # seconds
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        [[ $(pending) -eq 0 ]] && return 0
        sleep 0.1
    done
    die "$(pending) webhook events still pending after $1 s"
}

# The request whose at_risk entries the load writes (no personal data: a bench id).
RID=$(q "insert into erasure_requests (id, scope, subject_ref, state, received_at, due_at, requested_by) \
    select gen_random_uuid(), 'user', 'k1:bench', 'cancelled', now(), now() + interval '3 days', id \
    from api_keys limit 1 returning id")
cat >"$BENCH_OUT/event.sql" <<SQL
insert into audit_entries (request_id, subject_ref, actor, event, data)
values ('$RID', 'k1:bench', 'engine', 'at_risk', '{"due_at": null, "days_left": 3}');
insert into webhook_events (id, subscription_id, event_type, payload)
select 'msg_' || replace(gen_random_uuid()::text, '-', ''), s.id, 'request.at_risk',
    jsonb_build_object('request_id', '$RID', 'state', 'cancelled', 'days_left', 3)
from webhook_subscriptions s where s.state <> 'disabled' and 'request.at_risk' = any(s.event_types);
SQL

subscribed=0
for e in $ENDPOINTS; do
    while ((subscribed < e)); do
        subscribed=$((subscribed + 1))
        api POST /v1/webhooks "{\"url\":\"$RECEIVER/e/$subscribed\",\"event_types\":[\"request.at_risk\"]}" >/dev/null
    done
    curl -fsS "$RECEIVER/reset" >/dev/null
    log "$RATE events/s for ${DURATION}s to $e endpoint(s)"
    w_cpu0=$(cpu_secs "$WORKER_PID"); pg_cpu0=$(pg_cpu_secs); t0=$(now)
    pgbench -n -f "$BENCH_OUT/event.sql" -R "$RATE" -T "$DURATION" -c 4 -j 2 "$BENCH_DB" \
        >"$BENCH_OUT/pgbench.$e.out" 2>&1 || die "pgbench failed: $(tail -3 "$BENCH_OUT/pgbench.$e.out")"
    wait_drained 600
    secs=$(calc "$(now) - $t0")
    read -r count p50 p99 max < <(curl -fsS "$RECEIVER/stats"; echo) || true
    events=$(grep -o 'number of transactions actually processed: [0-9]*' "$BENCH_OUT/pgbench.$e.out" | grep -o '[0-9]*$')
    figure "webhook_lag_p50_${e}_endpoints" "$p50" ms "$events events at $RATE/s, $count deliveries"
    figure "webhook_lag_p99_${e}_endpoints" "$p99" ms "max $max ms"
    figure "webhook_deliveries_per_s_${e}_endpoints" "$(fmt "$count / $secs")" "/s" \
        "worker CPU $(fmt "$(cpu_secs "$WORKER_PID") - $w_cpu0" 1) s, PostgreSQL CPU $(fmt "$(pg_cpu_secs) - $pg_cpu0" 1) s over $(fmt "$secs" 1) s"
done

# 2. The outbox's cost per erasure: one subscription to request.completed, the others paused.
for id in $(api GET /v1/webhooks | jq -r '.items[].id'); do
    api PATCH "/v1/webhooks/$id" '{"state":"paused"}' >/dev/null
done
api POST /v1/webhooks "{\"url\":\"$RECEIVER/completed\",\"event_types\":[\"request.completed\"]}" >/dev/null
REQUESTER=$(make_key requester)
batch_files "$BENCH_OUT/accounts" "$BENCH_OUT/batches" csv account
lsn0=$(q "select pg_current_wal_lsn()")
events0=$(q "select count(*) from webhook_events"); deliveries0=$(q "select count(*) from webhook_deliveries")
for f in "$BENCH_OUT"/batches/batch-*; do post_batch "$f" "$REQUESTER" >/dev/null; done
for ((i = 0; i < 6000; i++)); do
    done_n=$(q "select count(*) from erasure_requests where state = 'completed' and scope = 'account'")
    [[ $done_n -ge $N ]] && break
    sleep 0.1
done
[[ $done_n -ge $N ]] || die "$done_n of $N erasures completed"
wait_drained 600
lsn1=$(q "select pg_current_wal_lsn()")
events=$(($(q "select count(*) from webhook_events") - events0))
deliveries=$(($(q "select count(*) from webhook_deliveries") - deliveries0))
# Records that touch this database's relations, and those of a webhook table or index.
dboid=$(q "select oid from pg_database where datname = current_database()")
nodes=$(q "select string_agg(pg_relation_filenode(c.oid)::text, '|') from pg_class c
    where c.relname like 'webhook\_%' and c.relkind in ('r', 'i')")
read -r outbox_wal total_wal < <(q "select
        coalesce(sum(record_length) filter (where block_ref ~ ('rel [0-9]+/$dboid/($nodes) ')), 0),
        coalesce(sum(record_length), 0)
    from pg_get_wal_records_info('$lsn0', '$lsn1') where block_ref ~ 'rel [0-9]+/$dboid/'" | tr '|' ' ')
figure webhook_outbox_rows_per_erasure "$(calc "round(($events + $deliveries) / $N, 2)")" rows \
    "$events outbox + $deliveries delivery-log rows for $N erasures, 1 subscription"
figure webhook_outbox_wal_per_erasure "$(fmt "$outbox_wal / $N")" bytes \
    "of $(fmt "$total_wal / $N") bytes of WAL per erasure in this database's records"
# Where it goes: WAL per erasure of the records touching each webhook table and index (a record
# that touches several counts in each).
q "select c.relname, round(sum(w.record_length)::numeric / $N), round(sum(w.fpi_length)::numeric / $N)
    from pg_get_wal_records_info('$lsn0', '$lsn1') w
    join pg_class c on c.relname like 'webhook\_%' and c.relkind in ('r', 'i')
        and w.block_ref ~ ('rel [0-9]+/$dboid/' || pg_relation_filenode(c.oid) || ' ')
    group by 1 order by 2 desc" | while IFS='|' read -r rel bytes fpi; do
    figure "webhook_wal_per_erasure_$rel" "$bytes" bytes "of which full-page images $fpi"
done
