#!/usr/bin/env bash
# Intake and drain through PgBouncer in transaction mode beside the same runs direct
# (BENCHMARKS.md, "Behind a pooler"): bench/intake.sh and bench/throughput.sh, each run direct and
# with POOLER=1 (bench/lib.sh start_pooler: Debian's PgBouncer, POOLER_SIZE server connections),
# interleaved ROUNDS times, so that both see the same machine.
#
#   bench/pooler.sh              # ROUNDS=2 DURATION=20 N=30000 POOLER_SIZE=20
#
# Prints each run's FIGURE lines and, at the end, the pooled figure as a share of the direct one.
set -euo pipefail
cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-2}
export DURATION=${DURATION:-20} N=${N:-30000} POOLER_SIZE=${POOLER_SIZE:-20}
command -v pgbouncer >/dev/null || [[ -x /usr/sbin/pgbouncer ]] ||
    { echo "pgbouncer is not installed (apt-get install pgbouncer)" >&2; exit 1; }

out=$(mktemp -d /tmp/erasure-bench-pooler.XXXXXX)
for round in $(seq 1 "$ROUNDS"); do
    for mode in direct pooled; do
        pooler=0; [[ $mode == pooled ]] && pooler=1
        for bench in intake throughput; do
            echo "# round $round, $bench, $mode" >&2
            POOLER=$pooler ./"$bench".sh 2>"$out/$bench-$mode-$round.log" |
                tee "$out/$bench-$mode-$round.txt"
        done
    done
done

value() { # FILE FIGURE: the figure's value without thousands separators
    awk -v f="$2" '$1 == "FIGURE" && $2 == f { gsub(",", "", $3); print $3 }' "$1"
}
echo
printf '%-6s %-24s %12s %12s %8s\n' round figure direct pooled ratio
for round in $(seq 1 "$ROUNDS"); do
    for pair in intake:intake.requests_per_s intake:intake.pgbench_insert_tps throughput:throughput.erasures_per_s; do
        bench=${pair%%:*} fig=${pair#*:}
        d=$(value "$out/$bench-direct-$round.txt" "$fig")
        p=$(value "$out/$bench-pooled-$round.txt" "$fig")
        ratio=$(python3 -c "print(f'{$p / $d:.2f}x')" 2>/dev/null || echo '?')
        printf '%-6s %-24s %12s %12s %8s\n' "$round" "$fig" "$d" "$p" "$ratio"
    done
done
echo "runs' output: $out" >&2
