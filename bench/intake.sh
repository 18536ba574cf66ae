#!/usr/bin/env bash
# Figure 1: single-item intake. `POST /v1/erasure-requests` at 64 connections (wrk, unique
# account ids) against `erasure serve --no-worker`, then, in the same run and on the same
# database, pgbench doing a single-row INSERT at the same concurrency for the same duration.
#
#   bench/intake.sh                 # DURATION=30 CONNECTIONS=64 THREADS=2 WARMUP=5
#   PERF=1 bench/intake.sh          # also profiles the service with perf (top symbols printed)
#   TRACES=1 bench/intake.sh        # with traces on, exported to a do-nothing OTLP receiver
#                                   # (bench/otlp_sink.py); bench/otel.sh interleaves on and off
#
# Prints the service's rate (requests/s, from wrk and from the rows committed), its latency, the
# CPU used by the service, PostgreSQL and wrk during the run, pgbench's rate and the ratio.
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-30}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-5}

require_tools wrk pgbench psql curl jq python3
bench_init intake
fresh_db 0
if [[ ${TRACES:-0} == 1 ]]; then
    python3 "$BENCH_DIR/otlp_sink.py" "$BENCH_OUT/sink-counts.txt" >"$BENCH_OUT/sink.out" 2>"$BENCH_OUT/sink.log" &
    _BENCH_PIDS+=("$!")
    for _ in $(seq 1 50); do grep -q listening "$BENCH_OUT/sink.out" 2>/dev/null && break; sleep 0.1; done
    export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$(awk '/listening/ { print $2 }' "$BENCH_OUT/sink.out")"
    log "traces on: OTLP to $OTEL_EXPORTER_OTLP_ENDPOINT"
fi
start_api --no-worker
KEY=$(make_key requester)
export BENCH_KEY=$KEY

if ((WARMUP > 0)); then
    log "warm-up: ${WARMUP}s"
    BENCH_ID_PREFIX=9 wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$BENCH_DIR/intake.lua" \
        "$API_URL/v1/erasure-requests" >"$BENCH_OUT/wrk-warmup.txt"
fi

before=$(q "select count(*) from erasure_requests")
read -r walb0 walf0 _ < <(wal_stats)
api_cpu0=$(cpu_secs "$API_PID"); pg_cpu0=$(pg_cpu_secs); busy0=$(machine_busy_secs); t0=$(now)
log "intake: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s POST /v1/erasure-requests"
BENCH_ID_PREFIX=1 wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$BENCH_DIR/intake.lua" \
    "$API_URL/v1/erasure-requests" >"$BENCH_OUT/wrk.txt" &
WRK_PID=$!
sleep 2
wait_events "$BENCH_DB" $((DURATION - 4)) >"$BENCH_OUT/wait-events.txt" &
WAIT_PID=$!
if [[ ${PERF:-0} == 1 ]] && command -v perf >/dev/null; then # where the service's CPU goes
    perf record -q -F 499 -g -p "$API_PID" -o "$BENCH_OUT/perf.data" -- sleep $((DURATION / 2 - 2)) 2>/dev/null || true
else
    sleep $((DURATION / 2 - 2))
fi
top -b -n 1 -w 200 | head -n 20 >"$BENCH_OUT/top-intake.txt" || true
wrk_cpu=$(cpu_secs "$WRK_PID")
wait "$WRK_PID"
wait "$WAIT_PID" || true
t1=$(now); api_cpu1=$(cpu_secs "$API_PID"); pg_cpu1=$(pg_cpu_secs); busy1=$(machine_busy_secs)
after=$(q "select count(*) from erasure_requests")
read -r walb1 walf1 _ < <(wal_stats)
cat "$BENCH_OUT/wrk.txt" >&2

wrk_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$BENCH_OUT/wrk.txt")
non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$BENCH_OUT/wrk.txt"); non2xx=${non2xx:-0}
errors=$(grep -E '^ +Socket errors' "$BENCH_OUT/wrk.txt" || true)
committed=$((after - before))
elapsed=$(calc "$t1 - $t0")
db_rps=$(calc "$committed / $elapsed")
p50=$(awk '/^ +50%/ { print $2 }' "$BENCH_OUT/wrk.txt")
p99=$(awk '/^ +99%/ { print $2 }' "$BENCH_OUT/wrk.txt")

# Stop the API before pgbench: its pool would hold connections (max_connections is 100 here);
# so would PgBouncer's server connections (POOLER=1).
stop_pid "$API_PID"
if [[ -n ${POOLER_PID:-} ]]; then stop_pid "$POOLER_PID"; fi
# The service's WAL starts checkpoints (max_wal_size); one that runs on into pgbench's turn slowed
# pgbench (by more, the more the service wrote), flattering the ratio. pgbench starts after one.
q "checkpoint" >/dev/null

log "pgbench: single-row INSERT, -c $CONNECTIONS -j $THREADS -T $DURATION -M prepared"
q "create table bench_scratch (id bigint generated always as identity primary key, \
   payload text not null, created_at timestamptz not null default now())"
