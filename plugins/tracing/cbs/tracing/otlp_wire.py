"""Spans to OTLP protobuf bytes, written directly.

The OTLP exporter's encoder (``opentelemetry-exporter-otlp-proto-common``)
builds a protobuf object per span, per attribute and per value, and upb copies
each sub-message into its parent: about 100 µs a span of nine attributes,
more than recording the span costs. :func:`encode_spans` writes the
``ExportTraceServiceRequest`` bytes field by field instead (about a tenth of
that), the same message, grouped the same way (resource, then scope, in the
order first seen), with the same fields left out, the same attribute values
refused (logged, the attribute skipped) and the same failures raised.
``tests/test_tracing_otlp_wire.py`` checks that against the SDK's encoder on
arbitrary spans.

Wire format: https://protobuf.dev/programming-guides/encoding/ (proto3: a
scalar equal to its default is not written; a sub-message that is set is,
even empty; a ``oneof`` member is written whatever its value).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "encode_attributes",
    "encode_batch",
    "encode_plain_span",
    "encode_span",
    "encode_spans",
    "span_head",
]

#: The SDK encoder's logger: a refused attribute is reported where it was.
_logger = logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal")

_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_HAS_IS_REMOTE = 0x100  # SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_INT64 = range(-(2**63), 2**63)
_double = struct.Struct("<d").pack
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack

#: Single-byte varints, and attribute keys already encoded (bounded).
_SMALL = [bytes((n,)) for n in range(128)]
_KEYS: dict[str, bytes] = {}
_MAX_KEYS = 1024


def _varint(n: int) -> bytes:
    if n < 0x80:
        if n >= 0:
            return _SMALL[n]
        n += 1 << 64  # int64: two's complement, ten bytes
    elif n < 0x4000:  # two bytes: a span's length, mostly
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, sub-message)."""
    return tag + _varint(len(payload)) + payload


# -- values and attributes (common.proto) ------------------------------------------------------


