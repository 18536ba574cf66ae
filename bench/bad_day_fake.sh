#!/usr/bin/env bash
# Erasures through transient faults, against an aggregator the service's authors did not write:
# bench/fake_aggregator/fake_aggregator.py (from UPSTREAM.md alone, not from crates/sim), with its
# own rate cap (RPS calls in any sliding second) and concurrency cap (CONCURRENCY calls open),
# both refused with 429 and `Retry-After: 1`, and faults at each rate of RATES on every route
# (503 with `Retry-After: 1`, 500, 502 before or after acting, a slow 504, a reset).
#
# USERS user erasures (CONNECTIONS connections of ACCOUNTS accounts each: 4 + CONNECTIONS calls
# needed per user) through one worker, ROUNDS rounds, the rates interleaved (0 35 0 35 ...). For
# each round: the drain (batch accepted to last completed_at, from the database), the calls the
# fake saw, the amplification (erasure calls / needed), calls sent before a Retry-After had
# passed on their resource ("too early"), the fake's peak concurrency and busiest second, failed
# requests; and the ratio of each faulty round's drain to the fault-free round before it.
#
#   bench/bad_day_fake.sh                          # USERS=300 RATES="0 35" ROUNDS=2
#   ERASURE_BIN=/tmp/erasure-other bench/bad_day_fake.sh
#
# Settings: USERS (300), CONNECTIONS (3), ACCOUNTS (3), RATES ("0 35", percent), ROUNDS (2),
# MAX_RPS (200) and CONCURRENCY (16): the service's caps; FAKE_RPS and FAKE_CONCURRENCY: the
# fake's (default the same), FAKE_SEED (1), SETTLE_SECS (900), PYTHON (python3). Prints FIGURE
# lines; keeps each round's journal and stats in BENCH_OUT; exit status 1 when a request failed
# or did not complete in time, or a call went before its Retry-After.
source "$(dirname "$0")/lib.sh"

USERS=${USERS:-300}
CONNECTIONS=${CONNECTIONS:-3}
ACCOUNTS=${ACCOUNTS:-3}
RATES=${RATES:-"0 35"}
ROUNDS=${ROUNDS:-2}
export ERASURE_UPSTREAM_MAX_RPS=${MAX_RPS:-200}
export ERASURE_UPSTREAM_MAX_CONCURRENCY=${CONCURRENCY:-16}
FAKE_RPS=${FAKE_RPS:-$ERASURE_UPSTREAM_MAX_RPS}
FAKE_CONCURRENCY=${FAKE_CONCURRENCY:-$ERASURE_UPSTREAM_MAX_CONCURRENCY}
FAKE_SEED=${FAKE_SEED:-1}
SETTLE_SECS=${SETTLE_SECS:-900}
PYTHON=${PYTHON:-python3}
export ERASURE_REVERIFY_EVERY_HOURS=0

require_tools psql curl jq "$PYTHON" openssl
bench_init bad-day-fake
log "build: $("$ERASURE_BIN" --version 2>/dev/null || echo "$ERASURE_BIN"); worker concurrency ${ERASURE_WORKER_CONCURRENCY:-32 (default)}"
status=0

# start_fake RATE: the fake, seeded with USERS users, faults at RATE percent; sets FAKE_URL,
# FAKE_PID and the service's upstream URLs.
start_fake() {
    local rate=$1 portfile="$BENCH_OUT/fake.port.$round"
    rm -f "$portfile"
    "$PYTHON" "$BENCH_DIR/fake_aggregator/fake_aggregator.py" --port 0 --port-file "$portfile" \
        --users "$USERS" --connections "$CONNECTIONS" --accounts "$ACCOUNTS" \
        --fault-rate "$(calc "$rate / 100")" --seed "$FAKE_SEED" \
        --rps "$FAKE_RPS" --concurrency "$FAKE_CONCURRENCY" \
        --client-id "$ERASURE_UPSTREAM_CLIENT_ID" --client-secret "$ERASURE_UPSTREAM_CLIENT_SECRET" \
        2>"$BENCH_OUT/fake.$round.log" &
    FAKE_PID=$!
    _BENCH_PIDS+=("$FAKE_PID")
    for _ in $(seq 1 300); do [[ -s $portfile ]] && break; sleep 0.1; done
    [[ -s $portfile ]] || die "the fake did not start (its log: $BENCH_OUT/fake.$round.log)"
    FAKE_URL="http://127.0.0.1:$(cat "$portfile")"
    export ERASURE_UPSTREAM_API_URL="$FAKE_URL/v2.1" ERASURE_UPSTREAM_AUTH_URL="$FAKE_URL"
    wait_http "$FAKE_URL/_fake/health"
    log "fake aggregator on $FAKE_URL (pid $FAKE_PID), $rate % faults"
}

