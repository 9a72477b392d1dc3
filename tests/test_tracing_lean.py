"""The recorder's lean path (:class:`cbs.tracing.recorder.LeanStarter`) and
the middleware's use of it: the spans it makes are the spans the checked
path makes, a cell sees the same context, and whatever the lean path does
not read itself (a hostile or unusual ``traceparent``, ``tracestate``,
baggage, a context of another kind) takes the checked path."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from cbs.contracts import Envelope, Unavailable
from cbs.tracing.middleware import (
    SCOPE,
    VERSION,
    traced_client,
    traced_server,
    traceparent_of,
)
from cbs.tracing.otel import HeadSampling
from cbs.tracing.recorder import RecordedSpan, SpanRecorder

RESOURCE = Resource({"service.name": "lean-test"})
PARENT = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1))
TRACEPARENT = traceparent_of(PARENT)


class Captured:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.lock = threading.Lock()

    def export_encoded(self, data: bytes, count: int) -> SpanExportResult:
        with self.lock:
            self.sent.append(data)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def recorder() -> tuple[SpanRecorder, Captured]:
    captured = Captured()
    made = SpanRecorder(RESOURCE, captured, scope=SCOPE, version=VERSION)  # type: ignore[arg-type]
    return made, captured


def sent_spans(ours: SpanRecorder, captured: Captured) -> list[Any]:
    """Every span ``ours`` recorded, decoded (it is shut down)."""
    ours.shutdown()
    found = []
    for data in captured.sent:
        for resource in ExportTraceServiceRequest.FromString(data).resource_spans:
            for scope in resource.scope_spans:
                found.extend(scope.spans)
    return found


class Checked:
    """The recorder without its lean path: the middleware takes the checked one."""

    def __init__(self, recorder: SpanRecorder) -> None:
        self.start_span = recorder.start_span
        self.start_trusted_span = recorder.start_trusted_span


# -- the spans ---------------------------------------------------------------------------------

texts = st.text(max_size=5)


@settings(max_examples=100, deadline=None)
@given(
    static=st.dictionaries(st.text(min_size=1, max_size=5), texts, max_size=6),
    more=st.dictionaries(st.text(min_size=1, max_size=5), texts, max_size=3),
    parent=st.sampled_from(["none", "lean", "checked", "remote"]),
    kind=st.sampled_from(list(SpanKind)),
    changed=st.booleans(),
)
def test_a_lean_span_is_the_checked_paths_span(
    static: dict[str, str], more: dict[str, str], parent: str, kind: SpanKind, changed: bool
) -> None:
    more = {f"more.{key}": value for key, value in more.items()}  # keys of its own
    ours, captured = recorder()
    starter = ours.lean_starter("x", kind, static)
    assert starter is not None
    lean_parent = ours.lean_starter("outer", SpanKind.SERVER, {})
    assert lean_parent is not None
    outer = {"lean": lean_parent.root({}), "checked": ours.start_span("outer")}.get(parent)
    if parent == "none":
        lean, context = starter.root(dict(more)), None
    elif parent == "remote":
        trace_id, span_id = TRACEPARENT[3:35], TRACEPARENT[36:52]
        lean = starter.remote_child(dict(more), trace_id, span_id)
        context = trace.set_span_in_context(NonRecordingSpan(PARENT))
    else:
        assert isinstance(outer, RecordedSpan)
        made = starter.child(dict(more), outer)
        assert made is not None
        lean, context = made, trace.set_span_in_context(outer)
    checked = ours.start_span("x", context, kind, {**static, **more})
    assert isinstance(checked, RecordedSpan)
    checked.start_time = lean.start_time

    # What it answers, as a span.
    ids = lean.get_span_context()
    assert ids.is_valid and ids.trace_flags.sampled and not ids.is_remote
    assert ids.trace_id == checked.get_span_context().trace_id or parent == "none"
    assert lean.traceparent() == traceparent_of(ids)
    assert lean.attributes == {**static, **more}
    assert lean.parent == checked.parent
    if lean.parent is not None:
        assert lean.parent.is_remote == (parent == "remote")
    for span in (lean, checked):
        if changed:  # then it is encoded as any span is
            span.set_attribute("app.count", 3)
            span.set_status(StatusCode.ERROR, "no")
        span.end(end_time=lean.start_time + 5)

    encoded = sent_spans(ours, captured)
    assert len(encoded) == 2
    for span in encoded:
        span.span_id = b""
        if parent == "none":
            span.trace_id = b""
    assert encoded[0] == encoded[1]


def test_a_lean_span_never_has_an_all_zero_id(monkeypatch: pytest.MonkeyPatch) -> None:
    import cbs.tracing.recorder as recorder_module

    draws = iter([bytes(24), bytes(16) + b"\x01" * 8, b"\x01" * 16 + bytes(8), b"\x02" * 24])
    monkeypatch.setattr(recorder_module, "randbytes", lambda n: next(draws)[:n])
    ours, _ = recorder()
    starter = ours.lean_starter("x", SpanKind.CLIENT, {})
    assert starter is not None
    ids = starter.root({}).get_span_context()
    assert ids.trace_id == int.from_bytes(b"\x02" * 16) and ids.span_id == int.from_bytes(
        b"\x02" * 8
    )
    ours.shutdown()


# -- the middleware ----------------------------------------------------------------------------

SERVED = SimpleNamespace(
    subject="cbs.greeter.hello",
    queue_group="cbs.greeter",
    cell=SimpleNamespace(service="greeter", id="greeter-1"),
    endpoint=SimpleNamespace(verb="hello"),
)
TARGET = SimpleNamespace(subject="cbs.greeter.hello", service="greeter", verb="hello")


def request() -> Envelope:
    return Envelope.request("greeter", "hello", {"name": "Ada"}, schema="greeter/v1/Hello")


def seen_context() -> tuple[int, int, bool, bool, str | None]:
    """What a cell sees of the current context: trace id, span id, sampled,
    recording, baggage."""
    span = trace.get_current_span()
    ids = span.get_span_context()
    tenant = baggage.get_baggage("tenant")
    return ids.trace_id, ids.span_id, ids.trace_flags.sampled, span.is_recording(), tenant  # type: ignore[return-value]


def shape(span: Any) -> tuple[bytes, bytes, str, int]:
    """A recorded span, but for its own (random) span id."""
    return span.trace_id, span.parent_span_id, span.name, span.flags


HOSTILE = [
    {},
    {"cbs-deadline": "1700000000000"},
    {"traceparent": TRACEPARENT},
    {"traceparent": TRACEPARENT[:-2] + "00"},  # not sampled
    {"traceparent": TRACEPARENT[:-2] + "03"},  # other flags
    {"traceparent": TRACEPARENT.upper()},
    {"traceparent": " " + TRACEPARENT},
    {"traceparent": TRACEPARENT + "-extra"},
    {"traceparent": "01" + TRACEPARENT[2:]},  # a later version
    {"traceparent": "ff" + TRACEPARENT[2:]},  # an invalid version
    {"traceparent": f"00-{'0' * 32}-{TRACEPARENT[36:]}"},  # no trace id
    {"traceparent": f"{TRACEPARENT[:36]}{'0' * 16}-01"},  # no span id
    {"traceparent": TRACEPARENT[:-1]},
    {"traceparent": "garbage"},
    {"traceparent": ""},
    {"traceparent": TRACEPARENT, "tracestate": "vendor=1"},
    {"traceparent": TRACEPARENT, "baggage": "tenant=acme"},
    {"baggage": "tenant=acme"},
    {"tracestate": "vendor=1"},
]


@pytest.mark.parametrize("headers", HOSTILE, ids=[str(h) for h in HOSTILE])
async def test_a_cell_sees_what_the_checked_path_gives_it(headers: dict[str, str]) -> None:
    outcomes = []
    for lean in (True, False):
        ours, captured = recorder()
        tracer = ours if lean else Checked(ours)
        seen: list[Any] = []

        async def cell(request: Envelope, headers: Any, seen: list[Any] = seen) -> Envelope:
            seen.append(seen_context())
            return request

        handler = traced_server(
            SERVED,  # type: ignore[arg-type]
            cell,
            system="nats",
            tracer=tracer,  # type: ignore[arg-type]
            head=HeadSampling(1.0),
        )
        assert (handler.__name__ == "lean") is lean
        await handler(request(), dict(headers))
        spans = sent_spans(ours, captured)
        trace_id, span_id, sampled, recording, tenant = seen[0]
        new_trace = trace_id != PARENT.trace_id
        recorded = [shape(span) for span in spans]
        if new_trace:  # its id is random: compare what it is
            recorded = [(b"new", *rest) for _, *rest in recorded]  # type: ignore[misc]
        outcomes.append((new_trace, sampled, recording, tenant, recorded))
        assert not recording or span_id == int.from_bytes(spans[0].span_id)
    assert outcomes[0] == outcomes[1]


async def test_a_span_current_in_the_caller_is_the_parent_on_both_paths() -> None:
    contexts = {
        "nothing": lambda ours: otel_context.Context(),
        "a lean span": lambda ours: trace.set_span_in_context(
            ours.lean_starter("outer", SpanKind.SERVER, {}).root({})
        ),
        "a checked span": lambda ours: trace.set_span_in_context(ours.start_span("outer")),
        "a remote span": lambda ours: trace.set_span_in_context(NonRecordingSpan(PARENT)),
        "a span and baggage": lambda ours: baggage.set_baggage(
            "tenant", "acme", trace.set_span_in_context(ours.start_span("outer"))
        ),
        "an unsampled span": lambda ours: trace.set_span_in_context(
            NonRecordingSpan(SpanContext(1, 2, True, TraceFlags(0)))
        ),
    }
    for name, make in contexts.items():
        outcomes = []
        for lean in (True, False):
            ours, captured = recorder()
            sent: list[dict[str, str]] = []

            async def send(
                request: Envelope, headers: dict[str, str], timeout: float, sent: Any = sent
            ) -> Envelope:
                sent.append(dict(headers))
                return request

            handler = traced_client(
                TARGET,  # type: ignore[arg-type]
                send,
                system="nats",
                tracer=ours if lean else Checked(ours),  # type: ignore[arg-type]
                head=HeadSampling(1.0),
            )
            outer = make(ours)
            outer_span = trace.get_current_span(outer)
            token = otel_context.attach(outer)
            try:
                await handler(request(), {}, 1.0)
            finally:
                otel_context.detach(token)
            spans = [span for span in sent_spans(ours, captured) if span.name != "outer"]
            outer_ids = outer_span.get_span_context()
            headers = sent[0]
            traceparent = headers.pop("traceparent")
            recorded = [
                (s.trace_id == outer_ids.trace_id.to_bytes(16), s.parent_span_id.hex())
                for s in spans
            ]
            if outer_ids.is_valid:  # the parent named as the span the caller is in
                recorded = [(same, p == f"{outer_ids.span_id:016x}") for same, p in recorded]
            if spans:  # the header carries the client span's ids
                ids = spans[0].trace_id.hex(), spans[0].span_id.hex()
                assert traceparent == f"00-{ids[0]}-{ids[1]}-01", name
            outcomes.append((traceparent[-2:], headers, recorded))
        assert outcomes[0] == outcomes[1], name


@pytest.mark.parametrize("side", ["client", "server"])
async def test_a_ratio_is_drawn_once_per_new_trace(side: str) -> None:
    ours, captured = recorder()
    head = HeadSampling(0.5)
    sent: list[str] = []

    async def answer(request: Envelope, headers: Any, timeout: float = 0) -> Envelope:
        if side == "client":
            sent.append(headers["traceparent"])
        return request

    if side == "client":
        handler: Any = traced_client(TARGET, answer, system="nats", tracer=ours, head=head)  # type: ignore[arg-type]
        calls = [handler(request(), {}, 1.0) for _ in range(2000)]
    else:
        handler = traced_server(SERVED, answer, system="nats", tracer=ours, head=head)  # type: ignore[arg-type]
        calls = [handler(request(), {}) for _ in range(2000)]
    await asyncio.gather(*calls)
    recorded = len(sent_spans(ours, captured))
    # 2000 draws at 0.5: 1000 +- 150 is 6.7 sigma; drawn twice, 1500.
    assert 850 <= recorded <= 1150, recorded
    if side == "client":  # and each unsampled one says so downstream
        assert sum(value.endswith("-00") for value in sent) == 2000 - recorded


async def test_a_failing_request_is_recorded_as_on_the_checked_path() -> None:
    outcomes = []
    for lean in (True, False):
        ours, captured = recorder()

        async def fail(request: Envelope, headers: Any) -> Envelope:
            raise Unavailable("busy")

        handler = traced_server(
            SERVED,  # type: ignore[arg-type]
            fail,
            system="nats",
            tracer=ours if lean else Checked(ours),  # type: ignore[arg-type]
            head=HeadSampling(1.0),
        )
        with pytest.raises(Unavailable):
            await handler(request(), {"traceparent": TRACEPARENT})
        (span,) = sent_spans(ours, captured)
        span.span_id = b""
        span.start_time_unix_nano = span.end_time_unix_nano = 0
        attributes = sorted((a.key, a.value.string_value) for a in span.attributes)
        del span.attributes[:]
        outcomes.append((span, [a for a in attributes if a[0] != "messaging.message.id"]))
    assert outcomes[0] == outcomes[1]


def test_a_key_of_unique_values_is_encoded_whole_after_its_cache_is_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ours, captured = recorder()
    starter = ours.lean_starter("x", SpanKind.CLIENT, {"cbs.service": "greeter"})
    assert starter is not None
    count = 1500  # more than a key's cached values (1024)
    bad = (3, count - 3)  # values refused as the SDK's encoder does: before and after
    ids = [f"id-{n}" + "x" * 70 * (n % 3) for n in range(count)]  # lengths past a byte's
    for n in range(count):
        value = f"{ids[n]}\udc80" if n in bad else ids[n]
        starter.root({"cbs.schema": "greeter/v1/Hello", "lean.test.id": value}).end()
    spans = sent_spans(ours, captured)
    assert len(spans) == count
    for n, span in enumerate(spans):
        found = {a.key: a.value.string_value for a in span.attributes}
        expected = {"cbs.service": "greeter", "cbs.schema": "greeter/v1/Hello"}
        assert found == (expected if n in bad else {**expected, "lean.test.id": ids[n]})
    assert caplog.text.count("Failed to encode key lean.test.id") == 2
