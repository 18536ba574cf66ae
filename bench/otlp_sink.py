"""A do-nothing OTLP/HTTP receiver for benchmarks: answers every POST /v1/traces with an empty
ExportTraceServiceResponse (an empty protobuf message is zero bytes) without decoding it, and
counts what it got.

    python3 bench/otlp_sink.py COUNTS_FILE

Prints `listening <port>` once ready; on SIGTERM writes `<requests> <bytes>` to COUNTS_FILE and
exits. Standard library only.
"""
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTS = [0, 0]
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - the http.server name
        n = int(self.headers.get("content-length", "0"))
        self.rfile.read(n)
        with LOCK:
            COUNTS[0] += 1
            COUNTS[1] += n
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        f.write(f"{COUNTS[0]} {COUNTS[1]}\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
