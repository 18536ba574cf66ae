#!/usr/bin/env bash
# Issue 32's drain figure: the erasure drain of bench/throughput.sh beside its anchor,
# graphile-worker draining as many no-op jobs, in one run on one PostgreSQL, interleaved round by
# round (graphile-worker, then erasure, ROUNDS times), with what each erasure costs the database.
#
#   flock /tmp/bench.lock bench/drain.sh
#       N=50000 ROUNDS=2 GRAPHILE="1 64" WORKER_CONCURRENCY=1024 UPSTREAM_CONCURRENCY=256
#       MAX_RPS=100000 DB_POOL=40 STATEMENTS_N=10000 TIMEOUT=900 (s)
#   BASE_BIN=/path/to/erasure-before bench/drain.sh   # also the build before, in each round
#   PERF=1 (where the machine's CPU goes, 8 s) | PERF=worker (the worker's call graphs, 5 s)
#   LINGER=10 (the worker's memory for 10 s after the drain)
#
# - graphile-worker (bench/graphile, pinned by its package-lock.json; `npm ci` on first use):
#   N no-op jobs are added in one `graphile_worker.add_jobs` call while no worker runs; then ONE
#   worker process (`run()`, concurrency C for each C of GRAPHILE) drains them. Drain: from the
#   process's start to the moment its jobs table is seen empty (polled every 10 ms once the runner
#   has completed N jobs), so a job counts once its deletion is committed. A C written `64b` runs
#   with graphile-worker's batching (localQueue, batched completions; its documented performance
#   configuration). Every other option is its default, with a pool of C + 2 connections.
# - erasure: bench/throughput.sh's drain. N account erasures queued through the batch endpoint
#   while no worker runs, then ONE `erasure worker` against the simulator (no latency). Drain: from
#   the worker's start to the last `completed_at` (the 1-s poll's figure is printed beside it).
#   Peak RSS: the worker's VmHWM.
# - Per erasure (and per graphile job), from the drain's start to its end with the worker stopped
#   (its backends have then flushed their statistics): transactions (pg_stat_database
#   xact_commit, the script's own polls taken out), rows inserted / updated / deleted (tup_*), by
#   table (pg_stat_user_tables), and WAL (pg_stat_wal: bytes, records, full-page images). WAL is
#   cluster-wide: the script prints the transactions other databases committed in the same window.
# - Statements and round trips per erasure: a separate small drain (STATEMENTS_N erasures, same
#   settings; 0 skips it) on a database with `log_statement = 'all'` set on it alone (ALTER
#   DATABASE; no restart, nothing else changes), counted from the server's log
#   (/var/log/postgresql/postgresql-15-main.log, or PG_LOG) by kind of statement. sqlx waits for each
#   statement's answer before it sends the next, so each logged statement (BEGIN and COMMIT
#   included) is one statement; round trips are the worker's writes to PostgreSQL's socket
#   counted by strace (only the write calls are traced, under a seccomp filter), which also
#   counts the pings of sqlx's pool (one when a connection is taken, one when it is given back),
#   which the log does not show.
# - The indexes of the tables the drain writes, with their scans during the drain
#   (pg_stat_user_indexes.idx_scan) and their size.
source "$(dirname "$0")/lib.sh"

N=${N:-50000}
ROUNDS=${ROUNDS:-2}
GRAPHILE=${GRAPHILE-"1 64"}
MAX_RPS=${MAX_RPS:-100000}
UPSTREAM_CONCURRENCY=${UPSTREAM_CONCURRENCY:-256}
WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-1024}
DB_POOL=${DB_POOL:-40}
STATEMENTS_N=${STATEMENTS_N:-10000}
TIMEOUT=${TIMEOUT:-900}
PG_LOG=${PG_LOG:-/var/log/postgresql/postgresql-15-main.log}
GRAPHILE_DIR="$BENCH_DIR/graphile"

