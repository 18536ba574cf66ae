#!/usr/bin/env python3
"""Checks that the fake's detectors fire: a greedy client (40 threads, no pacing) must be refused
by both caps and seen above them, and a client that calls again at once after a 503 with
`Retry-After` must be counted too early. (The service never trips them: a detector that cannot
fire would make its zeros meaningless.) Exit status 0 when every check holds.

    python3 bench/fake_aggregator/selftest.py
"""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def start(*args):
    port_file = tempfile.mktemp()
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_aggregator.py"), "--port", "0",
                          "--port-file", port_file, "--users", "20", *args],
                         stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(port_file):
            break
        time.sleep(0.05)
    return p, int(open(port_file).read())


def call(port, method, path, token=None, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    c.request(method, path, body=json.dumps(body) if body else None, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


def token(port):
    _, _, data = call(port, "POST", "/token", body={
        "provider": "linxoConnect", "client_id": "erasure-sim", "client_secret": "sim-secret",
        "grant_type": "client_credentials", "scope": "openid"})
    return json.loads(data)["access_token"]


failures = []


def check(what, ok):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


# 1. A greedy client: both caps refuse it, and the fake sees it above them.
p, port = start("--slow-secs", "0.2")
try:
    tok = token(port)  # with faults off: the token endpoint faults too
    call(port, "POST", "/_fake/faults?rate=0.3")
    users = call(port, "GET", "/_fake/users")[2].decode().split()
    stop = time.monotonic() + 1.5

    def greedy(i):
        while time.monotonic() < stop:
            try:
                call(port, "GET", f"/v2.1/users/{users[i % len(users)]}", tok)
            except Exception:
                pass

    threads = [threading.Thread(target=greedy, args=(i,)) for i in range(40)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    s = json.loads(call(port, "GET", "/_fake/stats")[2])
    print(json.dumps({k: s[k] for k in ("calls", "refused_rate", "refused_concurrency",
                                        "peak_concurrency", "busiest_1s", "too_early")}))
    check("the rate cap refuses a greedy client", s["refused_rate"] > 0)
    check("its busiest second is seen above 200", s["busiest_1s"] > 200)
    check("it is seen calling before Retry-After", s["too_early"] > 0)
finally:
    p.terminate()

# 1b. Slow answers and no rate cap to speak of: the concurrency cap refuses the greedy client.
p, port = start("--rps", "1000000", "--latency-secs", "0.2")
try:
    tok = token(port)
    users = call(port, "GET", "/_fake/users")[2].decode().split()
    stop = time.monotonic() + 1.0
    threads = [threading.Thread(target=greedy, args=(i,)) for i in range(40)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    s = json.loads(call(port, "GET", "/_fake/stats")[2])
    print(json.dumps({k: s[k] for k in ("calls", "refused_rate", "refused_concurrency",
                                        "peak_concurrency", "busiest_1s")}))
    check("the concurrency cap refuses it", s["refused_concurrency"] > 0)
    check("its peak of open calls is seen above 16", s["peak_concurrency"] > 16)
finally:
    p.terminate()

# 2. Every call faults: a call again at once after a 503 is too early; one after 1 s is not.
p, port = start("--fault-rate", "1.0")
try:
    # The token endpoint faults too: take one with faults off, then turn them on.
    call(port, "POST", "/_fake/faults?rate=0")
    tok = token(port)
    call(port, "POST", "/_fake/faults?rate=1.0")
    users = call(port, "GET", "/_fake/users")[2].decode().split()
    early = 0
    def tried(*a):
        try:
            return call(*a)
        except (http.client.HTTPException, OSError):  # an injected reset
            return None, {}, b""

    for u in users:
        status, headers, _ = tried(port, "GET", f"/v2.1/users/{u}", tok)
        if status == 503 and headers.get("retry-after"):
            tried(port, "GET", f"/v2.1/users/{u}", tok)  # at once: too early
            early += 1
    s = json.loads(call(port, "GET", "/_fake/stats")[2])
    print(json.dumps({k: s[k] for k in ("calls", "too_early", "too_early_by_kind", "by_outcome")}))
    check(f"{early} calls sent at once after a 503 with Retry-After are counted too early",
          early > 0 and s["too_early"] >= early)
finally:
    p.terminate()

sys.exit(1 if failures else 0)
