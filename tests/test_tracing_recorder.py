"""cbs-tracing's span recorder (:mod:`cbs.tracing.recorder`): what records the
middleware's spans when the body's own provider sends them over OTLP only.

Checked against the SDK: the same calls on a recorded span and on an SDK span
give the same OTLP message; a body's spans, and a cell's own spans made
through the body's provider, reach an OTLP receiver together; the recorder
stands in only where it may."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from otlp_receiver import exported_spans
from tracing_cells import HopPlugin

from cbs.contracts import Internal
from cbs.kernel import Body, Cell, CellRegistry, Config, hookimpl
from cbs.tracing import otel, tracer_provider
from cbs.tracing import plugin as tracing_plugin
from cbs.tracing.middleware import SCOPE, VERSION, traceparent_of
from cbs.tracing.recorder import RecordedSpan, SpanRecorder

T0 = 1_700_000_000_000_000_000
RESOURCE = Resource({"service.name": "recorder-test", "process.pid": 1})
PARENT = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1))


class Captured:
    """An exporter keeping what the recorder sends; ``hold`` blocks sending."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int]] = []
        self.hold = threading.Event()
        self.hold.set()

    def export_encoded(self, data: bytes, count: int) -> SpanExportResult:
        self.hold.wait(10)
        self.sent.append((data, count))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def recorder(limits: SpanLimits | None = None) -> tuple[SpanRecorder, Captured]:
    captured = Captured()
    made = SpanRecorder(RESOURCE, captured, scope=SCOPE, version=VERSION, limits=limits)  # type: ignore[arg-type]
    return made, captured


# -- a recorded span is the SDK's span -------------------------------------------------------

keys = st.sampled_from(["a", "b", "c", "cbs.x", "error.type", ""])
values = st.one_of(
    st.text(max_size=6),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.text(max_size=3), max_size=3),
    st.none(),  # refused, with a warning, by both
)
attributes = st.dictionaries(keys, values, max_size=3)
times = st.integers(T0, T0 + 10**9)
link_contexts = st.sampled_from(
    [PARENT, SpanContext(1, 2, False, TraceFlags(0)), trace.INVALID_SPAN_CONTEXT]
)
statuses = st.one_of(
    st.tuples(st.sampled_from(list(StatusCode)), st.none() | st.text(max_size=5)),
    st.builds(Status, st.sampled_from(list(StatusCode)), st.none() | st.text(max_size=5)),
)
calls = st.lists(
    st.one_of(
        st.tuples(st.just("set_attribute"), keys, values),
        st.tuples(st.just("set_attributes"), attributes),
        st.tuples(st.just("add_event"), st.text(max_size=4), attributes, times),
        st.tuples(st.just("add_link"), link_contexts, attributes),
        st.tuples(st.just("set_status"), statuses),
        st.tuples(st.just("update_name"), st.text(max_size=6)),
        st.tuples(st.just("record_exception"), attributes, times, st.booleans()),
    ),
    max_size=8,
)
LIMITS = [
    SpanLimits(  # the recorder's spans start unbounded
        max_span_attributes=12,
        max_events=3,
        max_links=2,
        max_event_attributes=2,
        max_link_attributes=2,
    ),
    SpanLimits(max_span_attributes=3, max_attribute_length=4),  # bounded from the start
]

try:
    raise ValueError("no")
except ValueError as caught:
    FAILURE = caught


def play(span: Any, made: list[Any]) -> None:
    for call, *args in made:
        if call == "set_status":
            status = args[0]
            if isinstance(status, Status):
                span.set_status(status)
            else:
                span.set_status(*status)
        elif call == "record_exception":
            span.record_exception(FAILURE, args[0], args[1], args[2])
        else:
            getattr(span, call)(*args)


def without_span_id(data: bytes, keep_trace: bool) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest.FromString(data)
    for span in message.resource_spans[0].scope_spans[0].spans:
        span.span_id = b""
        if not keep_trace:
            span.trace_id = b""
    return message


