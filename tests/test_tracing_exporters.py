"""cbs-tracing: exporters chosen by the standard OTEL_* variables, in real
``cbs`` processes (OTLP over HTTP to a receiver on 127.0.0.1, console), and the
JSON-lines file exporter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from cbs.tracing import otel
from cbs.tracing.export import JsonLinesExporter

CLI = [sys.executable, "-m", "cbs.kernel.cli"]


def cbs_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_", "OTEL_"))}
    env.update(CBS_PLUGINS="greeter,tracing", CBS_TRANSPORT="local", NO_PROXY="127.0.0.1")
    env.update(extra)
    return env


def cbs_call(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "call", "greeter.say_hello", '{"name": "Ada"}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "kinds"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, [SimpleSpanProcessor]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, [BatchSpanProcessor]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/x"}, [BatchSpanProcessor]),
        (
            {"OTEL_TRACES_EXPORTER": "otlp, console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            [BatchSpanProcessor, SimpleSpanProcessor],
        ),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, []),
    ],
)
def test_exporters_from_env(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kinds: list[type]
) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    processors = otel.exporters_from_env()
    try:
        assert [type(p) for p in processors] == kinds
    finally:
        for processor in processors:
            processor.shutdown()


def test_json_lines_exporter(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    provider = TracerProvider()  # a private one: the global provider is untouched
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner"):
        pass
    provider.shutdown()
    inner, outer = (json.loads(line) for line in path.read_text().splitlines())
    assert (inner["name"], outer["name"]) == ("inner", "outer")
    assert inner["parent_id"] == outer["context"]["span_id"]
    assert inner["context"]["trace_id"] == outer["context"]["trace_id"]


def test_console_exporter_writes_spans_to_stderr() -> None:
    done = cbs_call(cbs_env(OTEL_TRACES_EXPORTER="console"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"message": "Hello Ada!"}\n'  # stdout stays the reply
    assert done.stderr.count('"name": "cbs.greeter.say_hello"') == 2
    assert '"kind": "SpanKind.CLIENT"' in done.stderr
    assert '"kind": "SpanKind.SERVER"' in done.stderr


def test_otlp_exporter_sends_spans_over_http(
    otlp_receiver: tuple[str, list[tuple[str, str, bytes]]],
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    url, received = otlp_receiver
    done = cbs_call(cbs_env(OTEL_EXPORTER_OTLP_ENDPOINT=url, OTEL_SERVICE_NAME="cbs-test"))
    assert done.returncode == 0, done.stderr
    assert received, "no OTLP export arrived"
    spans = []
    for path, content_type, body in received:
        assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert resource["service.name"] == "cbs-test"
            spans += [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert sorted((s.name, s.kind) for s in spans) == [
        ("cbs.greeter.say_hello", 2),  # SPAN_KIND_SERVER
        ("cbs.greeter.say_hello", 3),  # SPAN_KIND_CLIENT
    ]
    client = next(s for s in spans if s.kind == 3)
    server = next(s for s in spans if s.kind == 2)
    assert server.parent_span_id == client.span_id and server.trace_id == client.trace_id
