"""cbs-tracing: the TracerProvider belongs to the body. Starting and stopping
a traced body leaves OpenTelemetry's global provider as it was; two bodies
record with their own providers; the file exporter a body adds to a provider
it does not own is switched off when the body stops."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import Body
from cbs.tracing import TRACER_PROVIDER, tracer_provider
from cbs.tracing import plugin as tracing_plugin


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def span_names(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted((s["name"], s["kind"]) for s in spans)


def recording(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def test_a_traced_body_leaves_the_global_provider_as_it_was(
    make_body: Any, tmp_path: Path
) -> None:
    before = trace.get_tracer_provider()
    path = tmp_path / "spans.jsonl"
    body = make_body(greeter_plugin, tracing_plugin, config={"tracing_file": str(path)})
    await body.start()
    own = tracer_provider(body)
    assert isinstance(own, TracerProvider)  # the body's own, made for the file
    assert trace.get_tracer_provider() is before
    await body.request("greeter", "say_hello", {"name": "Ada"})
    await body.stop()

    assert trace.get_tracer_provider() is before
    assert tracer_provider(body) is None
    assert span_names(path) == [
        ("cbs.greeter.say_hello", "SpanKind.CLIENT"),
        ("cbs.greeter.say_hello", "SpanKind.SERVER"),
    ]
    # A restart makes a new provider; the old one was shut down.
    await body.start()
    assert tracer_provider(body) is not own
    await body.stop()
    assert trace.get_tracer_provider() is before


async def test_two_bodies_record_with_their_own_providers(make_body: Any) -> None:
    spans_a, spans_b = InMemorySpanExporter(), InMemorySpanExporter()
    provider_a, provider_b = recording(spans_a), recording(spans_b)
    bodies: list[Body] = []
    for provider in (provider_a, provider_b):
        body = make_body(greeter_plugin, tracing_plugin)
        body.stash[TRACER_PROVIDER] = provider
        await body.start()
        bodies.append(body)
    a, b = bodies
    assert (tracer_provider(a), tracer_provider(b)) == (provider_a, provider_b)
    await a.request("greeter", "say_hello", {"name": "a"})
    for _ in range(2):
        await b.request("greeter", "say_hello", {"name": "b"})
    assert len(spans_a.get_finished_spans()) == 2
    assert len(spans_b.get_finished_spans()) == 4
    await a.stop()
    await b.stop()
    # A provider the application gave is not the body's to shut down.
    with provider_a.get_tracer("test").start_as_current_span("after"):
        pass
    assert [s.name for s in spans_a.get_finished_spans()][-1] == "after"
    for provider in (provider_a, provider_b):
        provider.shutdown()


async def test_the_file_exporter_on_a_given_provider_stops_with_the_body(
    make_body: Any, tmp_path: Path
) -> None:
    path = tmp_path / "spans.jsonl"
    spans = InMemorySpanExporter()
    provider = recording(spans)
    body = make_body(greeter_plugin, tracing_plugin, config={"tracing_file": str(path)})
    body.stash[TRACER_PROVIDER] = provider
    await body.start()
    await body.request("greeter", "say_hello", {"name": "Ada"})
    await body.stop()
    assert len(span_names(path)) == 2 and len(spans.get_finished_spans()) == 2

    with provider.get_tracer("test").start_as_current_span("after"):
        pass
    assert len(span_names(path)) == 2  # the file exporter is off
    assert len(spans.get_finished_spans()) == 3  # the application's own still runs
    provider.shutdown()


@pytest.fixture
def global_provider_untouched() -> Iterator[None]:
    before = trace.get_tracer_provider()
    yield
    assert trace.get_tracer_provider() is before


async def test_without_exporters_no_provider_is_made(
    make_body: Any, global_provider_untouched: None
) -> None:
    body = make_body(greeter_plugin, tracing_plugin)
    await body.start()
    assert tracer_provider(body) is None
    await body.request("greeter", "say_hello", {"name": "x"})
