#!/usr/bin/env python3
"""Steady load for bench/soak.sh: single POSTs of account erasures at RATE a second for DURATION
seconds, and one sample of the service every SAMPLE seconds.

usage: soak_load.py API_URL KEY IDS_FILE RATE DURATION SAMPLE DB SERVICE_PID SIM_PID

Each sample line (also written to stdout as it comes, so the curve can be watched):
  minute, POSTs sent in the interval, POST latency p50/p99 (client side), erasures completed in the
  interval, accepted -> completed p50/p99 of those (from the database: received_at, completed_at),
  requests still open, VmRSS of the service, the service's live heap (`erasure_heap_bytes` with
  kind="allocated" from /metrics: what its allocations hold, whatever the allocator keeps besides),
  VmRSS of the simulator, the machine's load average.
At the end: the figures of the first and last quarter and a verdict on whether memory and latency
stayed flat.
"""
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

api, key, ids_file = sys.argv[1], sys.argv[2], sys.argv[3]
rate, duration, sample = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
db, service_pid, sim_pid = sys.argv[7], int(sys.argv[8]), int(sys.argv[9])
url = urlparse(api)
ids = [line.strip() for line in open(ids_file) if line.strip()]
total = min(len(ids), int(rate * duration))
THREADS = 16

lock = threading.Lock()
latencies = []  # POST latencies of the current interval (seconds)
errors = []
next_index = 0
t0 = time.monotonic()


def worker():
    global next_index
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    while True:
        with lock:
            i = next_index
            next_index += 1
        if i >= total:
            return
        due = t0 + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        body = json.dumps({"scope": "account", "target_id": ids[i]})
        started = time.monotonic()
        try:
            conn.request("POST", "/v1/erasure-requests", body, headers)
            reply = conn.getresponse()
            reply.read()
            status = reply.status
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            status = f"{type(e).__name__}"
        took = time.monotonic() - started
        with lock:
            if status == 202:
                latencies.append(took)
            else:
                errors.append(status)


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def heap_mib():
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        for line in conn.getresponse().read().decode().splitlines():
            if line.startswith('erasure_heap_bytes{kind="allocated"}'):
                return int(line.split()[1]) / 2**20
    except (OSError, http.client.HTTPException, ValueError):
        pass
    finally:
        conn.close()
    return float("nan")


def q(sql):
    out = subprocess.run(["psql", "-XAtq", "-d", db, "-c", sql], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


threads = [threading.Thread(target=worker, daemon=True) for _ in range(THREADS)]
for t in threads:
    t.start()

print(f"# {total} erasures at {rate:g}/s for {duration:g} s, a sample every {sample:g} s", flush=True)
print(f"{'min':>5} {'posts':>6} {'post_p50':>9} {'post_p99':>9} {'done':>6} {'e2e_p50':>8} {'e2e_p99':>8}"
      f" {'open':>6} {'svc_MiB':>8} {'heap_MiB':>8} {'sim_MiB':>8} {'load1':>6}", flush=True)
rows = []
interval_start = q("select now()")
k = 0
while True:
    k += 1
    wake = t0 + k * sample
    time.sleep(max(0.0, wake - time.monotonic()))
    with lock:
        lat, latencies[:] = latencies[:], []
    now = q("select now()")
    done, e50, e99, still_open = q(
        "select count(*), coalesce(extract(epoch from percentile_cont(0.5) within group"
        " (order by completed_at - received_at)) * 1000, 'NaN'),"
        " coalesce(extract(epoch from percentile_cont(0.99) within group"
        " (order by completed_at - received_at)) * 1000, 'NaN'),"
        " (select count(*) from erasure_requests where state not in ('completed', 'failed', 'cancelled'))"
        f" from erasure_requests where completed_at > '{interval_start}' and completed_at <= '{now}'"
    ).split("|")
    interval_start = now
    row = dict(minute=k * sample / 60, posts=len(lat), p50=pct(lat, 0.5) * 1000, p99=pct(lat, 0.99) * 1000,
               done=int(done), e50=float(e50), e99=float(e99), open=int(still_open),
               svc=rss_mib(service_pid), heap=heap_mib(), sim=rss_mib(sim_pid), load=os.getloadavg()[0])
    rows.append(row)
    print(f"{row['minute']:5.1f} {row['posts']:6d} {row['p50']:9.1f} {row['p99']:9.1f} {row['done']:6d}"
          f" {row['e50']:8.1f} {row['e99']:8.1f} {row['open']:6d} {row['svc']:8.1f} {row['heap']:8.1f} {row['sim']:8.1f}"
          f" {row['load']:6.2f}", flush=True)
    if k * sample >= duration and (row["open"] == 0 or k * sample >= duration + 120):
        break

for t in threads:
    t.join()


def med(rs, field):
    return pct([r[field] for r in rs if r[field] == r[field]], 0.5)


quarter = max(1, len(rows) // 4)
first, last = rows[1:1 + quarter], rows[-quarter - 1:-1] or rows[-quarter:]
print(f"# errors: {len(errors)} {sorted(set(map(str, errors)))[:5]}")
for name, field, unit in [("service RSS", "svc", "MiB"), ("service live heap", "heap", "MiB"),
                          ("simulator RSS", "sim", "MiB"),
                          ("POST p50", "p50", "ms"), ("POST p99", "p99", "ms"),
                          ("accepted->completed p50", "e50", "ms"), ("accepted->completed p99", "e99", "ms"),
                          ("completed per interval", "done", ""), ("load average", "load", "")]:
    a, b = med(first, field), med(last, field)
    print(f"FIGURE soak {name:<28} first quarter {a:10.1f} {unit:<4} last quarter {b:10.1f} {unit}")
svc_growth = med(last, "svc") - med(first, "svc")
lat_ratio = med(last, "e50") / med(first, "e50")
flat = svc_growth <= max(10.0, 0.1 * med(first, "svc")) and lat_ratio <= 1.5 and not errors
print(f"FIGURE soak service RSS growth {svc_growth:+.1f} MiB; accepted->completed p50 last/first {lat_ratio:.2f}")
print(f"VERDICT soak: {'FLAT' if flat else 'NOT FLAT'} (RSS growth <= max(10 MiB, 10 %), p50 ratio <= 1.5, no errors)")
sys.exit(0 if flat else 1)