require_tools psql curl jq python3 node npm
bench_init drain
echo "# drain, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; erasure $("$ERASURE_BIN" --version 2>/dev/null || echo '?') ($ERASURE_BIN, built $(date -u -r "$ERASURE_BIN" '+%Y-%m-%d %H:%M UTC')), git $(git -C "$ROOT" rev-parse --short HEAD)"
[[ -z ${BASE_BIN:-} ]] || echo "# base (the build before, interleaved): $BASE_BIN, built $(date -u -r "$BASE_BIN" '+%Y-%m-%d %H:%M UTC')"
echo "# N=$N ROUNDS=$ROUNDS GRAPHILE=\"$GRAPHILE\" WORKER_CONCURRENCY=$WORKER_CONCURRENCY UPSTREAM_CONCURRENCY=$UPSTREAM_CONCURRENCY MAX_RPS=$MAX_RPS DB_POOL=$DB_POOL; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ ! -d $GRAPHILE_DIR/node_modules/graphile-worker ]]; then
    log "installing graphile-worker (npm ci in $GRAPHILE_DIR)"
    (cd "$GRAPHILE_DIR" && npm ci --no-audit --no-fund >&2)
fi
echo "# graphile-worker $(jq -r .version "$GRAPHILE_DIR/node_modules/graphile-worker/package.json"), node $(node --version)"

# A database of this run that is not migrated for erasure (graphile-worker's own).
plain_db() {
    local db="erasure_bench_${BENCH_NAME}_${1}_$$"
    dropdb --if-exists --force "$db" 2>/dev/null || true
    createdb "$db"
    _BENCH_DBS+=("$db")
    BENCH_DB=$db
    export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
}

drop_now() { # the database just measured: dropped at once, so that the next run starts lighter
    [[ ${KEEP_DB:-0} == 1 ]] || dropdb --if-exists --force "$BENCH_DB" 2>/dev/null || true
}

# stats_snapshot FILE: this database's counters and the cluster's WAL, as `key value` lines.
stats_snapshot() {
    psql -XAtq -F ' ' -d "$BENCH_DB" -c "
        select 'xact_commit', xact_commit from pg_stat_database where datname = current_database()
        union all select 'xact_rollback', xact_rollback from pg_stat_database where datname = current_database()
        union all select 'tup_inserted', tup_inserted from pg_stat_database where datname = current_database()
        union all select 'tup_updated', tup_updated from pg_stat_database where datname = current_database()
        union all select 'tup_deleted', tup_deleted from pg_stat_database where datname = current_database()
        union all select 'tup_returned', tup_returned from pg_stat_database where datname = current_database()
        union all select 'tup_fetched', tup_fetched from pg_stat_database where datname = current_database()
        union all select 'others_xact_commit', sum(xact_commit) from pg_stat_database where datname <> current_database()
        union all select 'wal_bytes', wal_bytes from pg_stat_wal
        union all select 'wal_records', wal_records from pg_stat_wal
        union all select 'wal_fpi', wal_fpi from pg_stat_wal
        union all select 'ins.' || relname, n_tup_ins from pg_stat_user_tables
        union all select 'upd.' || relname, n_tup_upd from pg_stat_user_tables
        union all select 'hot.' || relname, n_tup_hot_upd from pg_stat_user_tables
        union all select 'del.' || relname, n_tup_del from pg_stat_user_tables
        union all select 'idx.' || relname || '.' || indexrelname, idx_scan from pg_stat_user_indexes" >"$1"
}

# delta A B KEY: B's value less A's.
delta() { python3 - "$1" "$2" "$3" <<'PY'
import sys
def load(p):
    return {k: int(float(v or 0)) for k, _, v in (l.rstrip("\n").partition(" ") for l in open(p)) if k}
a, b = load(sys.argv[1]), load(sys.argv[2])
print(b.get(sys.argv[3], 0) - a.get(sys.argv[3], 0))
PY
}

# per_table A B PER: rows written per table (inserted / updated (HOT) / deleted), per unit.
per_table() { python3 - "$1" "$2" "$3" <<'PY'
import sys
def load(p):
    return {k: int(float(v or 0)) for k, _, v in (l.rstrip("\n").partition(" ") for l in open(p)) if k}
a, b, per = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
d = lambda k: b.get(k, 0) - a.get(k, 0)
tables = sorted({k.split(".", 1)[1] for k in b if k.startswith("ins.")})
rows = [(t, d("ins." + t), d("upd." + t), d("hot." + t), d("del." + t)) for t in tables]
rows = [r for r in rows if any(r[1:])]
print(f"    {'table':<28} {'inserted':>9} {'updated':>9} {'(HOT)':>7} {'deleted':>9}   per unit")
for t, i, u, h, dl in sorted(rows, key=lambda r: -(r[1] + r[2] + r[4])):
    print(f"    {t:<28} {i:>9} {u:>9} {h:>7} {dl:>9}   {i/per:.2f} / {u/per:.2f} / {dl/per:.2f}")
PY
}

