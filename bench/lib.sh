# Shared helpers of the bench/ scripts. Source it; do not run it.
#
# Every script gets: a fresh database (dropped on exit unless KEEP_DB=1), fresh keys, free ports,
# and a trap that stops the processes it started (by PID) on exit.
#
# Settings (environment):
#   ERASURE_BIN   the binary (default: target/release/erasure of this checkout)
#   SIM_BIN       the binary whose `sim` runs the simulator (default: ERASURE_BIN)
#   PGHOST PGPORT PGUSER   PostgreSQL (default 127.0.0.1 5432 postgres)
#   KEEP_DB=1     keep the database after the run (its name is printed)
#   BENCH_LOG     RUST_LOG of the service processes (default: info, as in production)
#   BENCH_OUT     directory of logs and intermediate files (default: a new mktemp -d)

set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
ERASURE_BIN="${ERASURE_BIN:-$ROOT/target/release/erasure}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
BENCH_LOG="${BENCH_LOG:-info}"

_BENCH_PIDS=()
_BENCH_DBS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Prints a figure line: `figure <name> <value> <unit> [note]`, easy to grep from run-all's log.
figure() {
    local name=$1 value=$2 unit=$3; shift 3
    printf 'FIGURE %-42s %14s %-10s %s\n' "$name" "$value" "$unit" "$*"
}

require_tools() {
    local t
    for t in "$@"; do command -v "$t" >/dev/null || die "$t is not installed"; done
    [[ -x $ERASURE_BIN ]] || die "$ERASURE_BIN missing: run \`cargo build --release\` first"
}

bench_cleanup() {
    local pid
    for pid in "${_BENCH_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${_BENCH_PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_DB:-0} != 1 ]]; then
        local db
        for db in "${_BENCH_DBS[@]}"; do
            dropdb --if-exists --force "$db" 2>/dev/null || true
        done
    else
        log "kept database(s): ${_BENCH_DBS[*]}"
    fi
}

# bench_init NAME: output directory, trap, keys.
bench_init() {
    BENCH_NAME=$1
    BENCH_OUT="${BENCH_OUT:-$(mktemp -d "/tmp/erasure-bench-$BENCH_NAME.XXXXXX")}"
    mkdir -p "$BENCH_OUT"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    export ERASURE_PSEUDONYM_KEY ERASURE_SIGNING_KEY ERASURE_DATA_KEY
    ERASURE_PSEUDONYM_KEY=$(openssl rand -hex 32)
    ERASURE_SIGNING_KEY=$(openssl rand -hex 32)
    ERASURE_DATA_KEY=$(openssl rand -hex 32)
    export ERASURE_UPSTREAM_CLIENT_ID=erasure-sim ERASURE_UPSTREAM_CLIENT_SECRET=sim-secret
    # Load generators send far more than a person: no per-key rate, no cap per address.
    export ERASURE_API_RATE_PER_KEY=0 ERASURE_HTTP_MAX_CONNECTIONS_PER_IP=0
    export RUST_LOG="$BENCH_LOG"
    log "$BENCH_NAME: logs and files in $BENCH_OUT"
}

# fresh_db SUFFIX: creates and migrates a database, exports DATABASE_URL, prints nothing.
fresh_db() {
    local db="erasure_bench_${BENCH_NAME}_${1:-0}_$$"
    dropdb --if-exists --force "$db" 2>/dev/null || true
    createdb "$db"
    _BENCH_DBS+=("$db")
    BENCH_DB=$db
    export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
    "$ERASURE_BIN" migrate 2>>"$BENCH_OUT/migrate.log"
    log "database $db migrated"
    if [[ ${POOLER:-0} == 1 ]]; then start_pooler; fi
}

