#!/usr/bin/env python3
"""An independent fake of the Oxlin (Linxo Connect) Accounts API v2.1, written from
/work/shared/UPSTREAM.md alone (not from crates/sim), for benchmarks against an aggregator the
service's authors did not write.

Standard library only (asyncio, HTTP/1.1 with keep-alive). One process, one thread.

    python3 fake_aggregator.py --port 0 --users 300 --connections 3 --accounts 3 \
        --fault-rate 0.35 --seed 1 --rps 200 --concurrency 16 --port-file PORT

Serves:
  POST /token                               client_credentials (client token), password (user token)
  GET  /v2.1/users/{id}, /v2.1/users/me     DELETE the same (204; cascade to everything below)
  GET  /v2.1/connections?user_id=&page=&limit=, /v2.1/connections (all), /v2.1/connections/{id}
  DELETE /v2.1/connections/{id}
  GET  /v2.1/accounts?connection_id=&page=&limit=, /v2.1/accounts (all), /v2.1/accounts/{id}
  DELETE /v2.1/accounts/{id}                (channel -> EMPTY when its last account goes; the
                                             connection goes when its last non-empty channel does)
  GET  /v2.1/transactions?account_id=       (none are seeded: empty pages)
  POST /v2.1/connections/{id}/synchronize?type=LIST_ACCOUNTS   (204; re-adds deleted accounts and
                                             emits LIST_ACCOUNTS_SUCCESS, then SYNC_SUCCESS)
  GET  /v2.1/events?since=&limit=           {"events": [...]}
  GET  /_fake/users                         the seeded user ids, one a line (not journaled)
  GET  /_fake/stats                         the journal's summary (JSON)
  GET  /_fake/journal                       every call, JSON Lines
  POST /_fake/faults?rate=F                 change the fault rate (0 stops faults)
  GET  /_fake/health

Limits, on /v2.1 calls (not on /token, which is another host upstream):
  * rate cap: every call that arrives counts in a sliding 1-s window; a call that finds
    `rps` calls already in the last second is answered 429 with Retry-After (it counts too: a
    call is a call).
  * concurrency cap: a call that arrives while `concurrency` calls are open (arrived, not yet
    answered) is answered 429 with Retry-After.
Faults, on every route, at `fault_rate`, decided by a hash of (seed, method, resource, n-th call
of that method on that resource), so a run is repeatable whatever the order of calls. A fault is
one of (shares of the fault rate): 503 with Retry-After 45 %, 500 20 %, 502 before acting 10 %,
502 after acting 10 % (the call took effect, its answer was lost: a DELETE then answers 404),
a slow 504 after `slow_secs` 10 %, a reset (connection closed, no answer, before acting) 5 %.

Not implemented from UPSTREAM.md: tokens never expire within a run (expires_in 3600, no 401 for
an expired token; a wrong or missing one gets 401); no synchronisation is ever RUNNING, so no 409
on a DELETE; LIST_ACCOUNTS re-adds at once (no asynchronous job, no type ALL that follows); no
transactions are seeded; a password grant takes the user's e-mail and any password; 403 only for
/users/me with a client token; the v3 API. The caps do not apply to /token (another host).

Journal: each call's arrival and answer time, method, route template, resource, status and
outcome (ok, fault kind, rate, concurrency). "Too early": for every answer with Retry-After, the
next call on the same resource (the path with its id; a listing with its filter, any page) that
arrived before the Retry-After had passed since the answer was written. Also, client-wide, calls
that arrived within Retry-After of a cap refusal (informational: a cap refusal is about the
client, not a resource, and the service holds only the resource).
"""

import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import secrets
import sys
import time
from urllib.parse import parse_qsl, urlsplit

API = "/v2.1"


def now():
    return time.monotonic()


class Error(Exception):
    def __init__(self, status, code, text, headers=None):
        self.status, self.code, self.text, self.headers = status, code, text, headers or {}


