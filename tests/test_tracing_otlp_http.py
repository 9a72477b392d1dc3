"""cbs-tracing's kept-alive OTLP transport (:mod:`cbs.tracing.otlp_http`):
chosen only where it sends what the requests session would, one connection
for every batch, and the exporter's own retries and failures around it,
against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport
from opentelemetry.sdk.trace.export import SpanExportResult

from cbs.tracing.otlp_export import OtlpSpanExporter
from cbs.tracing.otlp_http import KeepAliveTransport, keeps_alive

BATCH = b"\x0a\x00"  # an ExportTraceServiceRequest with one empty ResourceSpans


class Receiver:
    """An HTTP receiver answering ``statuses`` in turn (then 200), keeping
    each request and counting connections; ``hang`` makes it never answer."""

    def __init__(self, port: int = 0, statuses: list[int] | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.connections = 0
        self.sockets: list[socket.socket] = []
        self.statuses = list(statuses or [])
        self.hang = threading.Event()
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                receiver.connections += 1
                receiver.sockets.append(self.request)
                super().setup()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                if receiver.hang.is_set():
                    receiver.released.wait(30)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def stop(self) -> None:
        """Stop listening and close every connection, as a process that ends."""
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        for connection in self.sockets:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed already
        self.thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.stop()


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))

    def point_at(url: str) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)

    return point_at


def transport_of(exporter: OtlpSpanExporter) -> Any:
    return exporter._client._transport


def test_it_is_chosen_only_where_it_sends_what_requests_would(
    endpoint: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    endpoint("http://127.0.0.1:4318")
    assert isinstance(transport_of(OtlpSpanExporter()), KeepAliveTransport)
    # Given anything, the exporter is the SDK's.
    assert isinstance(transport_of(OtlpSpanExporter(timeout=3)), RequestsHTTPTransport)
    assert not keeps_alive("https://127.0.0.1:4318/v1/traces")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    assert isinstance(transport_of(OtlpSpanExporter()), RequestsHTTPTransport)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert isinstance(transport_of(OtlpSpanExporter()), KeepAliveTransport)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login otel password hidden\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert not keeps_alive("http://127.0.0.1:4318/v1/traces")
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER", "vault")
    assert not keeps_alive("http://127.0.0.1:4318/v1/traces")


def test_every_batch_goes_over_one_connection_with_the_exporters_headers(
    endpoint: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    endpoint(receiver.url + "/")
    exporter = OtlpSpanExporter()
    results = [exporter.export_encoded(BATCH * n, n) for n in range(1, 6)]
    exporter.shutdown()
    assert results == [SpanExportResult.SUCCESS] * 5
    assert [body for _, _, body in receiver.requests] == [BATCH * n for n in range(1, 6)]
    path, headers, _ = receiver.requests[0]
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf" and headers["x-tenant"] == "acme"
    assert receiver.connections == 1


def test_a_receiver_that_restarted_gets_the_next_batch_on_a_new_connection(
    endpoint: Any, receiver: Receiver
) -> None:
    endpoint(receiver.url)
    exporter = OtlpSpanExporter()
    assert exporter.export_encoded(BATCH, 1) == SpanExportResult.SUCCESS
    receiver.stop()  # the kept connection is closed under the exporter
    again = Receiver(receiver.port)
    try:
        assert exporter.export_encoded(BATCH * 2, 2) == SpanExportResult.SUCCESS
        assert [body for _, _, body in again.requests] == [BATCH * 2]
    finally:
        exporter.shutdown()
        again.stop()


def test_failures_are_the_exporters_and_say_no_secret(
    endpoint: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cret")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    refusing = Receiver(statuses=[400])
    try:
        endpoint(refusing.url)
        exporter = OtlpSpanExporter()
        with caplog.at_level(logging.DEBUG):
            assert exporter.export_encoded(BATCH, 1) == SpanExportResult.FAILURE  # not retried
            assert len(refusing.requests) == 1
            refusing.hang.set()  # no answer: the exporter's timeout ends it
            began = time.monotonic()
            assert exporter.export_encoded(BATCH, 1) == SpanExportResult.FAILURE
            assert time.monotonic() - began < 10
        exporter.shutdown()
    finally:
        refusing.stop()
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        endpoint(f"http://127.0.0.1:{closed.getsockname()[1]}")
        exporter = OtlpSpanExporter()
        with caplog.at_level(logging.DEBUG):
            assert exporter.export_encoded(BATCH, 1) == SpanExportResult.FAILURE
        exporter.shutdown()
    assert "Failed to export" in caplog.text
    assert "s3cret" not in caplog.text


def test_a_transient_status_is_retried(endpoint: Any) -> None:
    busy = Receiver(statuses=[503])
    try:
        endpoint(busy.url)
        exporter = OtlpSpanExporter()
        assert exporter.export_encoded(BATCH, 1) == SpanExportResult.SUCCESS
        assert len(busy.requests) == 2
        exporter.shutdown()
    finally:
        busy.stop()


def test_it_never_sends_to_a_tls_endpoint_in_the_clear() -> None:
    answer = KeepAliveTransport().request("POST", "https://127.0.0.1:1/v1/traces", data=BATCH)
    assert isinstance(answer.error, ValueError)