def _any_value(value: Any) -> bytes:
    """An ``AnyValue``'s bytes, checked in the SDK's order (bool before int)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"  # bool_value = 2
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())  # string_value = 1
    if isinstance(value, int):
        if value not in _INT64:
            raise ValueError(f"Value out of range: {value}")
        return b"\x18" + _varint(value)  # int_value = 3
    if isinstance(value, float):
        return b"\x21" + _double(value)  # double_value = 4
    if isinstance(value, bytes):
        return _field(b"\x3a", value)  # bytes_value = 7
    if isinstance(value, Sequence):  # array_value = 5: ArrayValue.values = 1
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any_value(v)) for v in value]))
    if isinstance(value, Mapping):  # kvlist_value = 6: KeyValueList.values = 1
        pairs = [_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()]
        return _field(b"\x32", b"".join(pairs))
    raise Exception(f"Invalid type {type(value)} of value {value}")  # the SDK's error


def _key_value(key: str, value: Any) -> bytes:
    encoded = _KEYS.get(key)
    if encoded is None:
        encoded = _field(b"\x0a", key.encode()) if key else b""  # key = 1
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[key] = encoded
    return encoded + _field(b"\x12", _any_value(value))  # value = 2


#: Encoded attributes with a string value, by field tag, then key, then
#: value: most of a span's attributes repeat from span to span (the system,
#: service, verb, schema). A key stops taking new values once it holds
#: :data:`_MAX_VALUES` (a key of unique values, a message id, is not cached),
#: and no value is added once :data:`_MAX_STRINGS` are held in all.
_STRINGS: dict[bytes, dict[str, dict[str, bytes]]] = {}
_MAX_VALUES = 1024
_MAX_STRINGS = 8192
_held = [0]  # the values held in _STRINGS
#: The same for int and bool values, by (field tag, key, value type, value);
#: emptied when full.
_ENCODED: dict[tuple[bytes, str, type, Any], bytes] = {}
_MAX_ENCODED = 4096
_CACHED_TYPES = (int, bool)


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
    """Each attribute as a repeated ``KeyValue`` field ``tag``; one the SDK's
    encoder refuses is logged and left out, as it does."""
    if not attributes:
        return []
    out = []
    strings = _STRINGS.get(tag)
    if strings is None:
        strings = _STRINGS[tag] = {}
    cache = _ENCODED
    for key, value in attributes.items():
        kind = type(value)
        if kind is str and type(key) is str:
            values = strings.get(key)
            if values is None:
                values = {} if len(strings) < _MAX_KEYS else None
                if values is not None:
                    strings[key] = values
            found = values.get(value) if values is not None else None
            if found is None:
                try:
                    found = _string_pair(tag, key, value)
                except Exception as error:  # not UTF-8 (a lone surrogate)
                    _logger.exception("Failed to encode key %s: %s", key, error)
                    continue
                if values is not None and len(values) < _MAX_VALUES and _held[0] < _MAX_STRINGS:
                    values[value] = found
                    _held[0] += 1
            out.append(found)
            continue
        cached = kind in _CACHED_TYPES
        if cached:
            found = cache.get((tag, key, kind, value))
            if found is not None:
                out.append(found)
                continue
        try:
            encoded = _field(tag, _key_value(key, value))
        except Exception as error:
            _logger.exception("Failed to encode key %s: %s", key, error)
            continue
        if cached and type(key) is str:
            if len(cache) >= _MAX_ENCODED:
                cache.clear()
            cache[(tag, key, kind, value)] = encoded
        out.append(encoded)
    return out


def _string_pair(tag: bytes, key: str, value: str) -> bytes:
    """``_field(tag, _key_value(key, value))`` of a string value, written in
    one ``join`` when every length fits a byte (a message id, new every span)."""
    key_field = _KEYS.get(key)
    if key_field is None:
        key_field = _field(b"\x0a", key.encode()) if key else b""
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[key] = key_field
    text = value.encode()
    size = len(text)
    whole = len(key_field) + 4 + size  # the KeyValue: key, value's tag and length, AnyValue
    if whole >= 0x80:
        return _field(tag, key_field + _field(b"\x12", _field(b"\x0a", text)))
    parts = (tag, _SMALL[whole], key_field, b"\x12", _SMALL[size + 2], b"\x0a", _SMALL[size], text)
    return b"".join(parts)


def _string(tag: bytes, text: str | None) -> bytes:
    return _field(tag, text.encode()) if text else b""


def _count(tag: bytes, n: int) -> bytes:
    return tag + _varint(n) if n else b""


# -- spans (trace.proto) -----------------------------------------------------------------------


def _flags(context: Any) -> int:
    if context and context.is_remote:
        return _HAS_IS_REMOTE | _IS_REMOTE
    return _HAS_IS_REMOTE


#: A span's name field, kind and status as encoded before (bounded: names
#: are subjects, and an application may make many).
_NAMES: dict[str, bytes] = {}
_MAX_NAMES = 1024
_KIND_FIELDS = {kind: b"\x30" + _varint(number) for kind, number in _KINDS.items()}
_UNSET_STATUS = b"\x7a\x00"  # a Status set, code UNSET, no message: an empty message
_LOCAL_FLAGS = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE)  # flags = 16, fixed32
_REMOTE_FLAGS = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
_times = struct.Struct("<BQBQ").pack  # start_time_unix_nano = 7, end_time_unix_nano = 8


def _span(span: Any) -> bytes:
    ids = span.get_span_context()
    parent = span.parent
    state = ids.trace_state
    parts = [
        b"\x0a\x10",  # trace_id = 1, 16 bytes
        ids.trace_id.to_bytes(16, "big"),
        b"\x12\x08",  # span_id = 2, 8 bytes
        ids.span_id.to_bytes(8, "big"),
    ]
    if state:
        parts.append(_string(b"\x1a", ",".join([f"{k}={v}" for k, v in state.items()])))
    if parent:
        parts.append(b"\x22\x08")  # parent_span_id = 4, 8 bytes
        parts.append(parent.span_id.to_bytes(8, "big"))
    parts.append(_name_field(span.name))
    parts.append(_KIND_FIELDS[span.kind])
    start, end = span.start_time, span.end_time
    if start and end:
        parts.append(_times(0x39, start, 0x41, end))
    else:
        if start:
            parts.append(b"\x39" + _fixed64(start))
        if end:
            parts.append(b"\x41" + _fixed64(end))
    attributes = span.attributes
    if attributes:
        parts += _attributes(b"\x4a", attributes)
    dropped = span.dropped_attributes
    if dropped:
        parts.append(b"\x50" + _varint(dropped))
    for event in span.events:  # Span.Event
        body = [b"\x09" + _fixed64(event.timestamp)] if event.timestamp else []
        body.append(_string(b"\x12", event.name))
        body += _attributes(b"\x1a", event.attributes)
        body.append(_count(b"\x20", event.dropped_attributes))
        parts.append(_field(b"\x5a", b"".join(body)))
    dropped = span.dropped_events
    if dropped:
        parts.append(b"\x60" + _varint(dropped))
    for link in span.links:  # Span.Link
        body = [
            _field(b"\x0a", link.context.trace_id.to_bytes(16, "big")),
            _field(b"\x12", link.context.span_id.to_bytes(8, "big")),
        ]
        body += _attributes(b"\x22", link.attributes)
        body.append(_count(b"\x28", link.dropped_attributes))
        body.append(b"\x35" + _fixed32(_flags(link.context)))
        parts.append(_field(b"\x6a", b"".join(body)))
    dropped = span.dropped_links
    if dropped:
        parts.append(b"\x70" + _varint(dropped))
    status = span.status
    if status is not None:  # Status: message = 2, code = 3
        code = status.status_code.value
        if not code and not status.description:
            parts.append(_UNSET_STATUS)
        else:
            fields = _string(b"\x12", status.description)
            parts.append(_field(b"\x7a", fields + (b"\x18" + _varint(code) if code else b"")))
    parts.append(_REMOTE_FLAGS if parent and parent.is_remote else _LOCAL_FLAGS)
    return b"".join(parts)


def _name_field(name: str) -> bytes:
    encoded = _NAMES.get(name)
    if encoded is None:
        encoded = _string(b"\x2a", name)
        if type(name) is str and len(_NAMES) < _MAX_NAMES:
            _NAMES[name] = encoded
    return encoded


def encode_attributes(attributes: Mapping[str, Any]) -> bytes:
    """A span's ``attributes`` fields, for :func:`encode_plain_span`."""
    return b"".join(_attributes(b"\x4a", attributes))


