#!/usr/bin/env bash
# The audit log at scale (BENCHMARKS.md, "Audit log"):
#   A. append rate with the Merkle tree maintained: APPEND_N entries inserted in bulk by SQL, then
#      ONE sequencer round (`GET /v1/audit/checkpoint` signs a checkpoint after sequencing every
#      entry into a leaf and writing the tree's new nodes) is timed;
#   B. export and offline verification of those APPEND_N entries (`/usr/bin/time -v` for max RSS),
#      and of a tenth of them to show that memory does not grow with the size;
#   C. receipt generation at RECEIPT_N entries: the log is filled by SQL (entries, leaves hashed by
#      PostgreSQL's sha256(), the tree by the backfill block of migrations/0005_audit_tree.sql),
#      then one real account erasure runs through the service and its receipt is fetched
#      RECEIPTS times; the proof size and the offline verification are checked.
#
#   bench/audit.sh                                  # APPEND_N=1000000 RECEIPT_N=10000000 RECEIPTS=200
#   APPEND_N=100000 RECEIPT_N=1000000 bench/audit.sh   # quick
#   ONLY=append|receipt bench/audit.sh
#   COMPARE_BIN=path/to/older/erasure ONLY=receipt bench/audit.sh   # also time that build's receipt
#                                                                   # on the same filled log
source "$(dirname "$0")/lib.sh"

APPEND_N=${APPEND_N:-1000000}
RECEIPT_N=${RECEIPT_N:-10000000}
RECEIPTS=${RECEIPTS:-200}
ONLY=${ONLY:-}
COMPARE_BIN=${COMPARE_BIN:-}

require_tools psql curl jq python3 openssl /usr/bin/time
bench_init audit
# Only the timed round sequences: the periodic one waits an hour, the entries bound is out of reach.
export ERASURE_CHECKPOINT_SECS=3600 ERASURE_CHECKPOINT_EVERY_ENTRIES=1000000000000

# fill_entries N: N audit entries shaped like the engine's (8 per request), in one statement.
fill_entries() {
    q "insert into audit_entries (request_id, subject_ref, actor, event, data)
       select md5('r' || (g / 8))::uuid,
              'k1:' || encode(sha256(('s' || (g / 8))::bytea), 'hex'),
              case when g % 8 = 0 then 'key:' || md5('k')::uuid else 'engine' end,
              (array['received','upstream_call','deleted','upstream_call','verified_absent',
                     'upstream_call','cascade_observed','completed'])[g % 8 + 1],
              jsonb_build_object('method', 'DELETE', 'path', '/v2.1/accounts/{id}',
                                 'status', 204, 'duration_ms', g % 50)
       from generate_series(0, $1 - 1) g"
}

rss_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }

bench_append() {
    fresh_db append
    start_sim
    start_api --no-worker
    local key t0 t1 size
    key=$(make_key auditor)
    log "inserting $APPEND_N entries"
    t0=$(now); fill_entries "$APPEND_N"; t1=$(now)
    # With the entries the set-up wrote (the auditor key's key_created).
    local total; total=$(q "select count(*) from audit_entries")
    figure audit_bulk_insert_rate "$(fmt "$APPEND_N / ($t1 - $t0)")" entries/s "one INSERT ... SELECT of $APPEND_N entries (not sequenced)"
    # What autovacuum does after such an insert; a log that grows steadily has its statistics.
    q "analyze audit_entries"
    log "sequencing them (one round)"
    local api0 pg0 busy0 load
    load=$(cut -d' ' -f1 /proc/loadavg)
    api0=$(cpu_secs "$API_PID"); pg0=$(pg_cpu_secs); busy0=$(machine_busy_secs)
    t0=$(now)
    size=$(curl -fsS "$API_URL/v1/audit/checkpoint" -H "authorization: Bearer $key" | jq .size)
    t1=$(now)
    [[ $size == "$total" ]] || die "checkpoint size $size, not $total"
    figure audit_sequencer_rate "$(fmt "$APPEND_N / ($t1 - $t0)")" entries/s "leaves + tree nodes + signed checkpoint, $APPEND_N entries in $(fmt "$t1 - $t0" 1) s"
    figure audit_sequencer_cpu "$(fmt "($(cpu_secs "$API_PID") - $api0) * 1e6 / $APPEND_N" 1)" us/entry "service CPU; postgres $(fmt "($(pg_cpu_secs) - $pg0) * 1e6 / $APPEND_N" 1) us/entry; machine busy $(fmt "($(machine_busy_secs) - $busy0) / ($t1 - $t0) * 100 / $(nproc)")% of $(nproc) cores; load average before $load"
    figure audit_tree_rows "$(q "select count(*) from audit_tree")" rows "for $APPEND_N leaves"
    figure audit_tree_size "$(q "select pg_total_relation_size('audit_tree') / 1048576")" MiB "audit_leaves: $(q "select pg_total_relation_size('audit_leaves') / 1048576") MiB"

    local vkey rss0 rss1 cut
    vkey=$("$ERASURE_BIN" audit public-key)
    rss0=$(rss_kb "$API_PID")
    t0=$(now)
    curl -fsS -o "$BENCH_OUT/export.jsonl" "$API_URL/v1/audit/export?format=jsonl" -H "authorization: Bearer $key"
    t1=$(now)
    rss1=$(rss_kb "$API_PID")
    figure audit_export_rate "$(fmt "$APPEND_N / ($t1 - $t0)")" entries/s "$(du -m "$BENCH_OUT/export.jsonl" | cut -f1) MiB; service VmHWM $((rss0 / 1024)) -> $((rss1 / 1024)) MiB"
    verify_export "$BENCH_OUT/export.jsonl" "$vkey" "$total"

    # A tenth of the log: the verifier's memory must not depend on the size.
    cut=$(q "select to_char(at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') from audit_leaves where leaf_index = $APPEND_N / 10")
    curl -fsS -o "$BENCH_OUT/export-tenth.jsonl" "$API_URL/v1/audit/export?format=jsonl&to=$cut" -H "authorization: Bearer $key"
    verify_export "$BENCH_OUT/export-tenth.jsonl" "$vkey" "$(($(wc -l <"$BENCH_OUT/export-tenth.jsonl") - 1))"
    rm -f "$BENCH_OUT"/export*.jsonl
    stop_pid "$API_PID"
    stop_pid "$SIM_PID"
}