@settings(max_examples=150, deadline=None)
@given(
    name=st.text(max_size=6),
    kind=st.sampled_from(list(SpanKind)),
    parented=st.booleans(),
    start=attributes,
    made=calls,
    limits=st.sampled_from(LIMITS),
)
def test_a_recorded_span_gives_the_sdk_spans_message(
    name: str,
    kind: SpanKind,
    parented: bool,
    start: dict[str, Any],
    made: list[Any],
    limits: SpanLimits,
) -> None:
    logging.disable(logging.WARNING)  # both refuse the same values, loudly
    try:
        finished = InMemorySpanExporter()
        provider = TracerProvider(
            resource=RESOURCE, sampler=ParentBased(ALWAYS_ON), span_limits=limits
        )
        provider.add_span_processor(SimpleSpanProcessor(finished))
        ours, captured = recorder(limits)
        parent = trace.set_span_in_context(NonRecordingSpan(PARENT)) if parented else None
        for tracer in (provider.get_tracer(SCOPE, VERSION), ours):
            span = tracer.start_span(name, parent, kind, start, start_time=T0)
            play(span, made)
            span.end(end_time=T0 + 10**9 + 1)
            play(span, made)  # an ended span takes no more
        ours.shutdown()
    finally:
        logging.disable(logging.NOTSET)
    theirs = sdk_encode(finished.get_finished_spans()).SerializeToString()
    assert [count for _, count in captured.sent] == [1]
    assert without_span_id(captured.sent[0][0], parented) == without_span_id(theirs, parented)


def test_a_span_not_sampled_by_its_parent_is_not_recorded() -> None:
    ours, captured = recorder()
    unsampled = SpanContext(PARENT.trace_id, PARENT.span_id, True, TraceFlags(0))
    span = ours.start_span("x", trace.set_span_in_context(NonRecordingSpan(unsampled)))
    assert not span.is_recording()
    assert span.get_span_context().trace_id == PARENT.trace_id
    span.end()
    ours.shutdown()
    assert captured.sent == []


def test_a_full_queue_drops_spans_counts_them_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2")
    ours, captured = recorder()
    captured.hold.clear()  # the exporter is stuck
    for _ in range(10):
        ours.start_span("x").end()
    assert ours.dropped >= 4
    assert caplog.text.count("span queue is full") == 1
    captured.hold.set()
    ours.shutdown()
    assert sum(count for _, count in captured.sent) == 10 - ours.dropped
    assert all(count <= 2 for _, count in captured.sent)


def test_the_traceparent_written_directly_is_w3c_trace_contexts() -> None:
    from opentelemetry import propagate

    ours, _ = recorder()
    span = ours.start_span("x")
    carrier: dict[str, str] = {}
    propagate.inject(carrier, trace.set_span_in_context(span))
    assert carrier == {"traceparent": traceparent_of(span.get_span_context())}
    ours.shutdown()


# -- in a body ---------------------------------------------------------------------------------