class Store:
    """The aggregator's data: users, connections (with channels), accounts, events."""

    def __init__(self, users, conns, chans, accounts, seed):
        rng = random.Random(seed)
        self.next_id = 1000
        self.users, self.connections, self.accounts = {}, {}, {}
        self.deleted_accounts = {}  # id -> account, for LIST_ACCOUNTS re-adds
        self.events, self.next_event = [], 1
        t0 = int(time.time()) - 86400 * 30
        for u in range(users):
            uid = self.new_id()
            self.users[uid] = {
                "id": uid, "email": f"user{uid}@example.test", "first_name": "Fake",
                "last_name": f"User{u}", "creation_date": t0 + u, "gender": rng.choice(["M", "F"]),
                "email_verified": True, "birthdate": "1980-01-01",
                "address": {"postcode": f"{75000 + u % 20:05d}"},
            }
            for c in range(conns):
                cid = self.new_id()
                channels = []
                for h in range(chans):
                    chid = self.new_id()
                    channels.append({"id": chid, "mode": "REDIRECT", "status": "SUCCESS",
                                     "expires": t0 + 86400 * 90, "last_success_date": t0,
                                     "last_end_date": t0})
                    for a in range(accounts):
                        aid = self.new_id()
                        self.accounts[aid] = {
                            "id": aid, "connection_id": cid, "name": f"Account {a}",
                            "reference": f"REF{aid}", "account_number": f"000{aid}",
                            "iban": f"FR76{int(aid):023d}", "balance": rng.randint(0, 10**6) / 100,
                            "currency": "EUR", "balance_date": t0, "type": "CHECKINGS",
                            "status": "ACTIVE", "last_channel_definition_id": chid,
                        }
                self.connections[cid] = {
                    "id": cid, "user_id": uid, "provider_id": "42", "name": f"Bank {c}",
                    "status": "SUCCESS", "creation_date": t0, "auto_sync": True,
                    "channels": channels,
                }

    def new_id(self):
        self.next_id += 1
        return str(self.next_id)

    def event(self, kind, connection, extra=None):
        ev = {"id": str(self.next_event), "event_type": kind, "resource_type": "CONNECTION",
              "channel_definition_id": connection["channels"][0]["id"] if connection["channels"] else None,
              "creation_date": int(time.time()), "resource": connection}
        if extra:
            ev.update(extra)
        self.next_event += 1
        self.events.append(ev)

    def delete_user(self, uid):
        for cid in [c for c, v in self.connections.items() if v["user_id"] == uid]:
            self.delete_connection(cid)
        del self.users[uid]

    def delete_connection(self, cid):
        for aid in [a for a, v in self.accounts.items() if v["connection_id"] == cid]:
            del self.accounts[aid]
        self.deleted_accounts = {a: v for a, v in self.deleted_accounts.items()
                                 if v["connection_id"] != cid}
        del self.connections[cid]

    def delete_account(self, aid):
        acc = self.accounts.pop(aid)
        self.deleted_accounts[aid] = acc
        conn = self.connections.get(acc["connection_id"])
        if conn is None:
            return
        chid = acc["last_channel_definition_id"]
        if not any(a["last_channel_definition_id"] == chid and a["connection_id"] == conn["id"]
                   for a in self.accounts.values()):
            for ch in conn["channels"]:
                if ch["id"] == chid:
                    ch["status"] = "EMPTY"
            if all(ch["status"] == "EMPTY" for ch in conn["channels"]):
                self.delete_connection(conn["id"])

    def list_accounts_sync(self, cid):
        conn = self.connections[cid]
        listed = []
        for aid, acc in list(self.deleted_accounts.items()):
            if acc["connection_id"] == cid:
                self.accounts[aid] = acc
                del self.deleted_accounts[aid]
                listed.append(dict(acc, status="NEW"))
        listed += [dict(a, status="PRESENT") for a in self.accounts.values()
                   if a["connection_id"] == cid and a["id"] not in {x["id"] for x in listed}]
        for ch in conn["channels"]:
            if any(a["last_channel_definition_id"] == ch["id"] for a in listed):
                ch["status"] = "SUCCESS"
        self.event("LIST_ACCOUNTS_SUCCESS", conn, {"list_accounts_success": {"accounts": listed}})
        self.event("SYNC_SUCCESS", conn)