# index_scans A B: the indexes of the tables the run wrote, scans between A and B, size now.
index_scans() {
    local tables
    tables=$(python3 - "$1" "$2" <<'PY'
import sys
def load(p):
    return {k: int(float(v or 0)) for k, _, v in (l.rstrip("\n").partition(" ") for l in open(p)) if k}
a, b = load(sys.argv[1]), load(sys.argv[2])
t = sorted({k.split(".", 1)[1] for k in b if k.split(".")[0] in ("ins", "upd", "del") and b[k] - a.get(k, 0) > 0})
print(",".join("'" + x + "'" for x in t))
PY
)
    [[ -n $tables ]] || return 0
    psql -XAtq -F ' ' -d "$BENCH_DB" -c "select relname || '.' || indexrelname, idx_scan,
            pg_relation_size(indexrelid)
        from pg_stat_user_indexes where relname in ($tables) order by relname, indexrelname" \
        >"$BENCH_OUT/indexes.now"
    python3 - "$1" "$BENCH_OUT/indexes.now" <<'PY'
import sys
a = {k: int(float(v or 0)) for k, _, v in (l.rstrip("\n").partition(" ") for l in open(sys.argv[1])) if k}
print("    %-64s %14s %10s %9s" % ("table.index", "scans in drain", "all scans", "size"))
for line in open(sys.argv[2]):
    k, scans, size = line.split()
    print("    %-64s %14d %10s %7.1fMB" % (k, int(scans) - a.get("idx." + k, 0), scans, int(size) / 1048576))
PY
}

# perf_report DATA: the machine's CPU by process, then the top symbols of each of the worker,
# PostgreSQL and the simulator (self time; samples of the whole machine, 499 Hz).
perf_report() {
    [[ -s $1 ]] || return 0
    echo "where the CPU went, 8 s of the drain (perf record -a; share of all samples):"
    perf report -i "$1" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 12
    local comm
    for comm in postgres tokio-rt-worker "actix-server wo"; do
        echo "  top symbols of $comm (share of all samples):"
        perf report -i "$1" --no-children --comm "$comm" --sort dso,symbol --stdio 2>/dev/null |
            grep -E '^ +[0-9]' | head -n 25 | cut -c1-150
    done
}

# -- graphile-worker ---------------------------------------------------------------------------

# graphile_run ROUND C: N no-op jobs drained by one graphile-worker process at concurrency C.
graphile_run() {
    local round=$1 conc=${2%b} batched="" label=$2 out start end s0 s1 secs rate
    [[ $2 == *b ]] && batched=batched
    plain_db "g${round}_${label}"
    (cd "$GRAPHILE_DIR" && node drain.mjs queue "$N") >"$BENCH_OUT/graphile-queue-$round-$label.json" \
        2>>"$BENCH_OUT/graphile.log" || die "graphile-worker: queueing failed (see $BENCH_OUT/graphile.log)"
    q "analyze" >/dev/null
    q "checkpoint" >/dev/null
    sleep 2
    s0="$BENCH_OUT/g-$round-$label.0"; s1="$BENCH_OUT/g-$round-$label.1"
    stats_snapshot "$s0"
    local pg0 busy0 pg1 busy1
    pg0=$(pg_cpu_secs); busy0=$(machine_busy_secs)
    start=$(now)
    out=$( (cd "$GRAPHILE_DIR" && NO_LOG_SUCCESS=1 node drain.mjs work "$N" "$conc" $batched) \
        2>>"$BENCH_OUT/graphile.log" | tee -a "$BENCH_OUT/graphile.log" | tail -n 1) || true
    pg1=$(pg_cpu_secs); busy1=$(machine_busy_secs); local wend; wend=$(now)
    stats_snapshot "$s1"
    if [[ $(jq -r .completed <<<"$out" 2>/dev/null || echo 0) -lt $N ]]; then
        # E.g. "sorry, too many clients already": the server is shared, and the pool takes C + 2
        # connections. Once more, after a pause; then the run stops.
        drop_now
        if [[ ${G_RETRY:-0} == 1 ]]; then die "graphile-worker failed twice (see $BENCH_OUT/graphile.log)"; fi
        log "graphile-worker failed (see $BENCH_OUT/graphile.log: $(grep -m1 -oE 'too many clients[^"]*|Error: [^"]*' "$BENCH_OUT/graphile.log" | tail -n 1)); once more in 20 s"
        sleep 20
        G_RETRY=1 graphile_run "$@"
        return
    fi
    end=$(jq -r .end <<<"$out")
    secs=$(calc "$end - $start")
    rate=$(calc "$N / $secs")
    G_RATE[$round.$label]=$rate
    figure "drain.graphile_c${label}.r$round.jobs_per_s" "$(fmt "$rate")" jobs/s "$N no-op jobs in $(fmt "$secs" 2)s, one worker, concurrency $conc${batched:+, batched}; peak RSS $(fmt "$(jq -r .peak_rss_mib <<<"$out")" 1) MiB"
    figure "drain.graphile_c${label}.r$round.per_job" \
        "$(fmt "$(delta "$s0" "$s1" xact_commit) / $N" 3)" xacts/job \
        "$(delta "$s0" "$s1" xact_commit) transactions; rows ins/upd/del per job $(fmt "$(delta "$s0" "$s1" tup_inserted) / $N" 2) / $(fmt "$(delta "$s0" "$s1" tup_updated) / $N" 2) / $(fmt "$(delta "$s0" "$s1" tup_deleted) / $N" 2); WAL $(fmt "$(delta "$s0" "$s1" wal_bytes) / $N") B/job (cluster-wide); CPU from start to exit: postgres $(fmt "($pg1 - $pg0) / ($wend - $start) * 100")% of a core, machine $(fmt "($busy1 - $busy0) / ($wend - $start) * 100")%"
    drop_now
}

