"""Spans the middleware records itself, encoded to OTLP in batches.

With the body's own ``TracerProvider`` exporting over OTLP only and head
sampling decided by the middleware (see :mod:`cbs.tracing.otel`), every span
the middleware starts is to be recorded and sent. The SDK's span then costs
more than the request it describes: a lock per call, each attribute checked,
a processor queue, a ``ReadableSpan`` copy, and the SDK's encoding of it all
(about 38 µs a span made and ended in a loop here, against 8 µs for this
module; in a body under load, about 90 µs a request against 25).

:class:`SpanRecorder` is an OpenTelemetry ``Tracer`` whose spans
(:class:`RecordedSpan`) hold what the SDK's hold. An ended span is queued;
one thread encodes a batch of them with :mod:`cbs.tracing.otlp_wire` (the
bytes the SDK's encoder gives for the same span) and sends it through
:class:`~cbs.tracing.otlp_export.OtlpSpanExporter` (its ``OTEL_EXPORTER_OTLP_*``
settings, retries and size limit). It is also the provider's span processor,
so spans made through the provider go into the same batches.

The middleware's common cases (a new trace, a child of a span recorded
here, a child of a sampled ``traceparent`` that came alone) take
:class:`LeanStarter`: the span's ids are the bytes OTLP carries, made with
one ``randbytes``, and its ``SpanContext``, its parent's and its attribute
dict are made only if something asks (a cell, a log record); about half the
cost of a span made through :meth:`SpanRecorder.start_trusted_span`.

What a cell does with the current span works as with the SDK: attributes,
events and links set on it are checked and bounded by the SDK's own
``BoundedAttributes`` and ``BoundedList`` under its ``SpanLimits``
(``OTEL_SPAN_*``, ``OTEL_ATTRIBUTE_*``), its status follows the SDK's rules,
and a span made through the body's provider (``cbs.tracing.tracer_provider``)
while it is current is its child. Batches follow the batch processor's
variables ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_QUEUE_SIZE`` and
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``: a span that finds the queue full is
dropped and counted, as there.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from random import getrandbits, randbytes
from time import time_ns
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from cbs.tracing.otlp_wire import (
    encode_attributes,
    encode_batch,
    encode_plain_span,
    encode_span,
    span_head,
)

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.util.types import AnyValue, Attributes

    from cbs.tracing.otlp_export import OtlpSpanExporter

__all__ = ["LeanStarter", "RecordedSpan", "SpanRecorder", "batch_settings", "limits_allow"]

log = logging.getLogger("cbs.tracing")
#: The SDK's logger: its warnings about misuse of a span come from where they did.
_sdk_log = logging.getLogger("opentelemetry.sdk.trace")

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
_NOTHING: tuple[Any, ...] = ()

#: Endpoints whose own attributes are kept encoded (emptied when full).
_MAX_STATICS = 1024

#: The most attributes a span of the middleware carries, errors included.
BASE_ATTRIBUTES = 12


def limits_allow(limits: SpanLimits) -> bool:
    """Whether the middleware's own attributes pass ``limits`` unchanged, so
    its spans can skip the check: no value length limit, room for them all."""
    return (
        limits.max_attribute_length is None
        and limits.max_span_attribute_length is None
        and (limits.max_span_attributes is None or limits.max_span_attributes >= BASE_ATTRIBUTES)
    )


def _setting(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw) if raw.strip() else default
    except ValueError:
        value = -1
    if value <= 0:
        log.warning("%s=%r is not a positive number: using %d", name, raw, default)
        value = default
    return value


def batch_settings() -> tuple[float, int, int]:
    """(schedule delay in seconds, most spans waiting, most spans a batch)
    from ``OTEL_BSP_*``, with the batch processor's defaults."""
    delay = _setting("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
    queue = _setting("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
    batch = min(_setting("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), queue)
    return delay, queue, batch


def _fixed(most: int | None, attributes: Attributes, limits: SpanLimits) -> BoundedAttributes:
    """An event's or a link's attributes, checked, bounded and frozen as the SDK's."""
    return BoundedAttributes(
        most, attributes, max_value_len=limits.max_attribute_length, immutable=True
    )


def _ended_warning(what: str) -> None:
    _sdk_log.warning("Tried calling %s on an ended span.", what)


class RecordedSpan(trace.Span):
    """A recording span of :class:`SpanRecorder`: OpenTelemetry's ``Span``
    API, and the fields of the SDK's ``ReadableSpan`` that encoding reads.

    A span of the middleware's lean path (:class:`LeanStarter`) holds its ids
    as the bytes OTLP carries and its attributes as the endpoint's and the
    request's; its ``SpanContext``, its parent's and its attribute dict are
    made only when something asks for them."""

    __slots__ = (
        "_attributes",
        "_context",
        "_encoded",
        "_events",
        "_ids",
        "_links",
        "_more",
        "_parent",
        "_parent_id",
        "_record_exception",
        "_recorder",
        "_remote",
        "_set_status_on_exception",
        "_starter",
        "end_time",
        "kind",
        "name",
        "start_time",
        "status",
    )

    def __init__(
        self,
        recorder: SpanRecorder,
        name: str,
        context: SpanContext | None,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any] | BoundedAttributes | None,
        start_time: int,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        encoded: bytes | None = None,
        more: dict[str, str] | None = None,
        starter: LeanStarter | None = None,
        ids: bytes | None = None,
        parent_id: bytes | None = None,
        remote: bool = False,
    ) -> None:
        self.name = name
        self.kind = kind
        self.start_time = start_time
        self.end_time: int | None = None
        #: A plain dict while it holds only the middleware's attributes (within
        #: the limits, see :func:`limits_allow`); bounded from the first one
        #: set. ``None`` on the lean path until asked for: the starter's and ``more``.
        self._attributes: dict[str, Any] | BoundedAttributes | None = attributes
        self.status = _UNSET
        #: ``None`` on the lean path until asked for: ``ids`` holds the trace
        #: id and the span id (16 + 8 bytes), ``parent_id`` the parent's span
        #: id (8 bytes, ``None``: a new trace), ``remote`` whether the parent
        #: came over the wire.
        self._context = context
        self._parent = parent
        self._ids = ids
        self._parent_id = parent_id
        self._remote = remote
        self._events: BoundedList[Event] | None = None
        self._links: BoundedList[Link] | None = None
        self._recorder = recorder
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        #: While the attributes are the middleware's, unchanged: the bytes of
        #: the endpoint's own ones, and the request's (see encode_plain_span).
        self._encoded = encoded
        self._more = more
        #: What started it on the lean path (its endpoint's name, kind and
        #: attributes, encoded), else ``None``.
        self._starter = starter

    # -- what encoding reads (ReadableSpan's names) --------------------------------------------

    @property
    def attributes(self) -> dict[str, Any] | BoundedAttributes:
        attributes = self._attributes
        if attributes is None:
            static = self._starter._static if self._starter is not None else {}
            attributes = self._attributes = {**static, **(self._more or {})}
        return attributes

    @property
    def parent(self) -> SpanContext | None:
        parent = self._parent
        if parent is None and self._parent_id is not None:
            trace_id = int.from_bytes(self._ids[:16])  # type: ignore[index]
            parent = SpanContext(trace_id, int.from_bytes(self._parent_id), self._remote, _SAMPLED)
            self._parent = parent
        return parent

    @property
    def dropped_attributes(self) -> int:
        attributes = self._attributes
        return attributes.dropped if isinstance(attributes, BoundedAttributes) else 0

    @property
    def events(self) -> Sequence[Event]:
        return self._events if self._events is not None else _NOTHING

    @property
    def dropped_events(self) -> int:
        return self._events.dropped if self._events is not None else 0

    @property
    def links(self) -> Sequence[Link]:
        return self._links if self._links is not None else _NOTHING

    @property
    def dropped_links(self) -> int:
        return self._links.dropped if self._links is not None else 0

    # -- OpenTelemetry's Span API, with the SDK's rules ----------------------------------------

    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            ids: bytes = self._ids  # type: ignore[assignment]
            trace_id, span_id = int.from_bytes(ids[:16]), int.from_bytes(ids[16:])
            context = self._context = SpanContext(trace_id, span_id, False, _SAMPLED)
        return context

    def traceparent(self) -> str:
        """This span's W3C ``traceparent`` (with no ``tracestate``)."""
        ids = self._ids
        if ids is None:
            context = self._context
            assert context is not None
            return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        hexed = ids.hex()
        return f"00-{hexed[:32]}-{hexed[32:]}-01"

    def is_recording(self) -> bool:
        return self.end_time is None

    def _bounded(self) -> BoundedAttributes:
        attributes = self.attributes
        if not isinstance(attributes, BoundedAttributes):
            attributes = self._attributes = self._recorder._bounded(attributes)
            self._encoded = None
        return attributes

    def set_attributes(self, attributes: Mapping[str, AnyValue]) -> None:
        if self.end_time is not None:
            _sdk_log.warning("Setting attribute on ended span.")
            return
        bounded = self._bounded()
        for key, value in attributes.items():
            bounded[key] = value

    def set_attribute(self, key: str, value: AnyValue) -> None:
        if self.end_time is not None:
            _sdk_log.warning("Setting attribute on ended span.")
            return
        self._bounded()[key] = value

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self.end_time is not None:
            _ended_warning("add_event")
            return
        limits = self._recorder.limits
        bounded = _fixed(limits.max_event_attributes, attributes, limits)
        if self._events is None:
            self._events = BoundedList(limits.max_events)
        self._events.append(Event(name=name, attributes=bounded, timestamp=timestamp))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self.end_time is not None:
            _ended_warning("add_link")
            return
        if not (context.is_valid or attributes or context.trace_state):
            return  # what the SDK takes for no link
        limits = self._recorder.limits
        bounded = _fixed(limits.max_link_attributes, attributes, limits)
        if self._links is None:
            self._links = BoundedList(limits.max_links)
        self._links.append(Link(context, bounded))

    def update_name(self, name: str) -> None:
        if self.end_time is not None:
            _ended_warning("update_name")
            return
        self.name = name
        self._starter = None  # its encoded name is not this one

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # The SDK's rules: OK is final, UNSET is ignored.
        if self.status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                _sdk_log.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                    description,
                )
            self.status = status
        elif isinstance(status, StatusCode) and status is not StatusCode.UNSET:
            self.status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        recorded: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}"
            if module and module != "builtins"
            else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            _sdk_log.warning("Calling end() on an ended span.")
            return
        self.end_time = end_time if end_time is not None else time_ns()
        attributes = self._attributes
        if attributes is not None and type(attributes) is not dict:
            attributes._immutable = True  # type: ignore[union-attr]  # as the SDK's end does
        self._recorder._ended(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        super().__exit__(exc_type, exc_val, exc_tb)


def _encode_plain(span: RecordedSpan, encoded: bytes) -> Any:
    """The bytes of one of the middleware's spans, unchanged since it started
    (or the span itself, for the thread, when it carries a ``tracestate``)."""
    ids, parent_id, remote = span._ids, span._parent_id, span._remote
    if ids is None:
        context: SpanContext = span._context  # type: ignore[assignment]
        if context.trace_state:
            return span
        ids = context.trace_id.to_bytes(16, "big") + context.span_id.to_bytes(8, "big")
        parent = span._parent
        if parent is not None:
            parent_id, remote = parent.span_id.to_bytes(8, "big"), parent.is_remote
    return encode_plain_span(
        ids,
        parent_id,
        remote,
        span_head(span.name, span.kind),
        span.start_time,
        span.end_time,  # type: ignore[arg-type]
        encoded,
        span._more,  # type: ignore[arg-type]
    )


_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


def _fresh_ids(trace_id: bytes | None = None) -> bytes:
    """A new span's ids (16 + 8 bytes) in ``trace_id`` (``None``: a new trace);
    neither is all zero, which W3C trace context calls invalid."""
    if trace_id is None:
        ids = randbytes(24)
        while ids[:16] == _ZERO_TRACE or ids[16:] == _ZERO_SPAN:
            ids = randbytes(24)
        return ids
    span_id = randbytes(8)
    while span_id == _ZERO_SPAN:
        span_id = randbytes(8)
    return trace_id + span_id


class LeanStarter:
    """Starts the spans of one endpoint of the middleware (its name, kind and
    own attributes, encoded once), the cheapest way there is: no
    ``SpanContext`` and no context of the parent are made, the ids are the
    bytes OTLP carries, and the span is encoded as it ends, most of its bytes
    made already. Each method takes the request's attributes (``more``:
    string keys and values, none of them in ``static``, owned by the span).
    The span is recorded and sampled, as the middleware decided."""

    __slots__ = ("_encoded", "_head", "_kind", "_name", "_recorder", "_static")

    def __init__(
        self, recorder: SpanRecorder, name: str, kind: SpanKind, static: Mapping[str, str]
    ) -> None:
        self._recorder = recorder
        self._name = name
        self._kind = kind
        self._static = static
        self._encoded = encode_attributes(static)
        self._head = span_head(name, kind)

    def root(self, more: dict[str, str]) -> RecordedSpan:
        """A span starting a new trace."""
        return RecordedSpan(
            self._recorder, self._name, None, None, self._kind, None, time_ns(), True, True,
            self._encoded, more, self, _fresh_ids(),
        )  # fmt: skip

    def child(self, more: dict[str, str], parent: RecordedSpan) -> RecordedSpan | None:
        """A child of ``parent`` (a span of this recorder's kind), or ``None``
        when its trace carries a ``tracestate`` (then ask :meth:`SpanRecorder.start_span`)."""
        ids = parent._ids
        if ids is None:
            context: SpanContext = parent._context  # type: ignore[assignment]
            if context.trace_state or not context.trace_flags.sampled:
                return None
            ids = context.trace_id.to_bytes(16, "big") + context.span_id.to_bytes(8, "big")
        return RecordedSpan(
            self._recorder, self._name, None, None, self._kind, None, time_ns(), True, True,
            self._encoded, more, self, _fresh_ids(ids[:16]), ids[16:],
        )  # fmt: skip

    def remote_child(self, more: dict[str, str], trace_id: str, span_id: str) -> RecordedSpan:
        """A child of a sampled span that came over the wire: its trace id
        and span id as W3C's ``traceparent`` writes them (lower-case hex,
        32 and 16 digits, neither all zeros: checked by the caller)."""
        return RecordedSpan(
            self._recorder, self._name, None, None, self._kind, None, time_ns(), True, True,
            self._encoded, more, self, _fresh_ids(bytes.fromhex(trace_id)),
            bytes.fromhex(span_id), True,
        )  # fmt: skip

    def encode(self, span: RecordedSpan) -> bytes:
        """One of its spans, ended unchanged, as :func:`encode_span` gives it."""
        return encode_plain_span(
            span._ids,  # type: ignore[arg-type]
            span._parent_id,
            span._remote,
            self._head,
            span.start_time,
            span.end_time,  # type: ignore[arg-type]
            self._encoded,
            span._more,  # type: ignore[arg-type]
        )


class SpanRecorder(trace.Tracer, SpanProcessor):
    """A ``Tracer`` recording :class:`RecordedSpan` s of ``resource`` and the
    scope ``scope``/``version``, sent by ``exporter`` in batches (see the
    module docstring). Sampling is parent-based, always on: the middleware
    asks it only for spans it has decided to record.

    It is also the span processor of the body's provider: the spans made
    through the provider go into the same batches, and the provider's
    ``force_flush`` and ``shutdown`` are the recorder's."""

    def __init__(
        self,
        resource: Resource,
        exporter: OtlpSpanExporter,
        *,
        scope: str,
        version: str,
        limits: SpanLimits | None = None,
    ) -> None:
        self.resource = resource
        self.scope = InstrumentationScope(scope, version)
        self.limits = limits or SpanLimits()
        self._plain = limits_allow(self.limits)
        #: id(static) -> (static, its attributes encoded), for start_trusted_span.
        self._statics: dict[int, tuple[Mapping[str, str], bytes]] = {}
        self.exporter = exporter
        self.delay, self.max_queue, self.max_batch = batch_settings()
        #: Spans dropped because the queue was full.
        self.dropped = 0
        #: Ended spans waiting for the thread: encoded already (the
        #: middleware's, see _ended), or encoded by the thread a batch at a time.
        self._queue: deque[tuple[InstrumentationScope, Any]] = deque()
        self._wake = threading.Event()
        self._sending = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="cbs-tracing-export", daemon=True)
        self._thread.start()

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent, ids = self._ids(context)
        if not ids.trace_flags.sampled:
            return NonRecordingSpan(ids)
        span = RecordedSpan(
            self,
            name,
            ids,
            parent,
            kind,
            self._bounded(attributes),  # checked and bounded, as the SDK does
            start_time if start_time is not None else time_ns(),
            record_exception,
            set_status_on_exception,
        )
        for link in links or ():
            span.add_link(link.context, link.attributes)
        return span

    def start_trusted_span(
        self,
        name: str,
        context: Context | None,
        kind: SpanKind,
        static: Mapping[str, str],
        more: dict[str, str],
    ) -> trace.Span:
        """:meth:`start_span` for the middleware, whose attributes need no
        check: string keys and values, an endpoint's own (``static``, the
        same mapping at every request, never changed) and then a request's
        (``more``, owned by the span, none of its keys in ``static``). Where
        the limits let them through (:func:`limits_allow`) they are taken as
        they are, and the endpoint's are encoded once."""
        parent, ids = self._ids(context)
        if not ids.trace_flags.sampled:
            return NonRecordingSpan(ids)
        attributes = {**static, **more}
        if not self._plain:
            return RecordedSpan(self, name, ids, parent, kind, self._bounded(attributes), time_ns())
        known = self._statics.get(id(static))
        if known is None or known[0] is not static:
            if len(self._statics) >= _MAX_STATICS:
                self._statics.clear()
            known = self._statics[id(static)] = (static, encode_attributes(static))
        return RecordedSpan(
            self, name, ids, parent, kind, attributes, time_ns(), encoded=known[1], more=more
        )

    def lean_starter(
        self, name: str, kind: SpanKind, static: Mapping[str, str]
    ) -> LeanStarter | None:
        """What starts the spans of one endpoint of the middleware on the
        lean path (see :class:`LeanStarter`), or ``None`` where the limits
        do not let its attributes through as they are (:func:`limits_allow`)."""
        if not self._plain:
            return None
        return LeanStarter(self, name, kind, static)

    @staticmethod
    def _ids(context: Context | None) -> tuple[SpanContext | None, SpanContext]:
        """The parent of a span started in ``context`` (``None``: a new
        trace) and the new span's ids, not sampled when the parent's trace
        is not (parent-based sampling, always on)."""
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is None or not parent.is_valid:
            return None, SpanContext(getrandbits(128) or 1, getrandbits(64) or 1, False, _SAMPLED)
        flags = _SAMPLED if parent.trace_flags.sampled else _NOT_SAMPLED
        span_id = getrandbits(64) or 1
        return parent, SpanContext(parent.trace_id, span_id, False, flags, parent.trace_state)

    def _bounded(self, attributes: Attributes) -> BoundedAttributes:
        """``attributes`` checked and bounded as the SDK's span holds them."""
        limits = self.limits
        return BoundedAttributes(
            limits.max_span_attributes,
            attributes,
            immutable=False,
            max_value_len=limits.max_span_attribute_length,
        )

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception,
        )  # fmt: skip
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current

    # -- batching ------------------------------------------------------------------------------

    def on_end(self, span: ReadableSpan) -> None:
        """A span of the provider has ended."""
        self._ended(span, span.instrumentation_scope)

    def _ended(self, span: Any, scope: InstrumentationScope | None = None) -> None:
        """A span has ended (it changes no more): queue it for the thread. One
        of the middleware's, unchanged, is encoded now (a few µs: its bytes
        are mostly made already, and a small ``bytes`` waits in the queue
        rather than the span and all it holds)."""
        queue = self._queue
        if len(queue) >= self.max_queue:
            if not self.dropped:
                log.warning("tracing: the span queue is full, spans are being dropped")
            self.dropped += 1
            return
        item: Any = span
        encoded = getattr(span, "_encoded", None)
        if (
            encoded is not None
            and span._events is None
            and span._links is None
            and span.status is _UNSET
        ):
            try:
                starter = span._starter
                item = starter.encode(span) if starter is not None else _encode_plain(span, encoded)
            except Exception as error:  # never into the request that ended it
                log.error("tracing: a span could not be encoded: %s", error)
                return
        queue.append((scope or self.scope, item))
        if len(queue) == self.max_batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            full = self._wake.wait(self.delay)
            self._wake.clear()
            # Woken by a full batch: full batches only (under load, spans keep
            # coming while one is sent; sending them as they come would make
            # batches of a few spans). The delay over: everything.
            self._send_all(full_only=full and not self._stopping)

    def _send_all(self, full_only: bool = False) -> bool:
        """Send the spans queued, a batch at a time (``full_only``: while a
        full batch is queued); whether every send succeeded."""
        queue, size, ok = self._queue, self.max_batch, True
        with self._sending:
            while len(queue) >= size if full_only else queue:
                batch = []
                for _ in range(min(size, len(queue))):
                    scope, item = queue.popleft()
                    try:
                        batch.append((scope, item if type(item) is bytes else encode_span(item)))
                    except Exception as error:  # one span, not the batch
                        log.error("tracing: a span could not be encoded: %s", error)
                if not batch:
                    continue
                data = encode_batch(self.resource, batch)
                try:
                    result = self.exporter.export_encoded(data, len(batch))
                except Exception:
                    log.exception("tracing: exporting %d spans failed", len(batch))
                    ok = False
                else:
                    ok = ok and result.name == "SUCCESS"
        return ok

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send what is queued now (from the calling thread)."""
        return self._send_all()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Send what is queued, stop the thread and the exporter."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._send_all()
        self.exporter.shutdown()  # type: ignore[no-untyped-call]
