#!/usr/bin/env bash
# Throughput of the upstream simulator (`erasure sim`, faults off, no rate limit) for a GET and a
# DELETE, measured with wrk over keep-alive connections. Needs wrk (apt-get install -y wrk),
# curl and python3. Settings: PORT, DURATION, THREADS, CONNS, DELETE_ACCOUNTS.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18090}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
DELETE_ACCOUNTS=${DELETE_ACCOUNTS:-600000}
BASE="http://127.0.0.1:$PORT"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release
WORK=$(mktemp -d)
target/release/erasure sim --bind "127.0.0.1:$PORT" --users 0 >"$WORK/sim.log" 2>&1 &
SIM=$!
trap 'kill $SIM 2>/dev/null; wait $SIM 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -sf "$BASE/_sim/health" >/dev/null && break; sleep 0.1; done
curl -sf "$BASE/_sim/health" >/dev/null || { cat "$WORK/sim.log"; exit 1; }

TOKEN=$(curl -sf -X POST "$BASE/token" -H 'content-type: application/json' \
  -d '{"provider":"linxoConnect","client_id":"erasure-sim","client_secret":"sim-secret","grant_type":"client_credentials","scope":"accounts_manage"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# Users to read, and enough distinct accounts that the DELETE run never runs out (200 per channel).
curl -sf -X POST "$BASE/_sim/seed" -H 'content-type: application/json' \
  -d '{"users":100,"connections_per_user":1,"channels_per_connection":1,"accounts_per_channel":2,"transactions_per_account":5}' >"$WORK/users.json"
USER_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["users"][0]["id"])' "$WORK/users.json")
curl -sf -X POST "$BASE/_sim/seed" -H 'content-type: application/json' \
  -d "{\"users\":$((DELETE_ACCOUNTS / 200)),\"connections_per_user\":1,\"channels_per_connection\":1,\"accounts_per_channel\":200,\"transactions_per_account\":0}" >"$WORK/accounts.json"
python3 - "$WORK/accounts.json" "$WORK/ids.txt" <<'PY'
import json, sys
seed = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as out:
    for u in seed["users"]:
        for c in u["connections"]:
            for ch in c["channels"]:
                for a in ch["accounts"]:
                    out.write(a + "\n")
PY
echo "seeded $(wc -l <"$WORK/ids.txt") accounts to delete"

# CPU time (user + system, in clock ticks) the simulator process has used so far.
sim_ticks() { awk '{print $14 + $15}' "/proc/$SIM/stat"; }
TICK=$(getconf CLK_TCK)
# Prints the simulator's CPU cost per request of a wrk run: $1 = ticks before, $2 = wrk output.
cpu_per_request() {
  local used=$(( $(sim_ticks) - $1 )) reqs
  reqs=$(awk '/requests in/ {print $1}' "$2")
  awk -v t="$used" -v hz="$TICK" -v n="$reqs" 'BEGIN {
    us = t / hz * 1e6 / n
    printf "simulator CPU: %.1f us/request (one core would serve %.0f requests/s)\n", us, 1e6 / us }'
}
echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores; others' load skews the figures)"

echo "== GET /v2.1/users/{id} (wrk -t$THREADS -c$CONNS -d$DURATION)"
T0=$(sim_ticks)
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "authorization: Bearer $TOKEN" \
  "$BASE/v2.1/users/$USER_ID" | tee "$WORK/get.txt"
GET_CPU=$(cpu_per_request "$T0" "$WORK/get.txt")

echo "== DELETE /v2.1/accounts/{id}, distinct ids (wrk -t$THREADS -c$CONNS -d$DURATION)"
T0=$(sim_ticks)
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "authorization: Bearer $TOKEN" \
  -s bench/sim_delete.lua "$BASE" -- "$WORK/ids.txt" "$THREADS" | tee "$WORK/delete.txt"
DELETE_CPU=$(cpu_per_request "$T0" "$WORK/delete.txt")

LEFT=$(curl -sf "$BASE/_sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accounts"])')
echo "== summary"
echo "GET    requests/s: $(awk '/Requests\/sec/ {print $2}' "$WORK/get.txt"); $GET_CPU"
echo "DELETE requests/s: $(awk '/Requests\/sec/ {print $2}' "$WORK/delete.txt")" \
  "(non-2xx: $(awk '/Non-2xx/ {print $5}' "$WORK/delete.txt" | grep . || echo 0); accounts left: $((LEFT - 200)) of $(wc -l <"$WORK/ids.txt")); $DELETE_CPU"
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
