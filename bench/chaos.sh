#!/usr/bin/env bash
# Proven under failure: submits N account erasures to `erasure serve --no-worker`, runs WORKERS
# `erasure worker` processes against one PostgreSQL and the simulator (loopback only), injects one
# kind of failure, waits until everything settles, then checks the outcome against the database,
# the simulator's call journal and the audit log (bench/chaos_check.py) and prints a verdict.
#
#   bench/chaos.sh kill        # kill -9 of a random worker every 0.5-3 s, at least KILLS (20) times
#   bench/chaos.sh pg-restart  # PostgreSQL restarted mid-run (pg_ctlcluster restart); the service
#                              # reconnects by itself. Restarts the cluster PG_CLUSTER (main) of
#                              # PGPORT: other users of it see their connections dropped (a cluster
#                              # of its own: `pg_createcluster 15 chaos --port 5433 -- -A trust`,
#                              # then PGPORT=5433 PG_CLUSTER=chaos).
#   bench/chaos.sh faults      # upstream: 30% 5xx, 10% 429 + Retry-After, 5% hanging past the time-out
#   bench/chaos.sh outage      # upstream down for DOWN_SECS (120) seconds, then back
#   bench/chaos.sh long-outage # upstream down (503 on every route) for LONG_DOWN_SECS (300) with
#                              # the default retry policy (no attempt count) and backoff capped at
#                              # 1 s: longer than any attempt count would allow; nothing may fail,
#                              # and everything completes after it without anyone acting
#   bench/chaos.sh sigterm     # SIGTERM of every worker with a full queue, then a restart
#   bench/chaos.sh upgrade     # OLD_BIN (a build of the previous release) migrates and serves;
#                              # mid-run ERASURE_BIN's `migrate` runs while the old processes
#                              # serve, the old API takes a quarter of the batches and a new API
#                              # another quarter; once the old workers have met a request of the
#                              # new API (completed it, or run a step of it again) and MIXED_SECS
#                              # (20) more, each is replaced by a new one (a rolling upgrade)
#   bench/chaos.sh shared-cap  # one `erasure serve` (API and workers) and SHARED_WORKERS (3)
#                              # `erasure worker`, ERASURE_UPSTREAM_MAX_RPS=SHARED_RPS (30) and
#                              # ERASURE_UPSTREAM_MAX_CONCURRENCY=SHARED_CONCURRENCY (8) for the four
#                              # together, 40 ms upstream latency; a third of the way through, kill -9
#                              # of one worker. Checks: no second over SHARED_RPS + 1 calls, at least
#                              # 85 % of it sustained, the dead worker's share taken by the others
#                              # within one lease (6 s), concurrency within the cap (N: 600)
#   bench/chaos.sh all         # each of the above but long-outage and upgrade in turn (fresh
#                              # database and simulator each)
#
# Settings: N (10000), WORKERS (2), MAX_RPS (400) and CONCURRENCY (32): the caps of all processes
# together, as ERASURE_UPSTREAM_MAX_RPS and ERASURE_UPSTREAM_MAX_CONCURRENCY are; KILLS (20),
# DOWN_SECS (120), LONG_DOWN_SECS (300), SETTLE_SECS (1800: give up waiting after this), ERASURE_BIN,
# PGPORT and PG_CLUSTER (main), OLD_BIN (upgrade only), SHARED_* (shared-cap only).
# Exit status 0 only when every check of every scenario run holds.
source "$(dirname "$0")/lib.sh"

N_GIVEN=${N:-}
N=${N:-10000}
MIXED_SECS=${MIXED_SECS:-20}
WORKERS=${WORKERS:-2}
MAX_RPS=${MAX_RPS:-400}
CONCURRENCY=${CONCURRENCY:-32}
SHARED_RPS=${SHARED_RPS:-30}
SHARED_CONCURRENCY=${SHARED_CONCURRENCY:-8}
SHARED_WORKERS=${SHARED_WORKERS:-3}
# engine::shares::LEASE: how long a dead process's share of the caps stays held.
SHARE_LEASE_SECS=6
KILLS=${KILLS:-20}
DOWN_SECS=${DOWN_SECS:-120}
LONG_DOWN_SECS=${LONG_DOWN_SECS:-300}
SETTLE_SECS=${SETTLE_SECS:-1800}
PG_CLUSTER=${PG_CLUSTER:-main}
TIMEOUT_SECS=2

