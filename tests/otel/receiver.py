"""A minimal OTLP/HTTP receiver for the tests: decodes what arrives with `opentelemetry-proto`
(PyPI) and writes each span as one JSON line.

    python receiver.py SPANS.jsonl

Listens on 127.0.0.1 on a free port and prints `listening <port>` once ready. Accepts
`POST /v1/traces` with an `application/x-protobuf` body (gzip or not), answers an empty
ExportTraceServiceResponse, and appends to SPANS.jsonl one line per span:

    {"trace_id", "span_id", "parent_span_id", "name", "kind", "attributes": {k: v},
     "events": [{"name", "attributes"}], "links": [{"trace_id", "span_id"}],
     "status": {"code", "message"}, "resource": {k: v}, "scope": name}

Anything else is refused (404, or 400 for a body that does not decode). tests/it/otel.rs reads
the file; it runs until killed.
"""
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

OUT = sys.argv[1]
LOCK = threading.Lock()
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS = {0: "unset", 1: "ok", 2: "error"}


def value(v):
    """An AnyValue as plain JSON."""
    d = MessageToDict(v)
    if not d:
        return None
    (kind, inner), = d.items()
    if kind == "intValue":
        return int(inner)
    if kind == "arrayValue":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlistValue":
        return attributes(v.kvlist_value.values)
    return inner


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def span_json(span, resource, scope):
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "name": span.name,
        "kind": KINDS.get(span.kind, str(span.kind)),
        "start_unix_nano": span.start_time_unix_nano,
        "end_unix_nano": span.end_time_unix_nano,
        "attributes": attributes(span.attributes),
        "events": [{"name": e.name, "attributes": attributes(e.attributes)} for e in span.events],
        "links": [{"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex(),
                   "attributes": attributes(l.attributes)} for l in span.links],
        "status": {"code": STATUS.get(span.status.code, str(span.status.code)),
                   "message": span.status.message},
        "resource": resource,
        "scope": scope,
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, code, body=b"", content_type="application/x-protobuf"):
        self.send_response(code)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 - the http.server name
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/traces":
            return self.answer(404, b"not found", "text/plain")
        if self.headers.get("content-type", "").split(";")[0].strip() != "application/x-protobuf":
            return self.answer(415, b"only application/x-protobuf", "text/plain")
        try:
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest.FromString(body)
        except Exception as e:  # noqa: BLE001 - any undecodable body is refused
            return self.answer(400, f"undecodable: {type(e).__name__}".encode(), "text/plain")
        lines = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    lines.append(json.dumps(span_json(span, resource, ss.scope.name)))
        with LOCK, open(OUT, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        self.answer(200, ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
