#!/usr/bin/env bash
# Where the time of the intake statement goes inside PostgreSQL: the statement of
# src/store/requests.rs `Rows::insert()` (taken from the source by sql_from_src.py) is prepared in
# psql and run with EXPLAIN (ANALYZE, BUFFERS, WAL) on ITEMS synthetic account requests (random
# pseudonyms and sealed ids of the real sizes), first into empty tables, then again after
# FILL more batches (so the tables hold (FILL + 1) * ITEMS requests).
#
#   bench/batch_explain.sh      # ITEMS=10000 FILL=9 IDS=v7 PRE_SQL=
#
# IDS: request ids time-ordered as the service makes them (v7: 48-bit milliseconds, then random
# bits) or random (v4, as it made them before). PRE_SQL: a statement run on the fresh schema first,
# to try a change (`PRE_SQL="alter table steps drop constraint steps_request_id_fkey"`).
#
# Since 2026-11-30 the service runs this statement for calls under 1,000 items only (single
# requests, the intake's groups); batches go in by COPY (`Rows::copy`), which `bench/batch.sh`
# measures end to end. At 10,000 items this script shows what COPY is compared with.
#
# Prints the statement's execution time, the time of each part (the three inserts, the triggers:
# foreign-key checks) and the WAL it wrote.
source "$(dirname "$0")/lib.sh"

ITEMS=${ITEMS:-10000}
FILL=${FILL:-9}
if [[ ${IDS:-v7} == v7 ]]; then
    ID_SQL="encode(overlay(uuid_send(gen_random_uuid()) placing substring(int8send((extract(epoch from clock_timestamp()) * 1000)::bigint) from 3) from 1 for 6), 'hex')::uuid"
else
    ID_SQL="gen_random_uuid()"
fi

require_tools psql python3
bench_init batch-explain
fresh_db 0
KEY=$(make_key requester)
KEY_ID=$(q "select id from api_keys limit 1")
[[ -z ${PRE_SQL:-} ]] || q "$PRE_SQL" >/dev/null
python3 "$BENCH_DIR/sql_from_src.py" src/store/requests.rs insert >"$BENCH_OUT/insert.sql"

# One psql session: prepares the statement, builds the arrays of one batch into variables, runs it.
run_batches() { # COUNT EXPLAIN(0|1)
    local count=$1 explain=$2 i
    {
        echo "prepare ins(uuid[], text[], text[], bytea[], text[], text[], timestamptz[], timestamptz, \
              timestamptz, uuid, uuid, text[], text[], timestamptz[], text) as $(cat "$BENCH_OUT/insert.sql");"
        for ((i = 0; i < count; i++)); do
            cat <<SQL
with r as (select $ID_SQL as id, 'k1:' || encode(sha256(random()::text::bytea), 'hex') as ref,
                  decode(md5(random()::text) || md5(random()::text) || substr(md5(random()::text), 1, 12), 'hex') as sealed
           from generate_series(1, $ITEMS))
select array_agg(id)::text as ids, array_agg(ref)::text as refs, array_agg(sealed)::text as sealed,
       array_fill('account'::text, array[$ITEMS])::text as scopes, array_fill(null::text, array[$ITEMS])::text as ext,
       array_fill('queued'::text, array[$ITEMS])::text as states, array_fill(null::timestamptz, array[$ITEMS])::text as nb,
       -- Only the first step is stored at intake (each later one when reached).
       array_fill('inventory'::text, array[$ITEMS])::text as s_kind,
       array_fill('ready'::text, array[$ITEMS])::text as s_state,
       array_fill(now(), array[$ITEMS])::text as s_run
from r \\gset
SQL
            if ((explain)); then echo "explain (analyze, buffers, wal)"; fi
            echo "execute ins(:'ids', :'scopes', :'refs', :'sealed', :'ext', :'states', :'nb', now(), now() + interval '1 month', '$KEY_ID', gen_random_uuid(), :'s_kind', :'s_state', :'s_run', 'key:$KEY_ID');"
        done
    } | psql -X -q -v ON_ERROR_STOP=1 -d "$BENCH_DB"
}

summarise() { # LABEL FILE
    python3 - "$1" "$2" "$ITEMS" <<'PY'
import re, sys
label, path, items = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(path).read()
def figure(name, value, unit, note=""):
    print(f"FIGURE {'batch_explain.' + label + '.' + name:<60} {value:>14} {unit:<10} {note}")
total = float(re.search(r"Execution Time: ([\d.]+) ms", text).group(1))
figure("execution_ms", f"{total:,.0f}", "ms", f"{items} items: {items / total * 1000:,.0f} items/s inside PostgreSQL")
wal_total = fpi_total = 0
for table in ("erasure_requests", "steps", "audit_entries"):
    m = re.search(rf"Insert on {table}.*?actual time=[\d.]+\.\.([\d.]+).*?WAL: records=\d+(?: fpi=(\d+))? bytes=(\d+)", text, re.S)
    if m:
        wal_total += int(m.group(3)); fpi_total += int(m.group(2) or 0)
        figure(f"insert_{table}_ms", f"{float(m.group(1)):,.0f}", "ms",
               f"node time (triggers run after, below); WAL {int(m.group(3)) / items:,.0f} bytes/item")
for name, ms, calls in re.findall(r"Trigger (?:for constraint )?(\S+)(?: on \S+)?: time=([\d.]+) calls=(\d+)", text):
    figure(f"trigger.{name}_ms", f"{float(ms):,.0f}", "ms", f"{calls} calls")
figure("wal_bytes_per_item", f"{wal_total / items:,.0f}", "bytes", f"the three inserts ({fpi_total} full-page images); the foreign-key checks' row locks add more")
PY
}

echo
echo "== one batch of $ITEMS account requests inside PostgreSQL (the statement of insert_many) =="
run_batches 1 1 >"$BENCH_OUT/explain-empty.txt"
summarise empty "$BENCH_OUT/explain-empty.txt"
run_batches "$FILL" 0 >/dev/null
run_batches 1 1 >"$BENCH_OUT/explain-filled.txt"
summarise "after_$(((FILL + 1) * ITEMS / 1000))k" "$BENCH_OUT/explain-filled.txt"