cat >"$BENCH_OUT/pgbench-insert.sql" <<'SQL'
\set v random(1, 1000000000)
insert into bench_scratch (payload) values (:v);
SQL
pg_cpu2=$(pg_cpu_secs); busy2=$(machine_busy_secs)
read -r walb2 walf2 _ < <(wal_stats)
pgbench -n -M prepared -c "$CONNECTIONS" -j "$THREADS" -T "$DURATION" -f "$BENCH_OUT/pgbench-insert.sql" \
    "$BENCH_DB" >"$BENCH_OUT/pgbench.txt" 2>&1 || { cat "$BENCH_OUT/pgbench.txt" >&2; die "pgbench failed"; }
pg_cpu3=$(pg_cpu_secs); busy3=$(machine_busy_secs)
read -r walb3 walf3 _ < <(wal_stats)
cat "$BENCH_OUT/pgbench.txt" >&2
pg_tps=$(awk '/^tps = / { print $3; exit }' "$BENCH_OUT/pgbench.txt")

# The same INSERT with a pg_notify in its transaction, as every intake transaction sent one
# before migration 0008: NOTIFY serialises commits (a database-wide lock held through the WAL
# flush), which this isolates. (Intake now leaves NOTIFY to src/store/ready.rs.)
log "pgbench: the same INSERT plus pg_notify in one transaction"
cat >"$BENCH_OUT/pgbench-insert-notify.sql" <<'SQL'
\set v random(1, 1000000000)
begin;
insert into bench_scratch (payload) values (:v);
select pg_notify('erasure_steps_ready', '');
commit;
SQL
pgbench -n -M prepared -c "$CONNECTIONS" -j "$THREADS" -T "$DURATION" -f "$BENCH_OUT/pgbench-insert-notify.sql" \
    "$BENCH_DB" >"$BENCH_OUT/pgbench-notify.txt" 2>&1 || { cat "$BENCH_OUT/pgbench-notify.txt" >&2; die "pgbench failed"; }
pg_notify_tps=$(awk '/^tps = / { print $3; exit }' "$BENCH_OUT/pgbench-notify.txt")

echo
echo "== intake: single POST /v1/erasure-requests, $CONNECTIONS connections, ${DURATION}s =="
figure intake.requests_per_s "$(fmt "$wrk_rps")" req/s "wrk (target >= 5,000)"
figure intake.committed_per_s "$(fmt "$db_rps")" req/s "$committed rows committed in ${elapsed%.*}s"
figure intake.non_2xx "$non2xx" responses "${errors:-no socket errors}"
figure intake.latency_p50 "$p50" "" "wrk"
figure intake.latency_p99 "$p99" "" "wrk"
figure intake.cpu_service "$(fmt "($api_cpu1 - $api_cpu0) / $elapsed * 100")" "% of 1 core" "erasure serve --no-worker"
figure intake.cpu_postgres "$(fmt "($pg_cpu1 - $pg_cpu0) / $elapsed * 100")" "% of 1 core" "all postgres processes (shared machine)"
figure intake.cpu_wrk "$(fmt "$wrk_cpu / ($DURATION / 2) * 100")" "% of 1 core" "wrk, first half of the run"
figure intake.cpu_machine "$(fmt "($busy1 - $busy0) / $elapsed * 100")" "% of 1 core" "whole machine ($(nproc) cores)"
figure intake.wal_per_request "$(fmt "($walb1 - $walb0) / $committed")" bytes "WAL per committed request, $(fmt "($walf1 - $walf0) / $committed" 2) full-page images each (pg_stat_wal, cluster-wide)"
figure intake.pgbench_insert_tps "$(fmt "$pg_tps")" tps "pgbench -M prepared -c $CONNECTIONS -j $THREADS, single-row INSERT"
figure intake.pgbench_wal_per_tx "$(fmt "($walb3 - $walb2) / ($pg_tps * $DURATION)")" bytes "WAL per pgbench INSERT, $(fmt "($walf3 - $walf2) / ($pg_tps * $DURATION)" 2) full-page images each"
figure intake.pgbench_cpu_postgres "$(fmt "($pg_cpu3 - $pg_cpu2) / $DURATION * 100")" "% of 1 core" "postgres during pgbench"
figure intake.ratio_to_pgbench "$(fmt "$wrk_rps / $pg_tps * 100" 1)" "%" "target >= 50%"
figure intake.pgbench_insert_notify_tps "$(fmt "$pg_notify_tps")" tps "the same INSERT + pg_notify in its transaction"
echo "what the service's database sessions waited on during the run (pg_stat_activity samples, active sessions):"
cat "$BENCH_OUT/wait-events.txt"
if [[ -s $BENCH_OUT/perf.data ]]; then
    echo "where the service's CPU went (perf, self time, top 25 symbols):"
    perf report -i "$BENCH_OUT/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
        grep -E '^ +[0-9]' | head -25 | sed -E 's/ +- +- *$//; s/ +$//' | cut -c1-160 || true
fi