declare -A drain_of
round=0
for ((r = 1; r <= ROUNDS; r++)); do
    for rate in $RATES; do
        round=$((round + 1))
        tag="round$round.r$rate"
        fresh_db "$round"
        start_fake "$rate"
        curl -fsS "$FAKE_URL/_fake/users" >"$BENCH_OUT/users.$round"
        [[ $(wc -l <"$BENCH_OUT/users.$round") -eq $USERS ]] || die "the fake seeded too few users"
        start_api --no-worker
        key=$(make_key requester)
        BATCH_ITEMS=$USERS batch_files "$BENCH_OUT/users.$round" "$BENCH_OUT/batch.$round" json user
        start_worker
        sleep 1
        started_db=$(q "select extract(epoch from clock_timestamp())")
        started=$(now)
        read -r created _ _ _ < <(post_batch "$BENCH_OUT/batch.$round/batch-0000.json" "$key")
        [[ $created -eq $USERS ]] || die "the batch created $created requests, not $USERS"
        settled=$(wait_settled "$started" "$SETTLE_SECS")
        # Drain from the database: the batch's acceptance (its requests' received_at) to the last
        # completion.
        drained=$(q "select extract(epoch from max(completed_at) - min(received_at)) from erasure_requests")
        completed=$(q "select count(*) from erasure_requests where state = 'completed'")
        failed=$(q "select count(*) from erasure_requests where state = 'failed'")
        incomplete=$(q "select count(*) from steps where kind = 'inventory' and detail->>'complete' = 'false'")
        tail=$(q "select string_agg(to_char(x, 'FM990.0'), ' / ') from unnest((select percentile_cont(array[0.5, 0.9, 0.99, 1]) within group (order by extract(epoch from completed_at - received_at)) from erasure_requests)) x")
        retried=$(q "select string_agg(kind || ' ' || n || ' of ' || total || ' (max ' || m || ')', ', ') from (select kind, count(*) filter (where attempts > 1) n, count(*) total, max(attempts) m from steps group by kind order by kind) s")
        curl -fsS "$FAKE_URL/_fake/stats" >"$BENCH_OUT/stats.$tag.json"
        curl -fsS "$FAKE_URL/_fake/journal" >"$BENCH_OUT/journal.$tag.jsonl"
        stop_pid "$WORKER_PID"
        cp "$BENCH_OUT/worker.log" "$BENCH_OUT/worker.$tag.log" && : >"$BENCH_OUT/worker.log"
        stop_pid "$API_PID"
        stop_pid "$FAKE_PID"
        s="$BENCH_OUT/stats.$tag.json"
        needed=$((USERS * (4 + CONNECTIONS)))
        calls=$(jq .erasure_calls "$s")
        too_early=$(jq .too_early "$s")
        figure "bad_day_fake.$tag.drain" "$(fmt "$drained" 1)" s "$USERS users x $CONNECTIONS x $ACCOUNTS, $rate % faults; $completed completed, $failed failed, $incomplete inventories incomplete"
        figure "bad_day_fake.$tag.completion" "$tail" s "p50 / p90 / p99 / max of completed_at - received_at; steps attempted more than once: $retried; circuit opened $(grep -c 'circuit opened' "$BENCH_OUT/worker.$tag.log" || true) times"
        figure "bad_day_fake.$tag.amplification" "$(fmt "$calls / $needed" 2)" x "$calls erasure calls / $needed needed (ideal $(fmt "1 / (1 - $rate / 100)" 2)); $(jq .events_calls "$s") event polls, $(jq .token_calls "$s") token calls"
        figure "bad_day_fake.$tag.refusals" "$(jq .retry_after_answers "$s")" calls "with Retry-After: $(jq -c '{faults: .faults, by_outcome, refused_rate, refused_concurrency}' "$s")"
        figure "bad_day_fake.$tag.too_early" "$too_early" calls "next call on the resource before its Retry-After $(jq -c .too_early_by_kind "$s"); client-wide within a cap refusal's Retry-After: $(jq .calls_within_cap_refusal_retry_after_clientwide "$s")"
        figure "bad_day_fake.$tag.peak_concurrency" "$(jq .peak_concurrency "$s")" calls "open at once at the fake (cap $FAKE_CONCURRENCY)"
        figure "bad_day_fake.$tag.busiest_second" "$(jq .busiest_1s "$s")" calls "in a sliding 1-s window (cap $FAKE_RPS); mean $(fmt "$(jq '.calls' "$s") / $drained" 1)/s over the drain"
        drain_of[$round]=$drained
        if [[ $rate != 0 && $round -gt 1 ]]; then
            prev=$((round - 1))
            figure "bad_day_fake.$tag.ratio" "$(fmt "$drained / ${drain_of[$prev]}" 2)" x "drain at $rate % / drain of round $prev (target <= 1.7x)"
        fi
        if [[ $settled -ne 1 || $failed -ne 0 || $completed -ne $USERS || $too_early -ne 0 ]]; then
            log "round $round ($rate %): not every erasure completed, or a call went too early"
            status=1
        fi
    done
done
exit $status
