"""Spans encoded by cbs.tracing.otlp_wire are byte for byte what the OTLP
exporter's own encoder serializes, for arbitrary spans: attributes of every
type (those it refuses included), events, links, statuses, trace state,
remote parents, and resources and scopes equal without being the same object.
The SDK's encoder is the reference, so a release that changes it fails here."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from cbs.tracing import otlp_export
from cbs.tracing.otlp_wire import encode_spans

_TEXT = st.text(alphabet=st.sampled_from([*"ab.Z9_ é", "\u2028", "\ud800"]), max_size=5)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    _TEXT,
    st.binary(max_size=4),
    st.builds(object),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.one_of(_TEXT, st.integers(0, 3)), inner, max_size=2),
    ),
    max_leaves=6,
)
_ATTRIBUTES = st.one_of(st.none(), st.dictionaries(_TEXT, _VALUES, max_size=4))
_IDS = st.integers(min_value=0, max_value=2**64 - 1)
_CONTEXTS = st.builds(
    SpanContext,
    trace_id=st.integers(min_value=0, max_value=2**128 - 1),
    span_id=_IDS,
    is_remote=st.booleans(),
    trace_flags=st.sampled_from([TraceFlags(0), TraceFlags(1)]),
    trace_state=st.one_of(
        st.none(), st.just(TraceState([("vendor", "x1"), ("other", "y")])), st.just(TraceState())
    ),
)
_RESOURCE = Resource({"service.name": "a", "process.pid": 1})
_SCOPE = InstrumentationScope("cbs", "1.0")
_RESOURCES = st.sampled_from(
    [
        _RESOURCE,
        Resource({"service.name": "a", "process.pid": 1}),  # equal, not the same object
        Resource({"service.name": "b"}, schema_url="https://example.com/schema"),
        Resource({}),
    ]
)
_SCOPES = st.sampled_from(
    [
        None,
        _SCOPE,
        InstrumentationScope("cbs", "1.0"),
        InstrumentationScope("other", None, "https://example.com/s", {"k": "v"}),
        InstrumentationScope(""),
    ]
)
_TIMES = st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1))
_SPANS = st.builds(
    ReadableSpan,
    name=_TEXT,
    context=_CONTEXTS,
    parent=st.one_of(st.none(), _CONTEXTS),
    resource=_RESOURCES,
    attributes=_ATTRIBUTES,
    events=st.lists(
        st.builds(Event, name=_TEXT, attributes=_ATTRIBUTES, timestamp=_TIMES), max_size=2
    ),
    links=st.lists(st.builds(Link, context=_CONTEXTS, attributes=_ATTRIBUTES), max_size=2),
    kind=st.sampled_from(list(SpanKind)),
    instrumentation_scope=_SCOPES,
    status=st.one_of(
        st.builds(Status, status_code=st.sampled_from(list(StatusCode)), description=_TEXT),
        st.just(Status()),
    ),
    start_time=_TIMES,
    end_time=_TIMES,
)


def _sdk_bytes(spans: list[ReadableSpan]) -> Any:
    try:
        return sdk_encode(spans).SerializePartialToString()
    except Exception:
        return "raised"


def _our_bytes(spans: list[ReadableSpan]) -> Any:
    try:
        return encode_spans(spans)
    except Exception:
        return "raised"


@settings(max_examples=400, deadline=None)
@given(st.lists(_SPANS, max_size=4))
def test_spans_encode_to_the_sdk_encoders_bytes(spans: list[ReadableSpan]) -> None:
    logging.disable(logging.ERROR)  # both encoders log each attribute they refuse
    try:
        ours, theirs = _our_bytes(spans), _sdk_bytes(spans)
    finally:
        logging.disable(logging.NOTSET)
    assert ours == theirs
    if isinstance(ours, bytes):
        assert ExportTraceServiceRequest.FromString(ours) == sdk_encode(spans)


def test_a_typical_span_is_the_same_message() -> None:
    span = ReadableSpan(
        "cbs.bench.echo",
        SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False),
        parent=SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7, True),
        resource=_RESOURCE,
        attributes={"messaging.system": "cbs", "cbs.verb": "echo", "n": 3, "ok": True},
        kind=SpanKind.SERVER,
        instrumentation_scope=_SCOPE,
        status=Status(StatusCode.ERROR, "Internal"),
        start_time=1_764_590_000_000_000_000,
        end_time=1_764_590_000_000_100_000,
    )
    ours = encode_spans([span])
    assert ours == sdk_encode([span]).SerializePartialToString()
    decoded = ExportTraceServiceRequest.FromString(ours).resource_spans[0]
    assert decoded.scope_spans[0].spans[0].name == "cbs.bench.echo"


def test_the_fast_export_is_on_only_for_the_sdk_code_it_was_checked_against() -> None:
    # The SDK's export is replaced only while it is the code that was copied...
    fingerprint = otlp_export._fingerprint(otlp_export.OTLPSpanExporter.export)
    assert otlp_export.FAST_EXPORT is (fingerprint == otlp_export.CHECKED_AGAINST)
    assert ("export" in vars(otlp_export.OtlpSpanExporter)) is otlp_export.FAST_EXPORT

    # ...and a change to a method's names or constants changes its fingerprint.
    def export(self: Any, spans: Any) -> Any:
        return None

    assert otlp_export._fingerprint(export) != otlp_export.CHECKED_AGAINST


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, object()])
def test_an_attribute_the_sdk_refuses_is_left_out_and_logged(
    value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    span = ReadableSpan("s", SpanContext(1, 2, False), attributes={"bad": value, "good": 1})
    with caplog.at_level(logging.ERROR):
        ours = encode_spans([span])
    assert ours == sdk_encode([span]).SerializePartialToString()
    assert "Failed to encode key bad" in caplog.text


@given(st.integers(-(2**63), 2**64 - 1) | st.integers(0, 0x4001))
def test_a_varint_is_protobufs(n: int) -> None:
    from google.protobuf.internal.encoder import _VarintBytes

    from cbs.tracing.otlp_wire import _varint

    assert _varint(n) == _VarintBytes(n if n >= 0 else n + (1 << 64))