# -- erasure -----------------------------------------------------------------------------------

# erasure_queue SUFFIX COUNT: a fresh migrated database with COUNT account erasures queued
# (simulator running, API stopped), as bench/throughput.sh does it.
erasure_queue() {
    local suffix=$1 count=$2
    fresh_db "$suffix"
    start_sim
    seed_accounts "$count" "$BENCH_OUT/accounts-$suffix"
    start_api --no-worker
    KEY=$(make_key requester)
    rm -rf "$BENCH_OUT/batches-$suffix"
    batch_files "$BENCH_OUT/accounts-$suffix" "$BENCH_OUT/batches-$suffix" csv account
    for f in "$BENCH_OUT/batches-$suffix"/batch-*; do post_batch "$f" "$KEY" >/dev/null; done
    stop_pid "$API_PID"
    local queued
    queued=$(q "select count(*) from erasure_requests where state = 'queued'")
    [[ $queued -eq $count ]] || die "$queued queued, expected $count"
    q "analyze" >/dev/null
    q "checkpoint" >/dev/null
    sleep 2
    export ERASURE_UPSTREAM_MAX_RPS=$MAX_RPS ERASURE_UPSTREAM_MAX_CONCURRENCY=$UPSTREAM_CONCURRENCY
    export ERASURE_WORKER_CONCURRENCY=$WORKER_CONCURRENCY ERASURE_DB_POOL=$DB_POOL
    METRICS_URL="http://127.0.0.1:$(free_port)"
    export ERASURE_METRICS_BIND=${METRICS_URL#http://}
}

# The worker's heap as jemalloc counts it (`erasure_heap_bytes`): "allocated resident" in KiB.
heap_kib() {
    curl -fsS -m 2 "$METRICS_URL/metrics" 2>/dev/null |
        awk '/^erasure_heap_bytes.*allocated/ { a = $NF } /^erasure_heap_bytes.*resident/ { r = $NF }
             END { printf "%d %d", a / 1024, r / 1024 }'
}

# erasure_drain COUNT [strace]: starts the worker (under strace, counting its writes, with
# `strace`), waits for COUNT completions (1-s poll), stops it.
# Sets D_START D_END_POLL D_RSS D_WCPU D_SCPU D_PGCPU D_BUSY D_POLLS.
erasure_drain() {
    local count=$1 traced=${2:-} done failed s_cpu0 pg_cpu0 busy0 tracer=""
    s_cpu0=$(cpu_secs "$SIM_PID"); pg_cpu0=$(pg_cpu_secs); busy0=$(machine_busy_secs)
    D_START=$(now)
    if [[ $traced == strace ]]; then
        # Only the write system calls stop the worker (seccomp filter); -yy names each socket's
        # ends, so that those to PostgreSQL can be counted.
        strace -f --seccomp-bpf -qq -yy -e trace=write,writev,sendto,sendmsg -e signal=none \
            -s 0 -o "$BENCH_OUT/strace.txt" "$ERASURE_BIN" worker \
            >"$BENCH_OUT/worker.out" 2>>"$BENCH_OUT/worker.log" &
        tracer=$!
        _BENCH_PIDS+=("$tracer")
        for _ in $(seq 1 100); do WORKER_PID=$(pgrep -P "$tracer" | head -n 1) && [[ -n $WORKER_PID ]] && break; sleep 0.05; done
        log "worker pid $WORKER_PID under strace (pid $tracer)"
    else
        start_worker
    fi
    local perf_pid=""
    if [[ ${PERF:-0} == 1 ]] && command -v perf >/dev/null; then # where the CPU goes, 8 s of the drain
        (sleep 5; perf record -q -a -F 499 -o "$BENCH_OUT/perf-$BENCH_DB.data" -- sleep 8 2>/dev/null) &
        perf_pid=$!
    elif [[ ${PERF:-0} == worker ]]; then # the worker's call graphs, 5 s (not printed: perf report -i ...)
        (sleep 6; perf record -q --call-graph dwarf,16384 -F 199 -p "$WORKER_PID" -o "$BENCH_OUT/perf-worker.data" -- sleep 5 2>/dev/null) &
    fi
    SECONDS=0; D_POLLS=0
    while :; do
        sleep 1
        IFS='|' read -r done failed < <(q "select count(*) filter (where state = 'completed'), count(*) filter (where state = 'failed') from erasure_requests")
        D_POLLS=$((D_POLLS + 1))
        echo "$(now) $done $(awk '/^VmRSS:/ { print $2 }' "/proc/$WORKER_PID/status") $(heap_kib)" >>"$BENCH_OUT/progress-$BENCH_DB"
        ((done + failed >= count)) && break
        if ((SECONDS > TIMEOUT)); then log "timeout: $done of $count completed"; break; fi
        kill -0 "$WORKER_PID" 2>/dev/null || die "the worker exited; see $BENCH_OUT/worker.log"
    done
    D_END_POLL=$(now)
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" || true
        perf_report "$BENCH_OUT/perf-$BENCH_DB.data"
    fi
    D_WCPU=$(cpu_secs "$WORKER_PID"); D_SCPU=$(calc "$(cpu_secs "$SIM_PID") - $s_cpu0")
    D_PGCPU=$(calc "$(pg_cpu_secs) - $pg_cpu0"); D_BUSY=$(calc "$(machine_busy_secs) - $busy0")
    D_RSS=$(awk '/VmHWM/ { print $2 }' "/proc/$WORKER_PID/status")
    local i
    for ((i = 0; i < ${LINGER:-0}; i++)); do # idle after the drain: what memory stays
        sleep 1
        echo "$(now) $done $(awk '/^VmRSS:/ { print $2 }' "/proc/$WORKER_PID/status") $(heap_kib) idle" >>"$BENCH_OUT/progress-$BENCH_DB"
    done
    D_RSS_NOW=$(awk '/^(VmRSS|RssAnon|RssFile):/ { printf "%s %.1f MiB, ", $1, $2 / 1024 }' "/proc/$WORKER_PID/status")
    stop_pid "$WORKER_PID"
    [[ -z $tracer ]] || wait "$tracer" 2>/dev/null || true
    D_FAILED=$failed
}

# erasure_run ROUND LABEL BIN: the drain by BIN; figures drain.LABEL.rROUND.*.
erasure_run() {
    local round=$1 label=$2 s0 s1 last secs rate xacts polls
    # The simulator is the run's own (SIM_BIN, or the build measured), the same for both builds.
    local SIM_BIN=${SIM_BIN:-$ERASURE_BIN}
    local ERASURE_BIN=$3
    log "round $round: $label ($ERASURE_BIN), $N account erasures"
    erasure_queue "${label:0:1}$round" "$N"
    s0="$BENCH_OUT/$label-$round.0"; s1="$BENCH_OUT/$label-$round.1"
    stats_snapshot "$s0"
    erasure_drain "$N"
    stats_snapshot "$s1"
    last=$(q "select extract(epoch from max(completed_at)) from erasure_requests where state = 'completed'")
    local completed
    completed=$(q "select count(*) from erasure_requests where state = 'completed'")
    secs=$(calc "$last - $D_START")
    rate=$(calc "$completed / $secs")
    E_RATE[$label.$round]=$rate
    E_RSS[$label.$round]=$(calc "$D_RSS / 1024")
    figure "drain.$label.r$round.erasures_per_s" "$(fmt "$rate")" erasures/s "$completed of $N in $(fmt "$secs" 2)s to the last completed_at ($D_FAILED failed); by the 1-s poll $(fmt "$completed / ($D_END_POLL - $D_START)")/s"
    figure "drain.$label.r$round.worker_peak_rss" "$(fmt "$D_RSS / 1024" 1)" MiB "VmHWM of the worker (target <= 100); at the end: ${D_RSS_NOW%, }; each second, VmRSS / jemalloc's allocated / resident (MiB): $(awk '{ printf "%.0f/%.0f/%.0f ", $3 / 1024, $4 / 1024, $5 / 1024 }' "$BENCH_OUT/progress-$BENCH_DB")"
    local win; win=$(calc "$D_END_POLL - $D_START")
    figure "drain.$label.r$round.cpu" "$(fmt "$D_WCPU / $win * 100")" "% of 1 core" "worker, to the poll that saw the end; simulator $(fmt "$D_SCPU / $win * 100")%, postgres $(fmt "$D_PGCPU / $win * 100")%, machine $(fmt "$D_BUSY / $win * 100")% of 1 core; CPU per erasure: worker $(fmt "$D_WCPU / $completed * 1e6") us, postgres $(fmt "$D_PGCPU / $completed * 1e6") us, simulator $(fmt "$D_SCPU / $completed * 1e6") us"
    # Each poll is one transaction of this database; the snapshot after is taken before the
    # next, so only the polls count.
    polls=$D_POLLS
    xacts=$(calc "$(delta "$s0" "$s1" xact_commit) - $polls - 1")
    figure "drain.$label.r$round.xacts_per_erasure" "$(fmt "$xacts / $completed" 2)" xacts "committed transactions of the drain per erasure ($xacts; rollbacks: $(delta "$s0" "$s1" xact_rollback))"
    figure "drain.$label.r$round.rows_per_erasure" "$(fmt "($(delta "$s0" "$s1" tup_inserted) + $(delta "$s0" "$s1" tup_updated) + $(delta "$s0" "$s1" tup_deleted)) / $completed" 2)" rows "inserted $(fmt "$(delta "$s0" "$s1" tup_inserted) / $completed" 2), updated $(fmt "$(delta "$s0" "$s1" tup_updated) / $completed" 2), deleted $(fmt "$(delta "$s0" "$s1" tup_deleted) / $completed" 2) per erasure"
    figure "drain.$label.r$round.wal_per_erasure" "$(fmt "$(delta "$s0" "$s1" wal_bytes) / $completed")" B "WAL per erasure, cluster-wide ($(fmt "$(delta "$s0" "$s1" wal_records) / $completed" 1) records, $(fmt "$(delta "$s0" "$s1" wal_fpi) / $completed" 2) full-page images); other databases committed $(delta "$s0" "$s1" others_xact_commit) transactions meanwhile"
    echo "rows written by table during the drain ($label, round $round; per erasure: inserted / updated / deleted):"
    per_table "$s0" "$s1" "$completed"
    echo "indexes of those tables ($label, round $round):"
    index_scans "$s0" "$s1"
    stop_pid "$SIM_PID"
    drop_now
}

# -- statements --------------------------------------------------------------------------------

statements_run() {
    local n=$STATEMENTS_N from to
    [[ -r $PG_LOG ]] || { log "cannot read $PG_LOG: no statement count"; return 0; }
    log "statements: $n erasures with log_statement = 'all' on this database only"
    erasure_queue s "$n"
    q "alter database $BENCH_DB set log_statement = 'all'"
    q "alter database $BENCH_DB set log_parameter_max_length = 0"
    from=$(stat -c %s "$PG_LOG")
    erasure_drain "$n" strace
    to=$(stat -c %s "$PG_LOG")
    q "alter database $BENCH_DB reset log_statement"
    q "alter database $BENCH_DB reset log_parameter_max_length"
    local completed
    completed=$(q "select count(*) from erasure_requests where state = 'completed'")
    # The worker's sessions are the ones whose user@database is ours, but not the script's polls
    # (simple-protocol `statement: select count(*) filter ...`).
    tail -c +"$((from + 1))" "$PG_LOG" | head -c "$((to - from))" | grep -F "@$BENCH_DB " >"$BENCH_OUT/statements.log" || true
    python3 - "$BENCH_OUT/statements.log" "$completed" "$BENCH_OUT/strace.txt" "$PGPORT" <<'PY'
import re, sys, collections
path, n, trace, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
# Writes of the worker to PostgreSQL's port: sqlx writes a statement's messages with their Sync
# at once and waits for the answer, so each write is a round trip (a pool's ping, a Sync alone,
# included); COPY's data may take more than one write.
writes = collections.Counter()
for line in open(trace, errors="replace"):
    # `sendto(11<TCP:[a->b:5432]>, ""..., 5, ...` or `writev(19<TCP:[a->b:port]>, [...], 2`; a
    # call that another thread's interrupted is logged `<unfinished ...>`: counted there, once.
    m = re.search(r"(write|writev|sendto|sendmsg)\(\d+<TCP:\[[^\]]*->[^\]]*:(\d+)\]>, (?:\"\"\.\.\., (\d+))?", line)
    if m:
        to_pg = m.group(2) == port
        writes["postgres" if to_pg else "simulator"] += 1
        if to_pg and m.group(3) == "5":
            writes["sync"] += 1  # a Sync alone: sqlx's ping
        elif to_pg and m.group(3) in ("11", "12"):
            writes["begin/commit"] += 1  # `BEGIN` / `COMMIT` as simple queries
print(f"FIGURE {'drain.round_trips_per_erasure':<42} {writes['postgres'] / n:>14.2f} {'trips':<10} writes of the worker to PostgreSQL per erasure ({writes['postgres']} for {n}, of which {writes['sync']} pings of the pool and {writes['begin/commit']} BEGIN or COMMIT; strace); HTTP writes to the simulator: {writes['simulator'] / n:.2f}")
kinds = collections.Counter()
total = 0
for line in open(path, errors="replace"):
    m = re.search(r"LOG:  (?:statement|execute [^:]*): (.*)", line)
    if not m:
        continue
    sql = m.group(1).strip()
    if sql.startswith("select count(*) filter (where state = 'completed')"):
        continue  # the script's poll
    total += 1
    key = re.sub(r"\s+", " ", sql)[:110]
    kinds[key] += 1
print(f"FIGURE {'drain.statements_per_erasure':<42} {total / n:>14.2f} {'stmts':<10} statements of the worker per erasure, {total} for {n} erasures (log_statement)")
print("by statement (count, per erasure):")
for k, c in kinds.most_common(40):
    print(f"    {c:>8} {c / n:>7.3f}  {k}")
PY
    stop_pid "$SIM_PID"
    drop_now
}

declare -A G_RATE E_RATE E_RSS
for ((r = 1; r <= ROUNDS; r++)); do
    for c in $GRAPHILE; do
        log "round $r: graphile-worker, $N no-op jobs, concurrency $c"
        graphile_run "$r" "$c"
    done
    # With BASE_BIN, the build before runs too, in turn first and second.
    if [[ -n ${BASE_BIN:-} && $((r % 2)) == 1 ]]; then
        erasure_run "$r" base "$BASE_BIN"; erasure_run "$r" erasure "$ERASURE_BIN"
    elif [[ -n ${BASE_BIN:-} ]]; then
        erasure_run "$r" erasure "$ERASURE_BIN"; erasure_run "$r" base "$BASE_BIN"
    else
        erasure_run "$r" erasure "$ERASURE_BIN"
    fi
    echo "# load average after round $r: $(cut -d' ' -f1-3 /proc/loadavg)"
done

echo
echo "== drain: $N account erasures by one erasure worker against graphile-worker's $N no-op jobs, same run =="
for ((r = 1; r <= ROUNDS; r++)); do
    for label in erasure ${BASE_BIN:+base}; do
        for c in $GRAPHILE; do
            figure "drain.ratio.r$r.${label}_vs_graphile_c$c" "$(fmt "${E_RATE[$label.$r]} / ${G_RATE[$r.$c]}" 2)" x "$label $(fmt "${E_RATE[$label.$r]}")/s against graphile-worker (concurrency $c) $(fmt "${G_RATE[$r.$c]}")/s, round $r (target >= 0.9)"
        done
        figure "drain.rss.r$r.$label" "$(fmt "${E_RSS[$label.$r]}" 1)" MiB "the $label worker's peak RSS, round $r (target <= 100)"
    done
done
if ((STATEMENTS_N > 0)); then statements_run; fi
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