class OwnSpans:
    """``own.work`` makes a span of its own through the body's provider;
    ``own.crash`` fails."""

    def __init__(self) -> None:
        self.body: Body | None = None
        own = Cell("own", category="logic", version="1.0.0", purpose="Makes its own span")
        own.add_verb("work", self._work, schema="own/v1/Any")
        own.add_verb("crash", self._crash, schema="own/v1/Any")
        self.cell = own

    async def _work(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.body is not None
        provider = tracer_provider(self.body)
        assert provider is not None
        trace.get_current_span().set_attribute("app.tenant", "acme")
        with provider.get_tracer("app", "1.0").start_as_current_span("app.work"):
            return {}

    async def _crash(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("secret detail")

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cells.add(self.cell)

    @hookimpl
    def cbs_body_starting(self, body: Body) -> None:
        self.body = body


@pytest.fixture
def exporting(
    monkeypatch: pytest.MonkeyPatch, otlp_receiver: tuple[str, list[tuple[str, str, bytes]]]
) -> list[tuple[str, str, bytes]]:
    url, received = otlp_receiver
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "recorder-test")
    return received


async def test_a_bodys_spans_and_a_cells_own_reach_the_receiver_together(
    make_body: Any, exporting: list[tuple[str, str, bytes]]
) -> None:
    own = OwnSpans()
    body = make_body(tracing_plugin, HopPlugin(), own)
    await body.start()
    assert otel.recorder(body) is not None
    await body.request("hop", "hop", {})
    await body.request("own", "work", {})
    with pytest.raises(Internal):
        await body.request("own", "crash", {})
    await body.stop()  # flushes

    spans = exported_spans(exporting)
    for resource, _, _ in spans:
        named_by = {a.key: a.value.string_value for a in resource.attributes}
        assert named_by["service.name"] == "recorder-test"
    named = {(s.name, s.kind): (scope, s) for _, scope, s in spans}
    assert sorted(named) == sorted(
        [
            ("cbs.hop.hop", 3),
            ("cbs.hop.hop", 2),
            ("cbs.peek.peek", 3),
            ("cbs.peek.peek", 2),
            ("cbs.own.work", 3),
            ("cbs.own.work", 2),
            ("app.work", 1),
            ("cbs.own.crash", 3),
            ("cbs.own.crash", 2),
        ]
    )
    scope, app = named[("app.work", 1)]
    assert (scope.name, scope.version) == ("app", "1.0")
    _, work = named[("cbs.own.work", 2)]
    assert app.parent_span_id == work.span_id and app.trace_id == work.trace_id
    assert {a.key: a.value.string_value for a in work.attributes}["app.tenant"] == "acme"
    # Two hops, one trace: hop's server span is the parent of its request to peek.
    _, hop_server = named[("cbs.hop.hop", 2)]
    _, peek_client = named[("cbs.peek.peek", 3)]
    assert peek_client.parent_span_id == hop_server.span_id
    _, crash = named[("cbs.own.crash", 2)]
    assert crash.status.code == 2  # STATUS_CODE_ERROR
    assert {a.key: a.value.string_value for a in crash.attributes}["error.type"] == "Internal"
    assert [e.name for e in crash.events] == ["exception"]


@pytest.mark.parametrize(
    "setting",
    [
        {"OTEL_TRACES_EXPORTER": "otlp,console"},
        {"OTEL_TRACES_SAMPLER": "always_on"},
        {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "64"},
        {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "4"},
    ],
)
async def test_the_sdk_records_where_the_recorder_would_differ(
    make_body: Any,
    exporting: list[tuple[str, str, bytes]],
    monkeypatch: pytest.MonkeyPatch,
    setting: dict[str, str],
) -> None:
    for name, value in setting.items():
        monkeypatch.setenv(name, value)
    body = make_body(tracing_plugin, HopPlugin())
    await body.start()
    assert otel.recorder(body) is None
    assert otel.provider(body) is not None
    await body.stop()


async def test_a_span_file_is_written_by_the_sdk(
    make_body: Any, exporting: list[tuple[str, str, bytes]], tmp_path: Any
) -> None:
    body = make_body(tracing_plugin, HopPlugin(), config={"tracing_file": str(tmp_path / "s")})
    await body.start()
    assert otel.recorder(body) is None
    await body.stop()


@settings(max_examples=100, deadline=None)
@given(
    static=st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=8),
    more=st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3),
    parented=st.booleans(),
    kind=st.sampled_from(list(SpanKind)),
)
def test_the_middlewares_spans_give_the_checked_spans_message(
    static: dict[str, str], more: dict[str, str], parented: bool, kind: SpanKind
) -> None:
    more = {f"more.{key}": value for key, value in more.items()}  # keys of its own
    # The middleware's path (its attributes unchecked, an endpoint's encoded
    # once, the span encoded as it ends) against start_span's, twice in a row.
    ours, captured = recorder()
    parent = trace.set_span_in_context(NonRecordingSpan(PARENT)) if parented else None
    for _ in range(2):
        trusted = ours.start_trusted_span("x", parent, kind, static, dict(more))
        assert isinstance(trusted, RecordedSpan)
        checked = ours.start_span("x", parent, kind, {**static, **more})
        checked.start_time = trusted.start_time  # type: ignore[attr-defined]
        trusted.end(end_time=trusted.start_time + 1)
        checked.end(end_time=trusted.start_time + 1)
    ours.shutdown()
    spans = ExportTraceServiceRequest.FromString(captured.sent[0][0]).resource_spans[0]
    encoded = spans.scope_spans[0].spans
    assert len(encoded) == 4
    for span in encoded:
        span.span_id = span.trace_id = b""
    assert encoded[0] == encoded[1] and encoded[2] == encoded[3]
