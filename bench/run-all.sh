#!/usr/bin/env bash
# Runs every benchmark of BENCHMARKS.md "Erasure requests" in sequence, each on its own fresh
# database, and keeps the whole output in bench/results/run-<date>.txt. The FIGURE lines are the
# figures; grep them: `grep ^FIGURE bench/results/run-*.txt`.
#
#   bench/run-all.sh                 # the full sizes of issue 3
#   QUICK=1 bench/run-all.sh         # small sizes: checks the harness end to end in a few minutes
#   ONLY="intake latency" bench/run-all.sh
#
# Needs: target/release/erasure (cargo build --release), wrk, pgbench, psql, curl, jq, python3,
# PostgreSQL on 127.0.0.1:5432 (user postgres, trust).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p results
out="results/run-$(date -u +%Y%m%dT%H%M%SZ).txt"
benches=${ONLY:-"intake batch batch_explain throughput ratecap latency memory"}

if [[ ${QUICK:-0} == 1 ]]; then
    export DURATION=5 WARMUP=1 BATCHES=2 ITEMS=2000 FILL=1 N=3000 COUNT=30 TOTAL=30000 WORKER_SECS=5 REPEAT=3
fi

# Others may rebuild target/release or edit files while this runs: run private copies of the
# binary and of the scripts (bash reads a script as it runs it; an edit would derail it).
run_dir=$(mktemp -d /tmp/erasure-bench-run.XXXXXX)
trap 'rm -rf "$run_dir"' EXIT
mkdir -p "$run_dir/bench" "$run_dir/src/store"
cp -p ./*.sh ./*.lua ./*.py "$run_dir/bench/"
cp -p ../src/store/steps.rs ../src/store/requests.rs ../src/store/lease.rs "$run_dir/src/store/" # sql_from_src.py reads them
if [[ -z ${ERASURE_BIN:-} ]]; then
    [[ -x ../target/release/erasure ]] || { echo "build first: cargo build --release" >&2; exit 1; }
    cp -p ../target/release/erasure "$run_dir/erasure"
    export ERASURE_BIN="$run_dir/erasure"
fi

{
    echo "# erasure benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(psql -XAtq -h 127.0.0.1 -U postgres -c 'select version()' | cut -d, -f1)"
    echo "# git $(git -C .. rev-parse --short HEAD)$(git -C .. diff --quiet -- src migrations || echo " + uncommitted changes to src/migrations (diff sha1 $(git -C .. diff -- src migrations | sha1sum | cut -c1-10), untracked: $(git -C .. ls-files --others --exclude-standard -- src migrations | tr '\n' ' '))"), binary built $(date -u -r "$ERASURE_BIN" '+%Y-%m-%d %H:%M UTC' 2>/dev/null || echo '?'), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"

status=0
for b in $benches; do
    echo | tee -a "$out"
    echo "## $b (load average before: $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$out"
    start=$(date +%s)
    # A failing benchmark does not stop the others; its exit status is kept.
    if ! "$run_dir/bench/$b.sh" 2>&1 | tee -a "$out"; then
        echo "!! $b failed" | tee -a "$out"; status=1
    fi
    echo "## $b took $(($(date +%s) - start))s" | tee -a "$out"
done
echo | tee -a "$out"
echo "# figures:" | tee -a "$out"
grep '^FIGURE' "$out" | tee -a "$out.figures" >/dev/null || true
cat "$out.figures"
echo "# full log: bench/$out"
exit $status
