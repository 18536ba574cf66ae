#!/usr/bin/env bash
# The pause switch: with WORKERS (4) worker processes erasing N (2,000) accounts at RPS (100)
# upstream calls a second, `POST /v1/pause`, then the time from its answer to the start of the
# last upstream call any process made (the target: under 1 s); then `POST /v1/resume` and the
# time to the first call after it.
#
#   bench/pause.sh       # WORKERS=4 N=2000 RPS=100
source "$(dirname "$0")/lib.sh"

WORKERS=${WORKERS:-4}
N=${N:-2000}
RPS=${RPS:-100}
require_tools psql curl jq python3
bench_init pause
fresh_db 0
export ERASURE_UPSTREAM_MAX_RPS=$RPS ERASURE_UPSTREAM_MAX_CONCURRENCY=16
start_sim
seed_accounts "$N" "$BENCH_OUT/accounts"
start_api --no-worker
for _ in $(seq 1 "$WORKERS"); do start_worker; done
REQUESTER=$(make_key requester)
APPROVER=$(make_key approver)
ADMIN=$(make_key admin)
BATCH_ITEMS=$N batch_files "$BENCH_OUT/accounts" "$BENCH_OUT/batch" json account
post_batch "$BENCH_OUT/batch/batch-0000.json" "$REQUESTER" >/dev/null

# Let the workers get going, then pause while calls flow.
until (($(q "select count(*) from erasure_requests where state = 'completed'") > 50)); do sleep 0.5; done
post() { curl -fsS -X POST "$API_URL/v1/$1" -H "authorization: Bearer $2" -H 'content-type: application/json' -d "$3" >/dev/null; }
post pause "$APPROVER" '{"reason":"bench"}'
paused_ms=$(python3 -c 'import time; print(time.time() * 1000)')
sleep 5
last_ms=$(curl -fsS "$SIM_URL/_sim/calls?limit=2000000" |
    jq '[(if type == "object" then .calls else . end)[] | .started_at_ms] | max')
figure pause_to_last_call_ms "$(fmt "$last_ms - $paused_ms")" ms \
    "$WORKERS workers at $RPS calls/s; negative: the last call started before the answer"
done_at_pause=$(q "select count(*) from erasure_requests where state = 'completed'")
post resume "$ADMIN" '{}'
resumed_ms=$(python3 -c 'import time; print(time.time() * 1000)')
sleep 3
first_ms=$(curl -fsS "$SIM_URL/_sim/calls?limit=2000000" |
    jq --argjson t "$resumed_ms" '[(if type == "object" then .calls else . end)[] | .started_at_ms | select(. > $t)] | min')
figure resume_to_first_call_ms "$(fmt "$first_ms - $resumed_ms")" ms "$done_at_pause of $N completed at the pause"
