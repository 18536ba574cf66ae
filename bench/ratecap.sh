#!/usr/bin/env bash
# Figure 3b: sustained throughput under a rate cap, with 50 ms upstream latency. N account
# erasures are queued (no worker running), the simulator adds LATENCY_MS to every call, then ONE
# worker runs with ERASURE_UPSTREAM_MAX_RPS=CAP for DURATION seconds. The simulator's journal
# (`GET /_sim/calls`) gives every call it received; the script reports the sustained call rate
# after a WARMUP, as a % of the cap, and the most calls seen in any sliding one-second window.
#
#   bench/ratecap.sh      # CAP=200 LATENCY_MS=50 DURATION=60 WARMUP=5 N=6000
#                         # UPSTREAM_CONCURRENCY=64 WORKER_CONCURRENCY=64
source "$(dirname "$0")/lib.sh"

CAP=${CAP:-200}
LATENCY_MS=${LATENCY_MS:-50}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-5}
N=${N:-6000}
UPSTREAM_CONCURRENCY=${UPSTREAM_CONCURRENCY:-64}
WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-64}

require_tools psql curl jq python3
bench_init ratecap
fresh_db 0
start_sim --fault-latency-ms "$LATENCY_MS"
seed_accounts "$N" "$BENCH_OUT/accounts"
start_api --no-worker
KEY=$(make_key requester)
batch_files "$BENCH_OUT/accounts" "$BENCH_OUT/batches" csv account
for f in "$BENCH_OUT"/batches/batch-*; do post_batch "$f" "$KEY" >/dev/null; done
stop_pid "$API_PID"
q "analyze"
curl -fsS -X DELETE "$SIM_URL/_sim/calls"

export ERASURE_UPSTREAM_MAX_RPS=$CAP ERASURE_UPSTREAM_MAX_CONCURRENCY=$UPSTREAM_CONCURRENCY
export ERASURE_WORKER_CONCURRENCY=$WORKER_CONCURRENCY
start_worker
sleep "$DURATION"
end_ms=$(python3 -c 'import time; print(int(time.time() * 1000))')
curl -fsS "$SIM_URL/_sim/calls" >"$BENCH_OUT/calls.json"
w_cpu=$(cpu_secs "$WORKER_PID")
stop_pid "$WORKER_PID"
done=$(q "select count(*) from erasure_requests where state = 'completed'")

echo
echo "== rate cap: ERASURE_UPSTREAM_MAX_RPS=$CAP, ${LATENCY_MS} ms upstream latency, one worker, ${DURATION}s =="
python3 - "$BENCH_OUT/calls.json" "$CAP" "$WARMUP" "$end_ms" <<'PY'
import json, sys
calls = json.load(open(sys.argv[1]))["calls"]
cap, warmup, end_ms = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
api = sorted(c["started_at_ms"] for c in calls if c["path"].startswith("/v2.1"))
tokens = sum(1 for c in calls if c["path"] == "/token")
statuses = {}
for c in calls:
    statuses[c["status"]] = statuses.get(c["status"], 0) + 1
lo = api[0] + warmup * 1000
hi = end_ms - 1000          # calls still in flight at the end are not in the journal yet
window = [t for t in api if lo <= t < hi]
rate = len(window) / ((hi - lo) / 1000)
# most calls started in any sliding one-second window
best, j = 0, 0
for i, t in enumerate(api):
    while api[j] <= t - 1000:
        j += 1
    best = max(best, i - j + 1)
def figure(name, value, unit, note=""):
    print(f"FIGURE {name:<42} {value:>14} {unit:<10} {note}")
figure("ratecap.calls_per_s_sustained", f"{rate:,.1f}", "calls/s", f"/v2.1 calls started in [{warmup:.0f}s after the first, end-1s]: {len(window)} in {(hi-lo)/1000:.1f}s")
figure("ratecap.percent_of_cap", f"{rate / cap * 100:.1f}", "%", f"cap {cap:.0f}/s (target >= 90%)")
figure("ratecap.max_calls_in_1s", best, "calls", "any sliding 1 s window (the cap must hold)")
figure("ratecap.token_calls", tokens, "calls", "POST /token")
figure("ratecap.statuses", " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())), "", "")
PY
figure ratecap.erasures_completed "$done" erasures "in ${DURATION}s: $(fmt "$done / $DURATION" 1)/s (4 calls each)"
figure ratecap.cpu_worker "$(fmt "$w_cpu / $DURATION * 100")" "% of 1 core" "erasure worker"