# start_pooler: PgBouncer (Debian's) in transaction mode in front of the database with
# POOLER_SIZE (20) server connections; the service's DATABASE_URL goes through it and
# ERASURE_DATABASE_DIRECT_URL is the direct one (docs/operations.md, "Behind a pooler").
start_pooler() {
    local port dir; port=$(free_port)
    local bin; bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    [[ -x $bin ]] || die "pgbouncer is not installed (apt-get install pgbouncer)"
    # Run as root, PgBouncer becomes postgres: its files live where postgres can reach them.
    dir=$(mktemp -d /tmp/erasure-bench-pgbouncer.XXXXXX) && chmod 777 "$dir"
    ln -s "$dir" "$BENCH_OUT/pgbouncer"
    echo '"postgres" ""' >"$dir/users.txt"
    cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=$PGHOST port=$PGPORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
default_pool_size = ${POOLER_SIZE:-20}
max_db_connections = ${POOLER_SIZE:-20}
max_client_conn = 2000
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    local as_user=(); [[ $(id -u) == 0 ]] && as_user=(-u postgres)
    "$bin" "${as_user[@]}" "$dir/pgbouncer.ini" >/dev/null 2>&1 &
    POOLER_PID=$!
    _BENCH_PIDS+=("$POOLER_PID")
    local up=0
    for _ in $(seq 1 100); do
        psql -XAtq "postgres://$PGUSER@127.0.0.1:$port/$BENCH_DB" -c 'select 1' >/dev/null 2>&1 && { up=1; break; }
        sleep 0.1
    done
    ((up)) || die "PgBouncer did not answer on port $port (its log: $dir/pgbouncer.log)"
    export ERASURE_DATABASE_DIRECT_URL=$DATABASE_URL
    export DATABASE_URL="postgres://$PGUSER@127.0.0.1:$port/$BENCH_DB"
    log "PgBouncer (transaction mode, ${POOLER_SIZE:-20} server connections) on port $port"
}

q() { psql -XAtq -v ON_ERROR_STOP=1 -d "$BENCH_DB" -c "$1"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # URL [seconds]
    local url=$1 secs=${2:-60} i
    for ((i = 0; i < secs * 10; i++)); do
        curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$url did not answer within ${secs}s"
}

# start_sim [erasure sim flags...]: sets SIM_URL, SIM_PID; exports the upstream URLs.
start_sim() {
    local port; port=$(free_port)
    "${SIM_BIN:-$ERASURE_BIN}" sim --bind "127.0.0.1:$port" --users 0 "$@" \
        >"$BENCH_OUT/sim.$port.out" 2>"$BENCH_OUT/sim.$port.log" &
    SIM_PID=$!
    _BENCH_PIDS+=("$SIM_PID")
    SIM_URL="http://127.0.0.1:$port"
    export ERASURE_UPSTREAM_API_URL="$SIM_URL/v2.1" ERASURE_UPSTREAM_AUTH_URL="$SIM_URL"
    wait_http "$SIM_URL/_sim/health"
    log "simulator on $SIM_URL (pid $SIM_PID)"
}

# seed_accounts N FILE: seeds N accounts (1 connection, 1 channel of 100 accounts per user, no
# transactions) and writes their ids, one a line, to FILE.
seed_accounts() {
    local n=$1 file=$2 per=100 users
    users=$(((n + per - 1) / per))
    curl -fsS -X POST "$SIM_URL/_sim/seed" -H 'content-type: application/json' \
        -d "{\"users\":$users,\"connections_per_user\":1,\"channels_per_connection\":1,\"accounts_per_channel\":$per,\"transactions_per_account\":0}" |
        jq -r '.users[].connections[].channels[].accounts[]' | head -n "$n" >"$file"
    [[ $(wc -l <"$file") -eq $n ]] || die "seeding gave $(wc -l <"$file") accounts, not $n"
    log "seeded $n accounts in the simulator"
}

# start_api [serve flags...]: `erasure serve --no-worker` by default; sets API_URL, API_PID.
start_api() {
    local port; port=$(free_port)
    "$ERASURE_BIN" serve --bind "127.0.0.1:$port" "$@" >"$BENCH_OUT/api.$port.out" 2>"$BENCH_OUT/api.$port.log" &
    API_PID=$!
    _BENCH_PIDS+=("$API_PID")
    API_URL="http://127.0.0.1:$port"
    wait_http "$API_URL/healthz"
    log "API on $API_URL (pid $API_PID; $*)"
}

# start_worker: `erasure worker` with the environment in force; sets WORKER_PID.
start_worker() {
    "$ERASURE_BIN" worker "$@" >"$BENCH_OUT/worker.out" 2>>"$BENCH_OUT/worker.log" &
    WORKER_PID=$!
    _BENCH_PIDS+=("$WORKER_PID")
    log "worker pid $WORKER_PID"
}

# stop_pid PID: SIGTERM and wait (only processes this script started).
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

make_key() { "$ERASURE_BIN" keys create --role "${1:-requester}" --label bench 2>>"$BENCH_OUT/keys.log"; }

# CPU seconds (user+system) a process has used so far.
cpu_secs() {
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Busy CPU seconds of the whole machine so far (all cores).
machine_busy_secs() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu /{ print ($2 + $3 + $4 + $7 + $8) / hz }' /proc/stat
}

