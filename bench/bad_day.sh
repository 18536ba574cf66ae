#!/usr/bin/env bash
# Erasures through transient faults: USERS user erasures (CONNECTIONS connections of ACCOUNTS
# accounts each) against the simulator answering a share of every call with 503 or 429 (both with
# `Retry-After: 1`, five 503s for two 429s), at each fault rate of RATES. For each rate it prints
# the time to drain (from the batch's acceptance to the last completion) and the call
# amplification: calls the simulator received / calls the erasures need (1 GET of the user,
# 1 listing of its connections, 1 listing of accounts per connection, 1 DELETE, 1 verifying GET).
# The ideal at a fault rate f is 1 / (1 - f) (1.54 at 35 %).
#
#   bench/bad_day.sh                      # RATES="0 10 35", USERS=1000
#   ERASURE_BIN=/path/to/old/erasure bench/bad_day.sh   # the same against another build
#
# Settings: USERS (1000), CONNECTIONS (3), ACCOUNTS (3), RATES ("0 10 35", percent), MAX_RPS
# (200), CONCURRENCY (16), SETTLE_SECS (1800). Prints FIGURE lines; exit status 1 when a request
# failed or did not complete in time.
source "$(dirname "$0")/lib.sh"

USERS=${USERS:-1000}
CONNECTIONS=${CONNECTIONS:-3}
ACCOUNTS=${ACCOUNTS:-3}
RATES=${RATES:-"0 10 35"}
export ERASURE_UPSTREAM_MAX_RPS=${MAX_RPS:-200}
export ERASURE_UPSTREAM_MAX_CONCURRENCY=${CONCURRENCY:-16}
SETTLE_SECS=${SETTLE_SECS:-1800}
export ERASURE_REVERIFY_EVERY_HOURS=0

require_tools psql curl jq python3 openssl
bench_init bad-day
status=0

for rate in $RATES; do
    fresh_db "r$rate"
    start_sim
    curl -fsS -X POST "$SIM_URL/_sim/seed" -H 'content-type: application/json' \
        -d "{\"users\":$USERS,\"connections_per_user\":$CONNECTIONS,\"channels_per_connection\":1,\"accounts_per_channel\":$ACCOUNTS,\"transactions_per_account\":0}" |
        jq -r '.users[].id' >"$BENCH_OUT/users.$rate"
    [[ $(wc -l <"$BENCH_OUT/users.$rate") -eq $USERS ]] || die "seeding gave too few users"
    python3 - "$rate" <<'PY' >"$BENCH_OUT/faults.$rate.json"
import json, sys
f = int(sys.argv[1]) / 100
print(json.dumps({"error_rate": f * 5 / 7, "error_statuses": [503], "error_retry_after_secs": 1,
                  "throttle_rate": f * 2 / 7, "throttle_retry_after_secs": 1}))
PY
    curl -fsS -X PUT "$SIM_URL/_sim/faults" -H 'content-type: application/json' \
        -d "@$BENCH_OUT/faults.$rate.json" >/dev/null
    curl -fsS -X DELETE "$SIM_URL/_sim/calls" >/dev/null
    start_api --no-worker
    key=$(make_key requester)
    BATCH_ITEMS=$USERS batch_files "$BENCH_OUT/users.$rate" "$BENCH_OUT/batch.$rate" json user
    start_worker
    started=$(now)
    read -r created _ _ _ < <(post_batch "$BENCH_OUT/batch.$rate/batch-0000.json" "$key")
    [[ $created -eq $USERS ]] || die "the batch created $created requests, not $USERS"
    settled=$(wait_settled "$started" "$SETTLE_SECS")
    drained=$(calc "$(now) - $started")
    completed=$(q "select count(*) from erasure_requests where state = 'completed'")
    failed=$(q "select count(*) from erasure_requests where state = 'failed'")
    incomplete=$(q "select count(*) from steps where kind = 'inventory' and detail->>'complete' = 'false'")
    curl -fsS -X PUT "$SIM_URL/_sim/faults" -H 'content-type: application/json' -d '{}' >/dev/null
    curl -fsS "$SIM_URL/_sim/calls?limit=2000000" >"$BENCH_OUT/calls.$rate.json"
    read -r calls faulted throttled < <(python3 - "$BENCH_OUT/calls.$rate.json" <<'PY'
import json, sys
calls = json.load(open(sys.argv[1]))
calls = calls.get("calls", calls) if isinstance(calls, dict) else calls
api = [c for c in calls if c["route"].startswith("/v2.1")]
print(len(api), sum(1 for c in api if c.get("fault")), sum(1 for c in api if c["status"] == 429))
PY
)
    needed=$((USERS * (4 + CONNECTIONS)))
    figure "bad_day.r$rate.drain" "$(fmt "$drained" 1)" s "$USERS users x $CONNECTIONS x $ACCOUNTS, $rate % faults"
    figure "bad_day.r$rate.amplification" "$(fmt "$calls / $needed" 2)" x "$calls calls / $needed needed; ideal $(fmt "1 / (1 - $rate / 100)" 2)"
    figure "bad_day.r$rate.faults" "$faulted" calls "of which 429: $throttled"
    figure "bad_day.r$rate.completed" "$completed" requests "failed $failed, inventories incomplete $incomplete"
    if [[ $settled -ne 1 || $failed -ne 0 || $completed -ne $USERS ]]; then
        log "rate $rate: not every erasure completed"
        status=1
    fi
    stop_pid "$WORKER_PID"
    stop_pid "$API_PID"
    stop_pid "$SIM_PID"
done
exit $status
