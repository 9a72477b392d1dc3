"""An OTLP/HTTP receiver that accepts every export and counts its spans, in
its own process: the local sink of the split scenario's stacks that export
spans. It shares the machine's cores with the measured processes, so it
reports the CPU it used (a collector elsewhere would not take it from them).

    python -m benchmarks.otlp_sink   # "ready PORT"; at EOF on stdin, "received N spans, S s CPU"
"""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink(BaseHTTPRequestHandler):
    spans = 0
    # Keep-alive, as an OpenTelemetry collector does: a batch costs no new
    # connection (nor, here, a new thread).
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        length = int(self.headers.get("Content-Length") or 0)
        request = ExportTraceServiceRequest.FromString(self.rfile.read(length))
        Sink.spans += sum(
            len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ready {server.server_address[1]}", flush=True)
    sys.stdin.read()  # the benchmark closes our stdin (or exits) to stop us
    server.shutdown()
    cpu = time.process_time()
    print(f"received {Sink.spans} spans, {cpu:.2f} s CPU", flush=True)


if __name__ == "__main__":
    main()