# CPU seconds used so far by PostgreSQL: every postgres process, plus what its exited children
# (backends of closed connections) used, which the kernel adds to the postmaster's cutime/cstime.
pg_cpu_secs() {
    local pids
    pids=$(pgrep -x postgres 2>/dev/null | sed 's|.*|/proc/&/stat|' | tr '\n' ' ')
    # shellcheck disable=SC2086
    { cat $pids 2>/dev/null || true; } | awk -v hz="$(getconf CLK_TCK)" '
        { # the command name may hold spaces: count fields from the end of "(...)"
          sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15 }
        END { print t / hz }'
}

# wait_events DB SAMPLES: samples pg_stat_activity of DB every 0.5 s; prints what its backends wait
# on, as "% of samples of active backends".
wait_events() {
    local db=$1 n=$2 i
    for ((i = 0; i < n; i++)); do
        psql -XAtq -d "$db" -c "select coalesce(wait_event_type || ':' || wait_event, 'CPU (no wait)')
            from pg_stat_activity where datname = current_database() and state <> 'idle'
            and pid <> pg_backend_pid()" 2>/dev/null || true
        sleep 0.5
    done | sort | uniq -c | sort -rn | awk '{ a[NR] = $0; t += $1 } END { for (i = 1; i <= NR && i <= 8; i++) { split(a[i], f, " "); printf "    %5.1f%%  %s\n", f[1] * 100 / t, substr(a[i], index(a[i], f[2])) } }'
}

now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }

# Waits until no request of BENCH_DB is open (every one completed, failed or cancelled), polling
# every 0.5 s, at most until $2 seconds after the time $1 (`now`); prints 1 when none is, else 0.
wait_settled() {
    local started=$1 secs=$2
    while [[ $(calc "$(now) - $started < $secs") == True ]]; do
        if [[ $(q "select count(*) from erasure_requests where state not in ('completed', 'failed', 'cancelled')") -eq 0 ]]; then
            echo 1
            return
        fi
        sleep 0.5
    done
    echo 0
}
fmt() { python3 -c "print(f'{$1:,.${2:-0}f}')"; }

# batch_files FILE_OF_IDS OUTDIR FORMAT(json|csv) SCOPE: splits ids into batch bodies of
# BATCH_ITEMS (10,000) items.
batch_files() {
    python3 - "$@" "${BATCH_ITEMS:-10000}" <<'PY'
import json, sys, os
ids_file, outdir, fmt, scope, size = sys.argv[1:6]
size = int(size)
os.makedirs(outdir, exist_ok=True)
ids = [l.strip() for l in open(ids_file) if l.strip()]
for n, start in enumerate(range(0, len(ids), size)):
    chunk = ids[start:start + size]
    path = os.path.join(outdir, f"batch-{n:04d}.{fmt}")
    with open(path, "w") as f:
        if fmt == "json":
            json.dump([{"scope": scope, "target_id": i} for i in chunk], f, separators=(",", ":"))
        else:
            f.write("scope,target_id,external_reference\n")
            f.writelines(f"{scope},{i},BENCH-{start + k}\n" for k, i in enumerate(chunk))
PY
}

# send_batch FILE KEY RESPONSE: posts one batch body, keeps the answer in RESPONSE (read it with
# batch_counts); prints the call's seconds.
send_batch() {
    local file=$1 key=$2 resp=$3 ctype out
    case $file in *.csv) ctype=text/csv ;; *) ctype=application/json ;; esac
    out=$(curl -sS -o "$resp" -w '%{http_code} %{time_total}' \
        -X POST "$API_URL/v1/erasure-requests/batch" -H "authorization: Bearer $key" \
        -H "content-type: $ctype" --data-binary "@$file")
    [[ ${out%% *} == 200 ]] || die "batch $file answered ${out%% *}: $(head -c 300 "$resp")"
    echo "${out#* }"
}

# batch_counts RESPONSE: prints "created duplicates invalid" of a batch's answer.
batch_counts() { jq -r '"\(.created) \(.duplicates) \(.invalid)"' "$1"; }

# post_batch FILE KEY: posts one batch body; prints "created duplicates invalid seconds".
post_batch() {
    local resp secs
    resp=$(mktemp -p "$BENCH_OUT" batch-response.XXXXXX)
    secs=$(send_batch "$1" "$2" "$resp")
    echo "$(batch_counts "$resp") $secs"
    rm -f "$resp"
}

# unique numeric ids: PREFIX * 10^9 + 1..N
gen_ids() { seq -f "%.0f" "$(($1 * 1000000000 + 1))" "$(($1 * 1000000000 + $2))"; }

# WAL written by the whole cluster so far (pg_stat_wal): "bytes full_page_images records".
# Cluster-wide: other databases' activity during a run is counted too.
wal_stats() { q "select wal_bytes, wal_fpi, wal_records from pg_stat_wal" | tr '|' ' '; }
