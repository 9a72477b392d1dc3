"""cbs-tracing in one process: spans, their attributes and links, W3C headers,
and the pass-through mode used when no TracerProvider is installed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import DefaultGetter, DefaultSetter, TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tracing_cells import HopPlugin

from cbs.contracts import BadRequest, Internal, NotFound
from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import Body, Cell, CellRegistry, Config, current_request, hookimpl
from cbs.nats import plugin as nats_plugin
from cbs.tracing import TRACER_PROVIDER, tracer_provider
from cbs.tracing import middleware as tracing_middleware
from cbs.tracing import plugin as tracing_plugin

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class RelayPlugin:
    """A cell ``relay`` that asks the greeter, so one request makes two hops,
    and a cell ``crash`` whose handler fails."""

    name = "relay"

    def __init__(self) -> None:
        self.body: Body | None = None
        self.seen_headers: list[dict[str, str]] = []
        self.relay = Cell("relay", category="logic", version="1.0.0", purpose="Asks the greeter")
        self.relay.add_verb("relay", self._relay, schema="relay/v1/Name")
        self.crash = Cell("crash", category="logic", version="1.0.0", purpose="Fails")
        self.crash.add_verb("boom", self._boom, schema="crash/v1/Any")

    async def _relay(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.seen_headers.append(dict(current_request().headers))
        assert self.body is not None
        return await self.body.request("greeter", "say_hello", {"name": payload.get("name")})

    async def _boom(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("no")

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cells.add(self.relay)
        cells.add(self.crash)

    @hookimpl
    def cbs_body_starting(self, body: Body) -> None:
        self.body = body


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """A TracerProvider for the bodies of one test (OpenTelemetry's global
    one is left alone)."""
    created = TracerProvider()
    yield created
    created.shutdown()


@pytest.fixture
def spans(provider: TracerProvider) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def traced_body(make_body: Any, provider: TracerProvider) -> Any:
    """``make_body`` for bodies that record with ``provider``."""

    def factory(*plugins: Any, config: dict[str, Any] | None = None) -> Body:
        body: Body = make_body(*plugins, config=config)
        body.stash[TRACER_PROVIDER] = provider
        return body

    return factory


def by_kind(finished: tuple[ReadableSpan, ...], name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in finished if s.name == name and s.kind == kind]
    assert len(found) == 1, [(s.name, s.kind) for s in finished]
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


@pytest.mark.parametrize("transport", ["local", "nats"])
async def test_one_trace_two_hops(
    transport: str, nats_server: Any, traced_body: Any, spans: InMemorySpanExporter
) -> None:
    relay = RelayPlugin()
    config = {"transport": transport, "nats_url": nats_server.url}
    body = traced_body(nats_plugin, greeter_plugin, tracing_plugin, relay, config=config)
    await body.start()
    assert await body.request("relay", "relay", {"name": "Ada"}) == {"message": "Hello Ada!"}

    finished = spans.get_finished_spans()
    assert len(finished) == 4
    client = by_kind(finished, "cbs.relay.relay", SpanKind.CLIENT)
    server = by_kind(finished, "cbs.relay.relay", SpanKind.SERVER)
    inner_client = by_kind(finished, "cbs.greeter.say_hello", SpanKind.CLIENT)
    inner_server = by_kind(finished, "cbs.greeter.say_hello", SpanKind.SERVER)
    assert {s.context.trace_id for s in finished} == {client.context.trace_id}
    assert client.parent is None
    assert parent_of(server) == client.context.span_id
    assert parent_of(inner_client) == server.context.span_id
    assert parent_of(inner_server) == inner_client.context.span_id
    assert server.parent is not None and server.parent.is_remote

    # The context crossed the bus as a W3C traceparent header.
    (headers,) = relay.seen_headers
    assert headers["traceparent"].split("-")[1:3] == [
        format(client.context.trace_id, "032x"),
        format(client.context.span_id, "016x"),
    ]

    attributes = dict(client.attributes or {})
    envelope_id = attributes.pop("messaging.message.id")
    assert attributes == {
        "messaging.system": transport,
        "messaging.operation.type": "send",
        "messaging.destination.name": "cbs.relay.relay",
        "cbs.service": "relay",
        "cbs.verb": "relay",
        "cbs.schema": "relay/v1/Name",
    }
    server_attributes = dict(server.attributes or {})
    assert server_attributes == {
        "messaging.system": transport,
        "messaging.operation.type": "process",
        "messaging.destination.name": "cbs.relay.relay",
        "messaging.consumer.group.name": "relay",
        "messaging.message.id": envelope_id,
        "cbs.service": "relay",
        "cbs.verb": "relay",
        "cbs.cell": "relay",
        "cbs.schema": "relay/v1/Name",
    }
    assert inner_server.attributes is not None
    assert inner_server.attributes["cbs.schema"] == "demo/v1/Name"
    assert inner_server.attributes["messaging.message.id"] != envelope_id
    assert all(s.status.status_code == StatusCode.UNSET for s in finished)


async def test_failures_set_the_error_code(traced_body: Any, spans: InMemorySpanExporter) -> None:
    relay = RelayPlugin()
    body = traced_body(greeter_plugin, tracing_plugin, relay)
    await body.start()
    with pytest.raises(BadRequest):
        await body.request("relay", "relay", {})
    finished = spans.get_finished_spans()
    assert len(finished) == 4
    for span in finished:
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "BadRequest"
        assert span.attributes["cbs.error.code"] == "BadRequest"
    spans.clear()

    with pytest.raises(Internal):
        await body.request("crash", "boom", {})
    server = by_kind(spans.get_finished_spans(), "cbs.crash.boom", SpanKind.SERVER)
    assert server.attributes is not None and server.attributes["error.type"] == "Internal"
    # The exception is recorded on the server span (not on the wire).
    assert [e.name for e in server.events] == ["exception"]
    spans.clear()

    with pytest.raises(NotFound):
        await body.request("nobody", "home", {})
    (client,) = spans.get_finished_spans()
    assert client.kind == SpanKind.CLIENT and client.attributes is not None
    assert client.attributes["error.type"] == "NotFound"


async def test_traceparent_passed_by_the_caller_is_the_parent(
    traced_body: Any, spans: InMemorySpanExporter
) -> None:
    body = traced_body(greeter_plugin, tracing_plugin)
    await body.start()
    await body.request("greeter", "say_hello", {"name": "x"}, headers={"traceparent": TRACEPARENT})
    client = by_kind(spans.get_finished_spans(), "cbs.greeter.say_hello", SpanKind.CLIENT)
    server = by_kind(spans.get_finished_spans(), "cbs.greeter.say_hello", SpanKind.SERVER)
    # Outside a span, a traceparent the caller passes is the client span's parent.
    assert format(client.context.trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert client.parent is not None
    assert format(client.parent.span_id, "016x") == TRACEPARENT.split("-")[2]
    assert parent_of(server) == client.context.span_id


async def test_a_span_current_in_the_caller_is_the_parent(
    traced_body: Any, spans: InMemorySpanExporter, provider: TracerProvider
) -> None:
    body = traced_body(greeter_plugin, tracing_plugin)
    await body.start()
    with provider.get_tracer("test").start_as_current_span("flow") as flow:
        await body.request("greeter", "say_hello", {"name": "x"})
    client = by_kind(spans.get_finished_spans(), "cbs.greeter.say_hello", SpanKind.CLIENT)
    assert parent_of(client) == flow.get_span_context().span_id


async def test_no_hook_runs_per_message(traced_body: Any, hook_recorder: Any) -> None:
    body = traced_body(greeter_plugin, tracing_plugin)
    await body.start()
    await body.request("greeter", "say_hello", {"name": "warm"})
    hook_recorder(body)
    await asyncio.gather(*(body.request("greeter", "say_hello", {"name": "x"}) for _ in range(20)))
    assert hook_recorder.calls == []


# -- without a TracerProvider: pass the context on, record nothing -----------------------------


@pytest.fixture
def no_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TracerProvider anywhere: none given, none global, no OTEL_* exporter."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


async def test_pass_through_mode_carries_incoming_context(
    no_provider: None, make_body: Any, spans: InMemorySpanExporter
) -> None:
    relay = RelayPlugin()
    body = make_body(greeter_plugin, tracing_plugin, relay)
    await body.start()
    assert tracer_provider(body) is None
    # No context: nothing to pass on, no header.
    await body.request("relay", "relay", {"name": "a"})
    assert relay.seen_headers[-1] == {}
    # With a context, the cell's own requests carry it on unchanged.
    await body.request("relay", "relay", {"name": "b"}, headers={"traceparent": TRACEPARENT})
    assert relay.seen_headers[-1] == {"traceparent": TRACEPARENT}
    assert spans.get_finished_spans() == ()


def test_header_getter_and_setter() -> None:
    headers: dict[str, str] = {}
    tracing_middleware.SETTER.set(headers, "traceparent", TRACEPARENT)
    assert tracing_middleware.GETTER.get(headers, "traceparent") == [TRACEPARENT]
    assert tracing_middleware.GETTER.get(headers, "tracestate") is None
    assert tracing_middleware.GETTER.keys(headers) == ["traceparent"]


def test_context_fields_only_for_propagators_that_read_nothing_else() -> None:
    assert tracing_middleware.context_fields() == {"traceparent", "tracestate", "baggage"}
    assert tracing_middleware.context_fields(TenantPropagator()) is None


class TenantPropagator(TextMapPropagator):
    """A propagator of the kind the shortcut must not skip: like Jaeger's
    (``uberctx-*`` baggage), it reads headers its ``fields`` do not name."""

    KEY = otel_context.create_key("tenant")

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        found = (getter or DefaultGetter()).get(carrier, "x-tenant-id")
        context = context if context is not None else otel_context.get_current()
        return otel_context.set_value(self.KEY, found[0], context) if found else context

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        value = otel_context.get_value(self.KEY, context)
        if value is not None:
            (setter or DefaultSetter()).set(carrier, "x-tenant-id", str(value))

    @property
    def fields(self) -> set[str]:
        return {"x-tenant"}


async def test_pass_through_mode_uses_any_other_propagator_on_every_request(
    no_provider: None, make_body: Any
) -> None:
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(TenantPropagator())
    try:
        body = make_body(tracing_plugin, HopPlugin())
        await body.start()
        # The tenant reaches the second hop: extracted, made current, injected.
        got = await body.request("hop", "hop", {}, headers={"x-tenant-id": "acme"})
        assert got == {"x-tenant-id": "acme"}
        assert await body.request("hop", "hop", {}) == {}
    finally:
        propagate.set_global_textmap(before)
