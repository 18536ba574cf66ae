#!/usr/bin/env bash
# Retention (issue 23): what `erasure retention run` costs on a database of N closed requests
# (default 1,000,000) spread over 4 ended pseudonym epochs, each account-scope request with a
# guard row of 3 pseudonyms (what `strip_guard` empties), and a current fifth epoch.
#
#   bench/retention.sh              # N=1000000
#   N=100000 bench/retention.sh
#
# Prints the time of four runs: (a) every epoch held back by one open request (it scans and keeps
# them), (b) the run that destroys the 4 epochs (incl. the VACUUM FULL of pseudonym_epochs),
# (c) the next run, with nothing left to do (the daily case), and the size of what it scanned.
# The rows are written by SQL (the audit log is not filled: retention does not read it).
source "$(dirname "$0")/lib.sh"
N=${N:-1000000}
require_tools psql
bench_init retention
fresh_db
key_id=$(
    "$ERASURE_BIN" keys create --role admin --label bench >/dev/null
    q "select id from api_keys limit 1"
)

log "writing 5 epochs and $N closed requests"
# Epochs 1-4 ended 1,140 days ago or earlier (90 days each); epoch 5 is current. The keys are
# random bytes: retention never opens them.
q "insert into pseudonym_epochs (version, key_sealed, origin, starts_at)
   select v, decode(md5(random()::text) || md5(random()::text), 'hex'), 'random',
          now() - make_interval(days => 1140 + (5 - v) * 90)
   from generate_series(1, 4) v
   union all select 5, decode(md5(random()::text), 'hex'), 'random', now() - interval '1140 days'"
q "insert into erasure_requests (id, scope, subject_ref, state, received_at, due_at, completed_at,
       outcome, requested_by, updated_at)
   select gen_random_uuid(), 'account', 'k' || (1 + g % 4) || ':' || md5(g::text), 'completed', t, t + interval '30 days',
          t + interval '1 hour', 'erased', '$key_id', t + interval '1 hour'
   from generate_series(1, $N) g,
        lateral (select now() - make_interval(days => 1140 + (5 - (1 + g % 4)) * 90 - (g % 80))) as x(t)"
q "insert into erased_accounts (request_id, root_request_id, connection_ref, refs)
   select id, id, 'k1:' || md5(id::text), array['k1:a' || md5(id::text), 'k1:b' || md5(id::text), 'k1:c' || md5(id::text)]
   from erasure_requests"
q "analyze"
size=$(q "select pg_size_pretty(pg_total_relation_size('erasure_requests') + pg_total_relation_size('erased_accounts'))")
log "requests and guard rows: $size"

timed_run() { # LABEL
    local t0 t1 out
    t0=$(date +%s.%N)
    out=$("$ERASURE_BIN" retention run 2>>"$BENCH_OUT/retention.log")
    t1=$(date +%s.%N)
    printf '%s\n' "$out" >>"$BENCH_OUT/retention.out"
    log "$1: $(echo "$out" | tr '\n' ' ')"
    python3 -c "print(round($t1 - $t0, 2))"
}

# (a) One open request in each ended epoch: nothing may go.
q "update erasure_requests set state = 'queued', completed_at = null, outcome = null
   where id in (select distinct on (split_part(subject_ref, ':', 1)) id from erasure_requests
                where subject_ref like 'k_:%' order by split_part(subject_ref, ':', 1), id)"
held=$(timed_run "held back by open requests")
[[ $(q "select count(*) from pseudonym_epochs where key_sealed is not null") == 5 ]] || die "an epoch went"
q "update erasure_requests set state = 'completed', completed_at = received_at + interval '1 hour',
       outcome = 'erased' where state = 'queued'"
# (b) The run that destroys them.
destroy=$(timed_run "destroying 4 epochs")
[[ $(q "select count(*) from pseudonym_epochs where key_sealed is null") == 4 ]] || die "not 4 destroyed"
[[ $(q "select count(*) from erased_accounts where cardinality(refs) > 0") == 0 ]] || die "guard rows left"
# (c) The daily case afterwards.
noop=$(timed_run "nothing left")

figure retention_run_held_back "$held" s "N=$N, 4 epochs scanned and kept (an open request each)"
figure retention_run_destroying_4_epochs "$destroy" s "N=$N requests + guard rows ($size), incl. VACUUM FULL"
figure retention_run_nothing_due "$noop" s "after the destruction"