def page_of(items, q):
    try:
        page = max(1, int(q.get("page", "1")))
        limit = max(1, min(500, int(q.get("limit", "100"))))
    except ValueError:
        raise Error(400, "invalid_request", "page and limit must be integers")
    return items[(page - 1) * limit: page * limit]


class Fake:
    def __init__(self, args):
        self.a = args
        self.store = Store(args.users, args.connections, args.channels, args.accounts, args.seed)
        self.user_ids = list(self.store.users)
        self.client_tokens, self.user_tokens = set(), {}
        self.fault_rate = args.fault_rate
        self.window = collections.deque()  # arrival times of /v2.1 calls, last second
        self.open = 0  # /v2.1 calls arrived, not yet answered
        self.peak_open = 0
        self.busiest = 0  # most /v2.1 calls in any sliding 1-s window (every call arriving)
        self.busiest_at = None
        self.nth = collections.Counter()  # (method, resource) -> calls so far, for fault draws
        self.holds = {}  # resource -> (answered_at + retry_after, kind, answered_at)
        self.client_hold_until = 0.0  # latest cap refusal + its Retry-After
        self.journal = []
        self.too_early = collections.Counter()  # by the refusal's kind
        self.too_early_margins = []
        self.too_early_client = 0
        self.t0 = now()
        self.wall0 = time.time()

    # -- the limits and faults -------------------------------------------------------------

    def fault_for(self, method, resource):
        if self.fault_rate <= 0:
            return None
        n = self.nth[(method, resource)]
        self.nth[(method, resource)] += 1
        h = hashlib.blake2b(f"{self.a.seed}|{method}|{resource}|{n}".encode(), digest_size=8)
        x = int.from_bytes(h.digest(), "big") / 2**64
        if x >= self.fault_rate:
            return None
        y = x / self.fault_rate  # uniform in [0, 1) given a fault
        for share, kind in ((0.45, "503"), (0.20, "500"), (0.10, "502"), (0.10, "502-after"),
                            (0.10, "slow-504"), (0.05, "reset")):
            if y < share:
                return kind
            y -= share
        return "reset"

    # -- HTTP ---------------------------------------------------------------------------------

    async def serve(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    method, target, _ = line.decode("latin-1").split(" ", 2)
                except ValueError:
                    return
                headers = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = b""
                n = int(headers.get("content-length", "0") or 0)
                if n:
                    body = await reader.readexactly(n)
                keep = await self.handle(method, target, headers, body, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            try:
                writer.close()
            except Exception:
                pass

    def write(self, writer, status, body=None, headers=None):
        reason = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
                  403: "Forbidden", 404: "Not Found", 409: "Conflict", 429: "Too Many Requests",
                  500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                  504: "Gateway Timeout"}.get(status, "Status")
        raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = [f"HTTP/1.1 {status} {reason}", f"content-length: {len(raw)}"]
        if body is not None:
            head.append("content-type: application/json")
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + raw)

    async def handle(self, method, target, headers, body, writer):
        url = urlsplit(target)
        path, q = url.path, dict(parse_qsl(url.query))
        if path.startswith("/_fake/"):
            return await self.control(method, path, q, writer)
        arrived = now()
        api = path.startswith(API + "/")
        route, resource = self.route_of(method, path, q)
        rec = {"t": round(arrived - self.t0, 4), "m": method, "route": route, "res": resource}
        # Too early? The next call on a resource after an answer with Retry-After.
        hold = self.holds.pop(resource, None)
        if hold is not None and arrived < hold[0]:
            self.too_early[hold[1]] += 1
            self.too_early_margins.append(round(hold[0] - arrived, 4))
            rec["too_early"] = round(hold[0] - arrived, 4)
        if api and arrived < self.client_hold_until:
            self.too_early_client += 1
        refusal = None
        if api:
            w = self.window
            while w and w[0] <= arrived - 1.0:
                w.popleft()
            w.append(arrived)
            if len(w) > self.busiest:
                self.busiest, self.busiest_at = len(w), round(arrived - self.t0, 3)
            self.open += 1
            self.peak_open = max(self.peak_open, self.open)
            if len(w) > self.a.rps:
                refusal = "rate"
            elif self.open > self.a.concurrency:
                refusal = "concurrency"
        try:
            if refusal:
                rec["out"] = refusal
                return self.answer(writer, rec, 429, {"error": "rate_limit_exceeded",
                                   "error_description": f"{refusal} limit exceeded"},
                                   {"retry-after": str(self.a.retry_after)}, cap=True)
            fault = self.fault_for(method, resource)
            if fault in ("503", "500", "502"):
                rec["out"] = fault
                hdr = {"retry-after": str(self.a.retry_after)} if fault == "503" else None
                return self.answer(writer, rec, int(fault), {"error": "server_error",
                                   "error_description": "transient fault (injected)"}, hdr)
            if fault == "slow-504":
                rec["out"] = fault
                await asyncio.sleep(self.a.slow_secs)
                return self.answer(writer, rec, 504, {"error": "gateway_timeout",
                                   "error_description": "transient fault (injected, slow)"})
            if fault == "reset":
                rec["out"] = fault
                rec["status"], rec["dt"] = None, round(now() - self.t0 - rec["t"], 4)
                self.close_call(rec, api)
                self.journal.append(rec)
                try:
                    writer.transport.abort()
                except Exception:
                    pass
                return False
            if self.a.latency_secs > 0:
                await asyncio.sleep(self.a.latency_secs)
            try:
                status, out, hdr = self.dispatch(method, path, q, headers, body)
            except Error as e:
                status, out, hdr = e.status, {"error": e.code, "error_description": e.text}, e.headers
            if fault == "502-after":
                rec["out"] = fault
                rec["acted"] = status
                return self.answer(writer, rec, 502, {"error": "bad_gateway",
                                   "error_description": "transient fault (injected, after acting)"})
            rec["out"] = "ok"
            return self.answer(writer, rec, status, out, hdr)
        finally:
            if api and "closed" not in rec:
                self.close_call(rec, api)

    def close_call(self, rec, api):
        if api and "closed" not in rec:
            rec["closed"] = True
            self.open -= 1

    def answer(self, writer, rec, status, body, headers=None, cap=False):
        # The call stops being open before its answer is written (no await in between): the
        # client cannot have read this answer and sent its next call before the count went down.
        self.close_call(rec, rec["route"].startswith(API))
        done = now()
        rec["status"], rec["dt"] = status, round(done - self.t0 - rec["t"], 4)
        ra = (headers or {}).get("retry-after")
        if ra is not None:
            until = done + float(ra)
            kind = "cap-" + rec["out"] if cap else "fault-" + str(status)
            self.holds[rec["res"]] = (until, kind, done)
            if cap:
                self.client_hold_until = max(self.client_hold_until, until)
        self.journal.append(rec)
        self.write(writer, status, body, headers)
        return True

    def route_of(self, method, path, q):
        """The route template and the resource (path with ids; a listing with its filter)."""
        if not path.startswith(API + "/"):
            return path, path
        parts = path[len(API):].strip("/").split("/")
        if len(parts) == 1:
            filt = next((f"{k}={q[k]}" for k in ("user_id", "connection_id", "account_id")
                         if k in q), "")
            route = f"{API}/{parts[0]}" + (f"?{filt.split('=')[0]}=" if filt else "")
            return route, f"{API}/{parts[0]}" + (f"?{filt}" if filt else "")
        tmpl = "/".join([parts[0], "{id}" if parts[1] != "me" else "me"] + parts[2:])
        return f"{API}/{tmpl}", path

    # -- the API --------------------------------------------------------------------------------

    def bearer(self, headers):
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise Error(401, "invalid_token", "missing bearer token")
        tok = auth[7:].strip()
        if tok in self.client_tokens:
            return None
        if tok in self.user_tokens:
            return self.user_tokens[tok]
        raise Error(401, "invalid_token", "unknown or expired token")

    def dispatch(self, method, path, q, headers, body):
        s = self.store
        if path == "/token" and method == "POST":
            try:
                req = json.loads(body or b"{}")
            except ValueError:
                raise Error(400, "invalid_request", "body must be JSON")
            if req.get("client_id") != self.a.client_id or req.get("client_secret") != self.a.client_secret:
                raise Error(401, "invalid_client", "unknown client")
            tok = secrets.token_hex(16)
            if req.get("grant_type") == "client_credentials":
                self.client_tokens.add(tok)
            elif req.get("grant_type") == "password":
                uid = next((u for u, v in s.users.items() if v["email"] == req.get("username")), None)
                if uid is None:
                    raise Error(401, "invalid_grant", "bad credentials")
                self.user_tokens[tok] = uid
            else:
                raise Error(400, "unsupported_grant_type", "grant_type")
            return 200, {"access_token": tok, "token_type": "Bearer", "expires_in": 3600}, None
        if not path.startswith(API + "/"):
            raise Error(404, "not_found", "no such route")
        me = self.bearer(headers)
        parts = path[len(API):].strip("/").split("/")
        kind = parts[0]
        if kind == "users" and len(parts) == 2:
            uid = parts[1]
            if uid == "me":
                if me is None:
                    raise Error(403, "insufficient_scope", "/users/me needs a user token")
                uid = me
            if uid not in s.users:
                raise Error(404, "not_found", "no such user")
            if method == "GET":
                return 200, s.users[uid], None
            if method == "DELETE":
                s.delete_user(uid)
                return 204, None, None
        if kind == "connections" and len(parts) == 1 and method == "GET":
            items = [c for c in s.connections.values()
                     if "user_id" not in q or c["user_id"] == q["user_id"]]
            return 200, page_of(items, q), None
        if kind == "connections" and len(parts) >= 2:
            cid = parts[1]
            if cid not in s.connections:
                raise Error(404, "not_found", "no such connection")
            if len(parts) == 3 and parts[2] == "synchronize" and method == "POST":
                if q.get("type", "ALL") == "LIST_ACCOUNTS":
                    s.list_accounts_sync(cid)
                return 204, None, None
            if len(parts) == 2 and method == "GET":
                return 200, s.connections[cid], None
            if len(parts) == 2 and method == "DELETE":
                s.delete_connection(cid)
                return 204, None, None
        if kind == "accounts" and len(parts) == 1 and method == "GET":
            items = [a for a in s.accounts.values()
                     if "connection_id" not in q or a["connection_id"] == q["connection_id"]]
            return 200, page_of(items, q), None
        if kind == "accounts" and len(parts) == 2:
            aid = parts[1]
            if aid not in s.accounts:
                raise Error(404, "not_found", "no such account")
            if method == "GET":
                return 200, s.accounts[aid], None
            if method == "DELETE":
                s.delete_account(aid)
                return 204, None, None
        if kind == "transactions" and len(parts) == 1 and method == "GET":
            return 200, page_of([], q), None
        if kind == "events" and len(parts) == 1 and method == "GET":
            since = int(q.get("since", "0") or 0)
            limit = max(1, min(100, int(q.get("limit", "100"))))
            return 200, {"events": [e for e in s.events if int(e["id"]) > since][:limit]}, None
        raise Error(404, "not_found", "no such route")

    # -- control --------------------------------------------------------------------------------

    async def control(self, method, path, q, writer):
        if path == "/_fake/health":
            self.write(writer, 200, {"ok": True})
        elif path == "/_fake/users":
            raw = ("\n".join(self.user_ids) + "\n").encode()
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {len(raw)}\r\ncontent-type: text/plain\r\n\r\n".encode() + raw)
        elif path == "/_fake/faults" and method == "POST":
            self.fault_rate = float(q.get("rate", "0"))
            self.write(writer, 200, {"fault_rate": self.fault_rate})
        elif path == "/_fake/stats":
            self.write(writer, 200, self.stats())
        elif path == "/_fake/journal":
            raw = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in self.journal).encode()
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {len(raw)}\r\ncontent-type: application/x-ndjson\r\n\r\n".encode() + raw)
        else:
            self.write(writer, 404, {"error": "not_found", "error_description": path})
        return True

    def stats(self):
        api = [r for r in self.journal if r["route"].startswith(API)]
        by_status = collections.Counter(str(r["status"]) for r in api)
        by_out = collections.Counter(r["out"] for r in api)
        by_route = collections.Counter(f'{r["m"]} {r["route"]}' for r in api)
        events = sum(1 for r in api if r["route"] == API + "/events")
        ts = [r["t"] for r in api if r["route"] != API + "/events"]
        margins = sorted(self.too_early_margins)
        return {
            "calls": len(api),
            "erasure_calls": len(api) - events,
            "events_calls": events,
            "token_calls": sum(1 for r in self.journal if r["route"] == "/token"),
            "by_status": dict(by_status),
            "by_outcome": dict(by_out),
            "by_route": dict(by_route),
            "faults": sum(v for k, v in by_out.items() if k not in ("ok", "rate", "concurrency")),
            "refused_rate": by_out.get("rate", 0),
            "refused_concurrency": by_out.get("concurrency", 0),
            "retry_after_answers": sum(1 for r in api if r["out"] in ("503", "rate", "concurrency")),
            "too_early": sum(self.too_early.values()),
            "too_early_by_kind": dict(self.too_early),
            "too_early_max_margin_s": margins[-1] if margins else 0,
            "calls_within_cap_refusal_retry_after_clientwide": self.too_early_client,
            "peak_concurrency": self.peak_open,
            "busiest_1s": self.busiest,
            "busiest_1s_at": self.busiest_at,
            "first_call_t": min(ts) if ts else None,
            "last_call_t": max(ts) if ts else None,
            "limits": {"rps": self.a.rps, "concurrency": self.a.concurrency,
                       "retry_after": self.a.retry_after, "fault_rate": self.fault_rate},
            "users_left": len(self.store.users),
        }


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", help="write the port bound here once listening")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--connections", type=int, default=3, help="connections per user")
    p.add_argument("--channels", type=int, default=1, help="channels per connection")
    p.add_argument("--accounts", type=int, default=3, help="accounts per channel")
    p.add_argument("--fault-rate", type=float, default=0.0, help="0..1")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rps", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--retry-after", type=int, default=1)
    p.add_argument("--slow-secs", type=float, default=1.5)
    p.add_argument("--latency-secs", type=float, default=0.0, help="added to every answer")
    p.add_argument("--client-id", default=os.environ.get("FAKE_CLIENT_ID", "erasure-sim"))
    p.add_argument("--client-secret", default=os.environ.get("FAKE_CLIENT_SECRET", "sim-secret"))
    a = p.parse_args()
    fake = Fake(a)
    server = await asyncio.start_server(fake.serve, a.host, a.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(a.port_file + ".tmp", a.port_file)
    print(f"fake aggregator on http://{a.host}:{port} ({a.users} users)", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
