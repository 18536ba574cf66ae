#!/usr/bin/env python3
"""The verdict of a chaos run (bench/chaos.sh): checks the database, the simulator's call journal
and the audit log after everything settled, prints each check and the figures, and exits 1 when
any check fails.

Checks: every accepted request completed or failed with a reason (none lost, none still open);
exactly one `completed` audit entry per completed request (none completed twice); each target
deleted upstream; the audit export verifies offline against the signed checkpoint, with one
completion per request; no upstream call earlier than a `Retry-After` given for its resource
(its path, and a listing's filter); the upstream
rate (any one-second window) and concurrency never above the caps (the caps of all processes
together). shared-cap: no second over the rate + 1, at least 85 % of it sustained, and the killed
worker's share taken by the others within one lease.
"""
import argparse
import json
import subprocess
import sys
import urllib.request
from collections import defaultdict


GRACE_MS = 25
QUEUE_MS = 200


def psql(db, sql):
    out = subprocess.run(["psql", "-XAtq", "-d", db, "-c", sql], check=True,
                         capture_output=True, text=True).stdout
    return [line.split("|") for line in out.splitlines() if line]


def get(url, key=None):
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


def resource(c):
    """What the service holds after a Retry-After: the path, and a listing's filter (the query
    without its page), so the account listings of two connections are two resources."""
    filt = [p for p in (c.get("query") or "").split("&")
            if p and not p.startswith("page=") and not p.startswith("limit=")]
    return c["path"] + ("?" + "&".join(filt) if filt else "")


def busiest_window(calls):
    """The most calls in any one-second window, and how many of them each caller made."""
    ordered = sorted(calls, key=lambda c: c["started_at_ms"])
    starts = [c["started_at_ms"] for c in ordered]
    most, busiest, j = 0, (0, 0), 0
    for i, t in enumerate(starts):
        while starts[j] <= t - 1000:
            j += 1
        if i - j + 1 > most:
            most, busiest = i - j + 1, (j, i + 1)
    by_client = defaultdict(int)
    for c in ordered[busiest[0]:busiest[1]]:
        by_client[c.get("client")] += 1
    return most, dict(by_client)


