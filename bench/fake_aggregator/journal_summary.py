#!/usr/bin/env python3
"""Summary of a fake aggregator's journal (GET /_fake/journal, JSON Lines): calls a second by
outcome, the longest gaps between calls, and how long resources waited between a refusal and
the next call on them.

    python3 journal_summary.py journal.jsonl [--seconds]
"""
import collections
import json
import statistics
import sys

recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
api = [r for r in recs if r["route"].startswith("/v2.1") and r["route"] != "/v2.1/events"]
api.sort(key=lambda r: r["t"])
if not api:
    sys.exit("no calls")
t0 = api[0]["t"]
print(f"{len(api)} erasure calls from {t0:.2f} to {api[-1]['t']:.2f} s ({api[-1]['t'] - t0:.1f} s)")
if "--seconds" in sys.argv:
    per = collections.defaultdict(collections.Counter)
    for r in api:
        per[int(r["t"] - t0)][r["out"]] += 1
    for s in range(int(api[-1]["t"] - t0) + 1):
        c = per[s]
        print(f"  {s:4d}s {sum(c.values()):4d}  " + " ".join(f"{k}={v}" for k, v in sorted(c.items())))
gaps = sorted(((b["t"] - a["t"], a["t"] - t0) for a, b in zip(api, api[1:])), reverse=True)[:5]
print("longest gaps between calls:", ", ".join(f"{g:.2f} s at {t:.1f}" for g, t in gaps))
# Time from a failed answer to the next call on the same resource, by the answer's outcome.
last = {}
waits = collections.defaultdict(list)
for r in api:
    prev = last.get(r["res"])
    if prev is not None and prev["out"] != "ok":
        waits[prev["out"]].append(r["t"] - (prev["t"] + prev.get("dt", 0)))
    last[r["res"]] = r
for k, v in sorted(waits.items()):
    v.sort()
    print(f"after {k:12s} next call on the resource in: n={len(v)} min {v[0]:.3f} "
          f"median {statistics.median(v):.3f} p90 {v[int(len(v) * 0.9)]:.3f} max {v[-1]:.3f} s")
# Calls per resource after its first: how many tries each resource took.
tries = collections.Counter(r["res"] + " " + r["m"] for r in api)
hist = collections.Counter(tries.values())
print("calls per (resource, method):", dict(sorted(hist.items())))
# Attempts that ended early: a resource whose failed call was followed by a gap longer than any
# in-attempt wait (3 retries: <= 2 s each, or Retry-After 1 s): the step went back to the queue.
# By the number of consecutive failures before the gap (4: retries used up; fewer: the attempt
# ended early, e.g. on an open circuit breaker), and how long the resource then waited.
byres = collections.defaultdict(list)
for r in api:
    byres[(r["m"], r["res"])].append(r)
ended, gaps = collections.Counter(), []
for rs in byres.values():
    run = 0
    for a, b in zip(rs, rs[1:]):
        if a["out"] == "ok":
            run = 0
            continue
        run += 1
        g = b["t"] - (a["t"] + a.get("dt", 0))
        if g > 2.5:
            ended[run] += 1
            gaps.append(g)
            run = 0
gaps.sort()
if gaps:
    print(f"attempts ended then resumed after > 2.5 s: {len(gaps)} (by failures before: "
          f"{dict(sorted(ended.items()))}); waited median {statistics.median(gaps):.1f} s, "
          f"max {gaps[-1]:.1f} s")