require_tools psql curl jq python3 openssl pg_ctlcluster

declare -A WPID

start_workers() {
    local i
    for ((i = 0; i < WORKERS; i++)); do start_worker_n "$i"; done
}

start_worker_n() {
    local i=$1
    "$ERASURE_BIN" worker >>"$BENCH_OUT/worker.$i.out" 2>>"$BENCH_OUT/worker.$i.log" &
    WPID[$i]=$!
    _BENCH_PIDS+=("${WPID[$i]}")
}

open_requests() {
    q "select count(*) from erasure_requests where state not in ('completed', 'failed', 'cancelled')" 2>/dev/null || echo -1
}

# Waits until no request is open (or SETTLE_SECS). Prints nothing; sets DRAIN_SECS.
settle() {
    local t0 left
    t0=$(now)
    while :; do
        left=$(open_requests)
        [[ $left == 0 ]] && break
        if (($(calc "int($(now) - $T_START)") > SETTLE_SECS)); then
            log "still $left open after ${SETTLE_SECS}s: giving up waiting"
            break
        fi
        sleep 1
    done
    DRAIN_SECS=$(fmt "$(now) - $T_START" 1)
}

run_scenario() {
    local scenario=$1
    local new_bin=$ERASURE_BIN
    if [[ $scenario == upgrade ]]; then
        [[ -x ${OLD_BIN:-} ]] || die "upgrade needs OLD_BIN, an erasure binary of the previous release"
        ERASURE_BIN=$OLD_BIN
        export SIM_BIN=$new_bin # the simulator is the harness, not the release under test
    fi
    local sim_flags=() api_flags=(--no-worker)
    if [[ $scenario == shared-cap ]]; then
        # Four processes share the caps: the API process runs workers too.
        MAX_RPS=$SHARED_RPS CONCURRENCY=$SHARED_CONCURRENCY WORKERS=$SHARED_WORKERS N=${N_GIVEN:-600}
        sim_flags=(--fault-latency-ms 40) api_flags=()
    fi
    BENCH_OUT=$(mktemp -d "/tmp/erasure-chaos-$scenario.XXXXXX")
    bench_init "chaos_${scenario//-/_}"
    export ERASURE_UPSTREAM_MAX_RPS=$MAX_RPS ERASURE_UPSTREAM_MAX_CONCURRENCY=$CONCURRENCY
    export ERASURE_UPSTREAM_TIMEOUT_SECS=$TIMEOUT_SECS ERASURE_WORKER_CONCURRENCY=$CONCURRENCY
    export ERASURE_LEASE_SECS=5 ERASURE_POLL_MS=200 ERASURE_RETRY_BASE_SECS=0.2 ERASURE_RETRY_CAP_SECS=10
    export ERASURE_MAX_ATTEMPTS=100 ERASURE_CHECKPOINT_SECS=2 ERASURE_SHUTDOWN_GRACE_SECS=5
    export ERASURE_EVENTS_POLL_MS=1000 ERASURE_REVERIFY_EVERY_HOURS=0
    # long-outage: the default policy (no attempt count), backoff compressed to 1 s at most.
    [[ $scenario == long-outage ]] && export ERASURE_MAX_ATTEMPTS=0 ERASURE_RETRY_CAP_SECS=1
    fresh_db 0
    start_sim --journal-capacity 2000000 "${sim_flags[@]}"
    seed_accounts "$N" "$BENCH_OUT/accounts"
    start_api "${api_flags[@]}"
    local key auditor
    key=$(make_key requester)
    auditor=$(make_key auditor)
    "$ERASURE_BIN" audit public-key >"$BENCH_OUT/audit.vkey" 2>>"$BENCH_OUT/keys.log"
    # upgrade: four batches at least, for the four parts of the run
    local items=10000
    [[ $scenario == upgrade ]] && items=$(((N + 3) / 4))
    BATCH_ITEMS=$items batch_files "$BENCH_OUT/accounts" "$BENCH_OUT/batches" json account
    local f accepted=0 n=0 later=()
    for f in "$BENCH_OUT"/batches/batch-*; do
        # upgrade: every other batch waits for the new schema
        if [[ $scenario == upgrade ]] && ((n++ % 2 == 1)); then later+=("$f") && continue; fi
        read -r created _ < <(post_batch "$f" "$key")
        accepted=$((accepted + created))
    done
    log "$accepted erasures accepted"
    curl -fsS -X DELETE "$SIM_URL/_sim/calls" >/dev/null

    KILL_COUNT=0
    T_START=$(now)
    case $scenario in
    kill)
        start_workers
        while [[ $(open_requests) != 0 ]] || ((KILL_COUNT < KILLS)); do
            [[ $(open_requests) == 0 ]] && break
            sleep "$(calc "0.5 + __import__('random').random() * 2.5")"
            local victim=$((RANDOM % WORKERS))
            kill -KILL "${WPID[$victim]}" 2>/dev/null || true
            wait "${WPID[$victim]}" 2>/dev/null || true
            KILL_COUNT=$((KILL_COUNT + 1))
            start_worker_n "$victim"
        done
        log "$KILL_COUNT kills"
        ;;
    pg-restart)
        start_workers
        while (($(q "select count(*) from erasure_requests where state = 'completed'") < accepted / 3)); do sleep 0.5; done
        log "restarting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" "$PG_CLUSTER" restart
        KILL_COUNT=1
        ;;
    faults)
        curl -fsS -X PUT "$SIM_URL/_sim/faults" -H 'content-type: application/json' -d "{
            \"error_rate\": 0.30, \"error_statuses\": [500, 502, 503],
            \"throttle_rate\": 0.10, \"throttle_retry_after_secs\": 1,
            \"hang_rate\": 0.05, \"hang_ms\": $((TIMEOUT_SECS * 1000 + 3000))}" >/dev/null
        start_workers
        ;;
    outage)
        curl -fsS -X PUT "$SIM_URL/_sim/faults" -H 'content-type: application/json' \
            -d '{"error_rate": 1.0, "error_statuses": [503]}' >/dev/null
        start_workers
        log "upstream down for ${DOWN_SECS}s"
        sleep "$DOWN_SECS"
        curl -fsS -X PUT "$SIM_URL/_sim/faults" -H 'content-type: application/json' -d '{}' >/dev/null
        log "upstream back"
        ;;
    long-outage)
        curl -fsS -X PUT "$SIM_URL/_sim/faults" -H 'content-type: application/json' \
            -d '{"error_rate": 1.0, "error_statuses": [503]}' >/dev/null
        start_workers
        log "upstream down for ${LONG_DOWN_SECS}s"
        local t_down failed_during=0
        t_down=$(now)
        while (($(calc "int($(now) - $t_down)") < LONG_DOWN_SECS)); do
            failed_during=$(q "select count(*) from erasure_requests where state = 'failed'")
            [[ $failed_during != 0 ]] && log "$failed_during requests failed during the outage"
            sleep 5
        done
        curl -fsS -X PUT "$SIM_URL/_sim/faults" -H 'content-type: application/json' -d '{}' >/dev/null
        log "upstream back; most attempts of a step: $(q "select max(attempts) from steps")"
        ;;
    shared-cap)
        start_workers
        while (($(q "select count(*) from erasure_requests where state = 'completed'") < accepted / 3)); do sleep 0.5; done
        local victim=${WPID[$((WORKERS - 1))]} t_kill
        log "shares before the kill: $(q "select string_agg(pid || ':' || rate || '/s,' || concurrency, ' ' order by started_at) from upstream_shares where lease_until > now()")"
        kill -KILL "$victim"
        t_kill=$(now)
        wait "$victim" 2>/dev/null || true
        KILL_COUNT=1
        # Taken: the victim's lease is gone and the others hold the whole rate between them.
        until [[ $(q "select count(*) filter (where pid = $victim) = 0 and abs(coalesce(sum(rate) filter (where pid <> $victim), 0) - $MAX_RPS) < 0.001
                      from upstream_shares where lease_until > now()") == t ]]; do
            (($(calc "int($(now) - $t_kill)") > 60)) && break
            sleep 0.1
        done
        TAKEOVER_SECS=$(fmt "$(now) - $t_kill" 2)
        T_KILL_MS=$(calc "int($t_kill * 1000)")
        log "worker $victim killed; its share taken by the others ${TAKEOVER_SECS}s later: $(q "select string_agg(pid || ':' || rate || '/s,' || concurrency, ' ' order by started_at) from upstream_shares where lease_until > now()")"
        ;;
    sigterm)
        start_workers
        while (($(q "select count(*) from erasure_requests where state = 'completed'") < accepted / 4)); do sleep 0.5; done
        local i t0
        t0=$(now)
        for ((i = 0; i < WORKERS; i++)); do kill -TERM "${WPID[$i]}"; done
        for ((i = 0; i < WORKERS; i++)); do wait "${WPID[$i]}" 2>/dev/null || true; done
        log "workers stopped in $(fmt "$(now) - $t0" 1)s after SIGTERM; $(open_requests) open; restarting"
        KILL_COUNT=$WORKERS
        start_workers
        ;;
    upgrade)
        start_workers
        while (($(q "select count(*) from erasure_requests where state = 'completed'") < accepted / 2)); do sleep 0.5; done
        local t0 i
        t0=$(now)
        "$new_bin" migrate 2>>"$BENCH_OUT/migrate.log"
        log "new migrations applied in $(fmt "$(now) - $t0" 2)s while $OLD_BIN served"
        # The old API takes half of the rest; then an API of the new release, started beside it,
        # takes the other half while the old workers still run: they meet requests stored the new
        # way (only the first step stored) for MIXED_SECS before they are replaced.
        local half=$(((${#later[@]} + 1) / 2)) old_api=$API_URL
        for f in "${later[@]:0:half}"; do
            read -r created _ < <(post_batch "$f" "$key")
            accepted=$((accepted + created))
        done
        ERASURE_BIN=$new_bin
        local new_api_at; new_api_at=$(q "select now()")
        start_api --no-worker
        for f in "${later[@]:half}"; do
            read -r created _ < <(post_batch "$f" "$key")
            accepted=$((accepted + created))
        done
        log "$accepted erasures accepted in all (after the migration: $half batches by the old API, $((${#later[@]} - half)) by a new one)"
        API_URL=$old_api
        # Until the old workers have met a request of the new API: completed it, or run a step of
        # it again (from ae3df07: their completion was refused, its lease expired); then
        # MIXED_SECS more.
        local waited=0
        while (($(q "select count(*) from erasure_requests r where r.received_at >= '$new_api_at' \
                  and (r.state = 'completed' or exists (select from steps s \
                       where s.request_id = r.id and s.attempts >= 2))") == 0)) && ((waited < 600)); do
            sleep 1; waited=$((waited + 1))
        done
        sleep "$MIXED_SECS"
        log "old workers beside the new API: $(q "select count(*) from steps where attempts >= 2") steps run again after a refused completion, $(q "select count(*) from erasure_requests where state = 'completed'") requests completed, $(q "select count(*) from erasure_requests where received_at >= '$new_api_at' and state = 'completed'") of them accepted by the new API"
        for ((i = 0; i < WORKERS; i++)); do
            stop_pid "${WPID[$i]}"
            start_worker_n "$i"
            KILL_COUNT=$((KILL_COUNT + 1))
            sleep 2
        done
        log "workers replaced by $new_bin"
        ;;
    *) die "unknown scenario $scenario" ;;
    esac
    ERASURE_BIN=$new_bin
    settle
    sleep 3 # a last checkpoint
    local check=0
    python3 "$BENCH_DIR/chaos_check.py" --scenario "$scenario" --db "$BENCH_DB" --sim "$SIM_URL" \
        --api "$API_URL" --auditor-key "$auditor" --public-key "$BENCH_OUT/audit.vkey" \
        --erasure-bin "$ERASURE_BIN" --accepted "$accepted" --accounts "$BENCH_OUT/accounts" \
        --max-rps "$MAX_RPS" --max-concurrency "$CONCURRENCY" \
        --kills "$KILL_COUNT" --timeout-secs "$TIMEOUT_SECS" --drain-secs "$DRAIN_SECS" --out "$BENCH_OUT" \
        ${TAKEOVER_SECS:+--takeover-secs "$TAKEOVER_SECS" --kill-ms "$T_KILL_MS" --lease-secs "$SHARE_LEASE_SECS"} || check=$?
    local i
    for ((i = 0; i < WORKERS; i++)); do stop_pid "${WPID[$i]}"; done
    return $check
}

scenarios=("$@")
[[ ${#scenarios[@]} -eq 0 || ${scenarios[0]} == all ]] && scenarios=(kill pg-restart faults outage long-outage sigterm shared-cap)
failed=0
for s in "${scenarios[@]}"; do
    (run_scenario "$s") || failed=1
done
exit $failed