def main():
    p = argparse.ArgumentParser()
    for name in ["scenario", "db", "sim", "api", "auditor-key", "public-key", "erasure-bin",
                 "accounts", "out"]:
        p.add_argument("--" + name, required=True)
    p.add_argument("--accepted", type=int, required=True)
    p.add_argument("--max-rps", type=float, required=True)
    p.add_argument("--max-concurrency", type=int, required=True)
    p.add_argument("--kills", type=int, default=0)
    p.add_argument("--timeout-secs", type=float, required=True)
    p.add_argument("--drain-secs", type=float, default=0)
    p.add_argument("--takeover-secs", type=float, help="shared-cap: kill -> share taken")
    p.add_argument("--kill-ms", type=float, help="shared-cap: when the worker was killed (unix ms)")
    p.add_argument("--lease-secs", type=float, help="shared-cap: the lease of a share")
    a = p.parse_args()
    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}")

    print(f"chaos scenario {a.scenario}: verdict")
    states = dict((s, int(n)) for s, n in psql(a.db, "select state, count(*) from erasure_requests group by state"))
    total = sum(states.values())
    completed, failed = states.get("completed", 0), states.get("failed", 0)
    check("none lost", total == a.accepted, f"{total} requests in the database, {a.accepted} accepted")
    check("every request completed or failed", completed + failed == total, f"states {states}")
    no_reason = int(psql(a.db, "select count(*) from erasure_requests where state = 'failed' and coalesce(failure_reason, '') = ''")[0][0])
    check("every failure has a reason", no_reason == 0, f"{failed} failed, {no_reason} without a reason")
    if a.scenario in ("long-outage", "faults"):
        # Only a permanent answer fails a request; these scenarios inject transient ones only.
        check("no request failed on transient errors", failed == 0, f"{failed} failed")
    twice = psql(a.db, "select count(*) from (select request_id from audit_entries where event = 'completed' group by request_id having count(*) > 1) t")[0][0]
    missing = psql(a.db, "select count(*) from erasure_requests r where state = 'completed' and not exists (select 1 from audit_entries e where e.request_id = r.id and e.event = 'completed')")[0][0]
    check("exactly one completion per completed request", twice == "0" and missing == "0",
          f"{twice} completed twice, {missing} without a completion entry")

    stats = json.loads(get(a.sim + "/_sim/stats"))
    seeded = sum(1 for line in open(a.accounts) if line.strip())
    check("each target deleted upstream", stats["accounts"] == seeded - completed,
          f"{stats['accounts']} accounts left upstream of {seeded} seeded, {completed} erasures completed")

    export = get(f"{a.api}/v1/audit/export?format=jsonl", a.auditor_key)
    path = f"{a.out}/audit-export.jsonl"
    with open(path, "wb") as f:
        f.write(export)
    verify = subprocess.run([a.erasure_bin, "audit", "verify", "--export", path, "--public-key",
                             open(a.public_key).read().strip()], capture_output=True, text=True)
    check("audit export verifies against the signed checkpoint", verify.returncode == 0,
          (verify.stdout + verify.stderr).strip().splitlines()[-1] if (verify.stdout + verify.stderr).strip() else "")
    completions = defaultdict(int)
    entries = 0
    for line in export.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        leaf = item.get("leaf")
        if isinstance(leaf, str):
            try:
                leaf = json.loads(leaf)
            except ValueError:
                continue
        if isinstance(leaf, dict):
            entries += 1
            if leaf.get("event") == "completed":
                completions[leaf.get("request_id")] += 1
    check("one completion per request in the export",
          len(completions) == completed and all(n == 1 for n in completions.values()),
          f"{len(completions)} requests with a completion among {entries} entries")

    calls = json.loads(get(a.sim + "/_sim/calls?limit=2000000"))
    if isinstance(calls, dict):
        calls = calls.get("calls", [])
    api_calls = [c for c in calls if c["route"].startswith("/v2.1")]
    by_resource = defaultdict(list)
    for c in api_calls:
        # Retry-After binds the caller it was given to: one process (its User-Agent has its pid).
        # The service holds the resource (every method) until then.
        by_resource[(c.get("client"), resource(c))].append(c)
    early = defaultdict(int)
    examples = []
    followed = 0  # answers with a Retry-After that a later call to their resource was held to
    for seq in by_resource.values():
        seq.sort(key=lambda c: c["started_at_ms"])
        holds = []  # [answer sent, hold ends, a later call was held to it] of each so far
        for c in seq:
            t = c["started_at_ms"]
            # Early: sent after an answer with a Retry-After reached the caller (GRACE: the
            # answer's way back; a call sent before it could not know of it, as reads of one
            # path may overlap) and before the time that answer asked for.
            hit = next(((sent, until) for sent, until, _ in holds
                        if sent + GRACE_MS <= t and t + GRACE_MS < until), None)
            for hold in holds:
                if hold[0] + GRACE_MS <= t and not hold[2]:
                    hold[2] = True
                    followed += 1
            if hit:
                early[c["route"]] += 1
                if len(examples) < 3:
                    examples.append(f"{c['method']} {c['route']} {t - hit[0]:.0f} ms after an answer with Retry-After {(hit[1] - hit[0]) / 1000:g}")
            if c.get("retry_after_secs"):
                holds.append([c["ended_at_ms"], c["ended_at_ms"] + c["retry_after_secs"] * 1000, False])
    told = sum(1 for c in api_calls if c.get("retry_after_secs"))
    # Held to something: when answers carried Retry-After, later calls to their resources came.
    check("no call earlier than its Retry-After", not early and (followed > 0 or not told),
          f"{told} answers carried Retry-After, {followed} of them followed by a call to their "
          f"resource, {sum(early.values())} calls came early {dict(early)} {examples}")

    # A release before the callers' User-Agent named its process (the upgrade scenario's old
    # processes) is reported, not held to this release's check.
    older = [c for c in api_calls if not c.get("client")]
    checked = [c for c in api_calls if c.get("client")] if older else api_calls
    max_window, by_client = busiest_window(checked)
    if older:
        print(f"  [INFO] the previous release's processes: {len(older)} calls, max "
              f"{busiest_window(older)[0]} in any 1 s window; all processes together: max "
              f"{busiest_window(api_calls)[0]}")
    # At most `rate` calls in a one-second window, all processes together, plus one at its edge
    # (shared-cap holds to that; the others allow one more).
    rate_ok = max_window <= a.max_rps + (1 if a.scenario == "shared-cap" else 2)
    check("upstream rate within the cap" + (" (this release's processes)" if older else ""), rate_ok,
          f"max {max_window} calls in any 1 s window, cap {a.max_rps:g}/s in all"
          + ("" if rate_ok else f"; that window by caller: {by_client}"))
    # A call the client abandoned at its time-out (a hang) is no longer in flight for the client,
    # though the simulator holds it until it gives up too.
    # The simulator sees a call start after the client sent it (accept queue, worker scheduling),
    # so the client's abandon of a hanging call is taken QUEUE_MS before the simulator's start
    # plus the time-out.
    limit_ms = a.timeout_secs * 1000 - QUEUE_MS
    ends = [min(c["ended_at_ms"], c["started_at_ms"] + limit_ms) for c in api_calls]
    events = sorted([(c["started_at_ms"], 1) for c in api_calls] + [(e, -1) for e in ends],
                    key=lambda e: (e[0], e[1]))
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    check("upstream concurrency within the cap", peak <= a.max_concurrency,
          f"max {peak} calls in flight at the simulator, cap {a.max_concurrency} in all")

    shared = ""
    if a.scenario == "shared-cap":
        # Sustained: the calls started from 5 s after the first to 5 s before the last (the
        # processes joining, the queue draining), the kill and the dead share's lease included.
        starts = sorted(c["started_at_ms"] for c in api_calls)
        lo, hi = starts[0] + 5000, starts[-1] - 5000
        sustained = sum(1 for t in starts if lo <= t < hi) / ((hi - lo) / 1000)
        check("sustained rate at least 85 % of the cap", sustained >= 0.85 * a.max_rps,
              f"{sustained:.1f} calls/s ({sustained / a.max_rps * 100:.0f} %) over {(hi - lo) / 1000:.0f} s, cap {a.max_rps:g}/s")
        check("the killed worker's share taken within one lease",
              a.takeover_secs is not None and a.takeover_secs <= a.lease_secs + 0.5,
              f"{a.takeover_secs} s after kill -9 (lease {a.lease_secs:g} s)")
        after = [t for t in starts if a.kill_ms + a.takeover_secs * 1000 + 1000 <= t < hi]
        rate_after = len(after) / max((hi - a.kill_ms - a.takeover_secs * 1000 - 1000) / 1000, 1e-9)
        during = [t for t in starts if a.kill_ms <= t < a.kill_ms + a.takeover_secs * 1000]
        shared = (f", sustained {sustained:.1f}/s, {len(during) / max(a.takeover_secs, 1e-9):.1f}/s "
                  f"until the share was taken, {rate_after:.1f}/s after, takeover {a.takeover_secs} s")

    retries = psql(a.db, "select count(*) from audit_entries where event = 'attempt_failed'")[0][0]
    faults = defaultdict(int)
    for c in api_calls:
        if c.get("fault"):
            faults[c["fault"]] += 1
    print(f"  figures: requests {a.accepted}, completed {completed}, failed {failed}, "
          f"kills/restarts {a.kills}, upstream calls {len(api_calls)}, injected faults {dict(faults)}, "
          f"retried attempts {retries}, time to drain {a.drain_secs:.1f} s, "
          f"max observed rate {max_window}/s, max in flight {peak}{shared}")
    ok = all(results)
    print(f"  VERDICT {a.scenario}: {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
