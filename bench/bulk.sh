#!/usr/bin/env bash
# Bulk actions: `POST /v1/bulk-actions` approving N (10,000) requests that wait for approval,
# selected by a list filter, against `erasure serve --no-worker` with ERASURE_APPROVAL=all; then
# holding the same N by filter. Each item is its own transaction with its own audit entry.
#
#   bench/bulk.sh        # N=10000
#   N=1000 bench/bulk.sh
source "$(dirname "$0")/lib.sh"

N=${N:-10000}
require_tools psql curl jq python3
bench_init bulk
fresh_db 0
export ERASURE_APPROVAL=all
start_api --no-worker
REQUESTER=$(make_key requester)
APPROVER=$(make_key approver)

gen_ids 5 "$N" >"$BENCH_OUT/ids"
BATCH_ITEMS=$N batch_files "$BENCH_OUT/ids" "$BENCH_OUT/batch" json account
read -r created _ _ _ < <(post_batch "$BENCH_OUT/batch/batch-0000.json" "$REQUESTER")
((created == N)) || die "$created of $N created"
q "checkpoint" >/dev/null

# bulk ACTION BODY: posts it, checks every item was done, prints the seconds.
bulk() {
    local out secs
    out=$(curl -sS -o "$BENCH_OUT/$1.json" -w '%{http_code} %{time_total}' \
        -X POST "$API_URL/v1/bulk-actions" -H "authorization: Bearer $APPROVER" \
        -H 'content-type: application/json' -d "$2")
    [[ ${out%% *} == 200 ]] || die "$1 answered ${out%% *}: $(head -c 300 "$BENCH_OUT/$1.json")"
    [[ $(jq .done "$BENCH_OUT/$1.json") == "$N" ]] || die "$1: $(cat "$BENCH_OUT/$1.json")"
    echo "${out#* }"
}

cpu0=$(cpu_secs "$API_PID"); pg0=$(pg_cpu_secs)
secs=$(bulk approve '{"action":"approve","filter":{"state":"pending_approval"}}')
cpu1=$(cpu_secs "$API_PID"); pg1=$(pg_cpu_secs)
figure bulk_approve_seconds "$(fmt "$secs" 2)" s "$N requests by filter, one call"
figure bulk_approve_per_second "$(fmt "$N / $secs")" items/s \
    "service CPU $(fmt "$cpu1 - $cpu0" 1) s, PostgreSQL CPU $(fmt "$pg1 - $pg0" 1) s"
secs=$(bulk hold '{"action":"hold","filter":{"state":"queued"},"legal_basis":"art17_3_e","note":"bench"}')
figure bulk_hold_seconds "$(fmt "$secs" 2)" s "$N requests by filter, one call"
[[ $(q "select count(*) from audit_entries where event = 'approved'") == "$N" ]] ||
    die "not one approved entry per request"