# verify_export FILE VKEY N
verify_export() {
    local file=$1 vkey=$2 n=$3 t0 t1 rss
    t0=$(now)
    /usr/bin/time -v -o "$BENCH_OUT/time.txt" "$ERASURE_BIN" audit verify --export "$file" --public-key "$vkey" \
        >"$BENCH_OUT/verify.out" 2>&1 || die "verification failed: $(tail -3 "$BENCH_OUT/verify.out")"
    t1=$(now)
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$BENCH_OUT/time.txt")
    figure "audit_verify_rate_$n" "$(fmt "$n / ($t1 - $t0)")" entries/s "erasure audit verify --export, $n entries in $(fmt "$t1 - $t0" 2) s, max RSS $((rss / 1024)) MiB"
}

# time_receipts ID KEY SIZE ENTRIES SUFFIX: RECEIPTS sequential GETs of the receipt (after one to
# warm up), as seen by curl (HTTP on localhost included); figures p50, p95 and worst.
time_receipts() {
    local id=$1 key=$2 size=$3 entries=$4 suffix=$5 p50 p95 worst load
    load=$(cut -d' ' -f1 /proc/loadavg)
    curl -fsS -o /dev/null "$API_URL/v1/erasure-requests/$id/receipt" -H "authorization: Bearer $key" # warm
    for _ in $(seq 1 "$RECEIPTS"); do
        curl -fsS -o /dev/null -w '%{time_total}\n' "$API_URL/v1/erasure-requests/$id/receipt" \
            -H "authorization: Bearer $key"
    done >"$BENCH_OUT/receipt-times$suffix.txt"
    read -r p50 p95 worst < <(python3 - "$BENCH_OUT/receipt-times$suffix.txt" <<'PY'
import sys
t = sorted(float(l) * 1000 for l in open(sys.argv[1]))
print(f"{t[len(t) // 2]:.2f} {t[int(len(t) * 0.95)]:.2f} {t[-1]:.2f}")
PY
)
    figure "audit_receipt_p50$suffix" "$p50" ms "GET receipt ($ERASURE_BIN), $RECEIPTS sequential curls at $size entries ($entries entries in the receipt); load average before $load"
    figure "audit_receipt_p95$suffix" "$p95" ms "worst $worst ms"
    # The same requests as the service timed them (its `http request` log lines), without curl.
    read -r p50 p95 worst < <(sed 's/\x1b\[[0-9;]*m//g' "$BENCH_OUT/api.${API_URL##*:}.log" |
        grep 'route=/v1/erasure-requests/{id}/receipt' | tail -n "$RECEIPTS" |
        sed -n 's/.*duration_ms=\([0-9.]*\).*/\1/p' | python3 -c '
import sys
t = sorted(float(l) for l in sys.stdin)
print(f"{t[len(t) // 2]:.2f} {t[int(len(t) * 0.95)]:.2f} {t[-1]:.2f}")')
    figure "audit_receipt_server_p50$suffix" "$p50" ms "in the service (its log's duration_ms); p95 $p95 ms, worst $worst ms"
}

bench_receipt() {
    fresh_db receipt
    local t0 t1
    log "filling the log with $RECEIPT_N entries by SQL"
    t0=$(now)
    # As pg_restore does: the secondary indexes of the two big tables are dropped for the bulk
    # load and built afterwards (one sort each instead of 10 million random inserts).
    local indexes
    indexes=$(q "select pg_get_indexdef(i.indexrelid) || ';' from pg_index i
                 where i.indrelid in ('audit_entries'::regclass, 'audit_leaves'::regclass)
                   and not exists (select from pg_constraint where conindid = i.indexrelid)")
    q "select 'drop index ' || string_agg(i.indexrelid::regclass::text, ', ') from pg_index i
       where i.indrelid in ('audit_entries'::regclass, 'audit_leaves'::regclass)
         and not exists (select from pg_constraint where conindid = i.indexrelid)" | psql -XAtq -v ON_ERROR_STOP=1 -d "$BENCH_DB"
    fill_entries "$RECEIPT_N"
    # Leaves as the sequencer would write them, hashed by PostgreSQL (leaf = H(0x00 || text)).
    q "insert into audit_leaves (leaf_index, entry_id, request_id, subject_ref, at, leaf, leaf_hash)
       select id - 1, id, request_id, subject_ref, at, leaf, sha256('\\x00'::bytea || convert_to(leaf, 'UTF8'))
       from (select id, request_id, subject_ref, at,
                    jsonb_build_object('entry_id', id, 'at', at, 'request_id', request_id,
                                       'subject_ref', subject_ref, 'actor', actor, 'event', event,
                                       'data', data, 'nonce', encode(nonce, 'hex'))::text as leaf
             from audit_entries) e"
    t1=$(now)
    log "entries and leaves in $(fmt "$t1 - $t0") s; building their indexes"
    t0=$(now)
    psql -XAtq -v ON_ERROR_STOP=1 -d "$BENCH_DB" <<<"$indexes"
    q "update audit_sequencer set horizon = pg_snapshot_xmax(pg_current_snapshot())"
    t1=$(now)
    log "indexes in $(fmt "$t1 - $t0") s; building the tree with the migration's backfill"
    t0=$(now)
    sed -n '/^do \$\$/,$p' "$ROOT/migrations/0005_audit_tree.sql" | psql -XAtq -v ON_ERROR_STOP=1 -d "$BENCH_DB"
    t1=$(now)
    log "tree of $(q "select count(*) from audit_tree") nodes in $(fmt "$t1 - $t0") s"
    q "vacuum analyze audit_entries, audit_leaves, audit_tree"

    export ERASURE_CHECKPOINT_SECS=1
    start_sim
    seed_accounts 1 "$BENCH_OUT/account.txt"
    start_api
    local requester auditor id state
    requester=$(make_key requester)
    auditor=$(make_key auditor)
    id=$(curl -fsS -X POST "$API_URL/v1/erasure-requests" -H "authorization: Bearer $requester" \
        -H 'content-type: application/json' \
        -d "{\"scope\":\"account\",\"target_id\":\"$(cat "$BENCH_OUT/account.txt")\"}" | jq -r .id)
    for _ in $(seq 1 300); do
        state=$(curl -fsS "$API_URL/v1/erasure-requests/$id" -H "authorization: Bearer $auditor" | jq -r .state)
        [[ $state == completed ]] && break
        sleep 0.2
    done
    [[ $state == completed ]] || die "request $id is $state"
    for _ in $(seq 1 100); do
        curl -fsS -o "$BENCH_OUT/receipt.json" "$API_URL/v1/erasure-requests/$id/receipt" \
            -H "authorization: Bearer $auditor" 2>/dev/null && break
        sleep 0.2
    done
    local size entries hashes
    size=$(curl -fsS "$API_URL/v1/audit/checkpoint" -H "authorization: Bearer $auditor" | jq .size)
    entries=$(jq '.entries | length' "$BENCH_OUT/receipt.json")
    hashes=$(jq '[.entries[].inclusion_proof | length] | max' "$BENCH_OUT/receipt.json")
    "$ERASURE_BIN" audit verify --receipt "$BENCH_OUT/receipt.json" --public-key "$("$ERASURE_BIN" audit public-key)" \
        >"$BENCH_OUT/verify-receipt.out" 2>&1 || die "the receipt does not verify: $(cat "$BENCH_OUT/verify-receipt.out")"
    log "receipt of $entries entries at tree size $size verifies offline"

    # Timed on an API without the workers (the erasure is done), the same for COMPARE_BIN.
    stop_pid "$API_PID"
    start_api --no-worker
    time_receipts "$id" "$auditor" "$size" "$entries" ""
    if [[ -n $COMPARE_BIN ]]; then
        # The same receipt from another build on the same log (an older build serves the newer
        # schema: migrations are forward-compatible).
        stop_pid "$API_PID"
        local own=$ERASURE_BIN
        ERASURE_BIN=$COMPARE_BIN
        start_api --no-worker
        time_receipts "$id" "$auditor" "$size" "$entries" "_compare"
        ERASURE_BIN=$own
    fi
    figure audit_receipt_proof_hashes "$hashes" hashes "per entry, ceil(log2($size)) = $(python3 -c "import math; print(math.ceil(math.log2($size)))"); receipt $(wc -c <"$BENCH_OUT/receipt.json") bytes"
    local cons
    cons=$(curl -fsS -o /dev/null -w '%{time_total}' "$API_URL/v1/audit/consistency?from=$((size / 3))" -H "authorization: Bearer $auditor")
    figure audit_consistency_proof_time "$(fmt "$cons * 1000" 2)" ms "GET /v1/audit/consistency?from=$((size / 3)) at $size entries"
}

[[ -z $ONLY || $ONLY == append ]] && bench_append
[[ -z $ONLY || $ONLY == receipt ]] && bench_receipt
log "done"
