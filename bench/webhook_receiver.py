"""A fast webhook receiver for bench/webhooks.sh: asyncio, HTTP/1.1 keep-alive, answers 204.

    python3 webhook_receiver.py PORT

For every POST it records the lag from the event's time (the body's `timestamp`, when its audit
entry was written, just before its commit) to its arrival. `GET /stats` answers
`count p50_ms p99_ms max_ms` of what arrived since the last `GET /reset`. Standard library only.
"""
import asyncio
import json
import sys
import time
from datetime import datetime

lags = []


def stats():
    if not lags:
        return "0 0 0 0"
    s = sorted(lags)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]
    return f"{len(s)} {pick(0.5):.1f} {pick(0.99):.1f} {s[-1]:.1f}"


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            now = time.time()
            if method == "POST":
                ts = json.loads(body)["timestamp"]
                at = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
                lags.append((now - at) * 1000.0)
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                if path == "/reset":
                    lags.clear()
                text = stats().encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionResetError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()


asyncio.run(main())