def span_head(name: str, kind: SpanKind) -> bytes:
    """A span's name and kind fields, for :func:`encode_plain_span`."""
    return (_NAMES.get(name) or _name_field(name)) + _KIND_FIELDS[kind]


#: What ends the bytes of a span of :func:`encode_plain_span`: its status
#: (unset) and flags, by whether its parent is remote.
_PLAIN_TAILS = {False: _UNSET_STATUS + _LOCAL_FLAGS, True: _UNSET_STATUS + _REMOTE_FLAGS}
_TRACE_TAG, _SPAN_TAG, _PARENT_TAG = b"\x0a\x10", b"\x12\x08", b"\x22\x08"


def encode_plain_span(
    ids: bytes,
    parent_id: bytes | None,
    remote: bool,
    head: bytes,
    start: int,
    end: int,
    attributes: bytes,
    more: Mapping[str, Any],
) -> bytes:
    """:func:`encode_span` of a span with no ``tracestate``, no events, no
    links, nothing dropped, its status unset and both its times set: its
    trace id and span id (``ids``, 16 + 8 bytes), its parent's span id (8
    bytes, ``None``: none) and whether the parent is ``remote``, its name and
    kind (``head``, :func:`span_head`); its attributes are those
    ``attributes`` (:func:`encode_attributes`) holds, then ``more``. The
    middleware's spans: most of their bytes made once per endpoint."""
    parts = [_TRACE_TAG, ids[:16], _SPAN_TAG, ids[16:]]
    if parent_id is not None:
        parts.append(_PARENT_TAG)
        parts.append(parent_id)
    parts.append(head)
    parts.append(_times(0x39, start, 0x41, end))
    parts.append(attributes)
    parts += _attributes(b"\x4a", more)
    parts.append(_PLAIN_TAILS[remote])
    return _field(b"\x12", b"".join(parts))


def _scope(scope: Any) -> bytes:
    """``InstrumentationScope``: name = 1, version = 2, attributes = 3."""
    if scope is None:
        return b""
    return b"".join(
        [
            _string(b"\x0a", scope.name),
            _string(b"\x12", scope.version),
            *_attributes(b"\x1a", scope.attributes),
        ]
    )


def encode_span(span: Any) -> bytes:
    """One span as a ``ScopeSpans.spans`` field: what :func:`encode_batch`
    puts together. ``span`` is a ``ReadableSpan`` or anything with its
    attributes (:class:`cbs.tracing.recorder.RecordedSpan`)."""
    return _field(b"\x12", _span(span))


def encode_batch(resource: Any, spans: Sequence[tuple[Any, bytes]]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` of spans of ``resource``
    already encoded by :func:`encode_span`, each with its scope; grouped by
    scope, in the order first seen, as :func:`encode_spans` does."""
    scopes: dict[Any, list[bytes]] = {}
    last: Any = object()
    encoded: list[bytes] = []
    for scope, span in spans:
        if scope is not last:  # a batch is mostly of one scope
            encoded = scopes.setdefault(scope or None, [])
            last = scope
        encoded.append(span)
    return _resource_spans(resource, scopes)


def _resource_spans(resource: Any, scopes: Mapping[Any, Sequence[bytes]]) -> bytes:
    body = [_field(b"\x0a", b"".join(_attributes(b"\x0a", resource.attributes)))]
    for scope, encoded in scopes.items():
        scope_spans = [_field(b"\x0a", _scope(scope)), *encoded]
        scope_spans.append(_string(b"\x1a", scope.schema_url if scope else None))
        body.append(_field(b"\x12", b"".join(scope_spans)))
    body.append(_string(b"\x1a", resource.schema_url))
    return _field(b"\x0a", b"".join(body))  # resource_spans = 1


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` of ``spans``: what
    ``encode_spans(spans).SerializePartialToString()`` of the OTLP exporter
    gives, resources and scopes grouped by equality in the order first seen."""
    # Grouped by identity first (a provider's spans share one resource and
    # one scope object per tracer), then merged by equality, as the SDK's
    # dict of resources does.
    resources: dict[Any, dict[Any, list[bytes]]] = {}
    seen: dict[int, dict[Any, list[bytes]]] = {}  # id(resource) -> its group
    for span in spans:
        resource = span.resource
        scopes = seen.get(id(resource))
        if scopes is None:
            key = next((r for r in resources if r == resource), resource)
            scopes = seen[id(resource)] = resources.setdefault(key, {})
        scope = span.instrumentation_scope or None
        scopes.setdefault(scope, []).append(encode_span(span))
    return b"".join([_resource_spans(r, scopes) for r, scopes in resources.items()])
