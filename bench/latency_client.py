#!/usr/bin/env python3
"""Submits erasures one at a time and waits for each to finish before the next (an idle system).

usage: latency_client.py API_URL KEY IDS_FILE COUNT [GAP_MS]

One keep-alive HTTP connection; after each POST it polls GET /v1/erasure-requests/{id} every 5 ms
until the request is completed or failed, then idles GAP_MS (default 50) before the next one.
Prints one line per request: "<id> <state> <client-side seconds>". The figures come from the
database (received_at, completed_at), not from this client's clock.
"""
import http.client
import json
import sys
import time
from urllib.parse import urlparse

api, key, ids_file, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
gap = float(sys.argv[5]) / 1000 if len(sys.argv) > 5 else 0.05
url = urlparse(api)
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
ids = [line.strip() for line in open(ids_file) if line.strip()][:count]

for target in ids:
    started = time.monotonic()
    conn.request("POST", "/v1/erasure-requests",
                 json.dumps({"scope": "account", "target_id": target}), headers)
    reply = conn.getresponse()
    body = json.loads(reply.read())
    if reply.status != 202:
        sys.exit(f"POST answered {reply.status}: {body}")
    rid, state = body["id"], body["state"]
    deadline = started + 30
    while state not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.005)
        conn.request("GET", f"/v1/erasure-requests/{rid}", headers=headers)
        reply = conn.getresponse()
        state = json.loads(reply.read())["state"]
    print(rid, state, f"{time.monotonic() - started:.4f}", flush=True)
    time.sleep(gap)
