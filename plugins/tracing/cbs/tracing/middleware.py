"""The tracing middleware: one span per request sent (CLIENT) and per request
handled (SERVER), named after the subject, W3C trace context in the headers.

Composed once per endpoint, and so is the choice of what to do. Given the
tracer of the body's ``TracerProvider`` (see :mod:`cbs.tracing.otel`), spans
are made and recorded through it. Without one, no span is made: the trace context a request
arrives with is made current and passed on to the requests made while handling
it, as OpenTelemetry's API alone does, for almost no cost.

Attributes follow OpenTelemetry's messaging conventions where they fit:

=====================================  =======================================
``messaging.system``                   the transport (``nats``, ``local``)
``messaging.operation.type``           ``send`` (client) or ``process`` (server)
``messaging.destination.name``         the subject, ``cbs.{service}.{verb}``
``messaging.consumer.group.name``      the queue group (server)
``messaging.message.id``               the envelope id (the correlation id)
``cbs.service``, ``cbs.verb``          the target
``cbs.schema``                         the request schema
``cbs.cell``                           the cell handling it (server)
``error.type``, ``cbs.error.code``     the error code, on failure
=====================================  =======================================
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from random import getrandbits, random
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, Setter, TextMapPropagator
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cbs.contracts import CbsError, Envelope
from cbs.kernel import ClientHandler, Served, ServerHandler, Target
from cbs.tracing.logs import ENVELOPE_ID

if TYPE_CHECKING:
    from cbs.tracing.otel import HeadSampling
    from cbs.tracing.recorder import LeanStarter

__all__ = [
    "HeaderGetter",
    "HeaderSetter",
    "context_fields",
    "error_code",
    "extract_w3c",
    "new_unsampled_traceparent",
    "traceparent_of",
    "traced_client",
    "traced_server",
    "tracer_of",
]

SCOPE = "cbs.tracing"
VERSION = "0.1.0"


class HeaderSetter(Setter[dict[str, str]]):
    """Writes trace context into the outgoing headers dict."""

    def set(self, carrier: dict[str, str], key: str, value: str) -> None:
        carrier[key] = value


class HeaderGetter(Getter[Mapping[str, str]]):
    """Reads trace context from incoming headers (NATS header names are
    case-sensitive; W3C's are lower case)."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


SETTER = HeaderSetter()
GETTER = HeaderGetter()
_EMPTY = Context()
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


#: Propagators that read only their ``fields`` and write nothing from an empty
#: context (W3C trace context and baggage, OpenTelemetry's default).
_EXACT = (TraceContextTextMapPropagator, W3CBaggagePropagator)


def context_fields(propagator: TextMapPropagator | None = None) -> frozenset[str] | None:
    """The header names the propagator reads, when they are all it reads and
    it writes nothing outside a trace; ``None`` for any other propagator (then
    every request's headers go through it, as before).

    With the default propagators, a request without ``traceparent``,
    ``tracestate`` or ``baggage`` has no context to extract, and a request
    sent outside any context has none to inject: both skip the propagator."""
    propagator = propagator or propagate.get_global_textmap()
    members: list[Any] = [propagator]
    if isinstance(propagator, CompositePropagator):
        members = list(propagator._propagators)
    if not members or not all(type(member) in _EXACT for member in members):
        return None
    return frozenset(propagator.fields)


#: A ``traceparent`` of version 00 as W3C trace context writes it: lower-case
#: hex, nothing around it or after it.
_CANONICAL = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}").fullmatch


def extract_w3c(headers: Mapping[str, str]) -> Context | None:
    """The context OpenTelemetry's W3C propagators extract from ``headers``
    that carry only a canonical ``traceparent`` (no ``tracestate``, no
    ``baggage``), at a third of their cost; ``None`` for anything else (then
    ask the propagators). Every traced request takes this path."""
    value = headers.get("traceparent")
    if value is None or "tracestate" in headers or "baggage" in headers:
        return None
    if type(value) is not str or _CANONICAL(value) is None:
        return None
    trace_id, span_id = int(value[3:35], 16), int(value[36:52], 16)
    if not trace_id or not span_id:
        return None
    ids = SpanContext(trace_id, span_id, True, TraceFlags(int(value[53:], 16)))
    return trace.set_span_in_context(NonRecordingSpan(ids), _EMPTY)


def _extractor(fields: frozenset[str] | None) -> Callable[[Mapping[str, str]], Context]:
    """What makes the parent context of a request's headers: the propagators,
    with :func:`extract_w3c` first when they are W3C's (``fields``)."""
    extract = propagate.extract
    if fields is None:
        return lambda headers: extract(headers, None, GETTER)
    return lambda headers: extract_w3c(headers) or extract(headers, None, GETTER)


def error_code(exc: BaseException) -> str:
    """The wire code a failure stands for (what the caller sees)."""
    if isinstance(exc, CbsError):
        return exc.code
    if isinstance(exc, asyncio.CancelledError):
        return "Cancelled"
    return "Internal"


def _fail(span: Span, exc: BaseException) -> None:
    if not span.is_recording():
        return
    code = error_code(exc)
    span.set_attribute("error.type", code)
    span.set_attribute("cbs.error.code", code)
    span.set_status(Status(StatusCode.ERROR, str(exc) if isinstance(exc, CbsError) else code))
    if not isinstance(exc, CbsError | asyncio.CancelledError):
        span.record_exception(exc)


def tracer_of(provider: trace.TracerProvider | None) -> trace.Tracer | None:
    """The tracer to record spans with, or ``None`` without a real
    ``TracerProvider`` (then CBS only passes trace context on)."""
    if provider is None or isinstance(provider, trace.ProxyTracerProvider):
        return None
    return provider.get_tracer(SCOPE, VERSION)


def _static(system: str, operation: str, subject: str, service: str, verb: str) -> dict[str, Any]:
    return {
        "messaging.system": system,
        "messaging.operation.type": operation,
        "messaging.destination.name": subject,
        "cbs.service": service,
        "cbs.verb": verb,
    }


def _span_starter(
    tracer: trace.Tracer, name: str, kind: SpanKind, static: dict[str, Any]
) -> Callable[[Context | None, Envelope], Span]:
    """What starts a request's span, child of a context: the recorder's
    unchecked path when ``tracer`` is a :class:`~cbs.tracing.recorder.SpanRecorder`
    (the endpoint's attributes encoded once), else ``tracer.start_span``."""
    trusted = getattr(tracer, "start_trusted_span", None)
    if trusted is not None:

        def start_trusted(parent: Context | None, request: Envelope) -> Span:
            more = {"cbs.schema": request.schema, "messaging.message.id": request.id}
            span: Span = trusted(name, parent, kind, static, more)
            return span

        return start_trusted
    start_span = tracer.start_span

    def start(parent: Context | None, request: Envelope) -> Span:
        attributes = {**static, "cbs.schema": request.schema, "messaging.message.id": request.id}
        return start_span(name, parent, kind, attributes)

    return start


#: The key of the current span in a context (OpenTelemetry's, found out
#: once): a context holding a span and nothing else is ``{SPAN_KEY: span}``.
_ONE_SPAN = trace.set_span_in_context(trace.INVALID_SPAN, _EMPTY)
SPAN_KEY: str | None = next(iter(_ONE_SPAN)) if len(_ONE_SPAN) == 1 else None


def _lean_starter(
    tracer: trace.Tracer,
    name: str,
    kind: SpanKind,
    static: dict[str, Any],
    fields: frozenset[str] | None,
) -> LeanStarter | None:
    """The recorder's lean path for an endpoint (see
    :class:`~cbs.tracing.recorder.LeanStarter`) when W3C's propagators are the
    only ones (``fields``): then a context holding only a span, and headers
    holding only a ``traceparent``, are all the middleware needs to read and
    write itself. ``None`` otherwise."""
    make = getattr(tracer, "lean_starter", None)
    if make is None or SPAN_KEY is None or fields is None or "traceparent" not in fields:
        return None
    starter: LeanStarter | None = make(name, kind, static)
    return starter


def _context_functions() -> tuple[
    Callable[[], Context], Callable[[Context], Any], Callable[[Any], None]
]:
    """OpenTelemetry's ``get_current``, ``attach`` and ``detach``; with its
    default runtime context, the ``ContextVar`` that one keeps the current
    context in, used directly (a third of the cost; ``detach`` still never
    raises, and logs as OpenTelemetry's does)."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    current = getattr(runtime, "_current_context", None)
    if type(runtime) is not ContextVarsRuntimeContext or not isinstance(current, ContextVar):
        return otel_context.get_current, otel_context.attach, otel_context.detach
    reset = current.reset

    def detach(token: Any) -> None:
        try:
            reset(token)
        except Exception:
            _otel_log.exception("Failed to detach context")

    return current.get, current.set, detach


#: OpenTelemetry's context logger: a failed detach is reported where it was.
_otel_log = logging.getLogger("opentelemetry.context")


#: A ``traceparent`` :func:`extract_w3c` takes, of a sampled span.
_SAMPLED_CANONICAL = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01").fullmatch
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def _unsampled(parent: Context) -> Context:
    """``parent`` with a new trace that is not sampled: what the SDK's sampler
    would give a trace it drops, without making the span."""
    ids = SpanContext(getrandbits(128) or 1, getrandbits(64) or 1, False, _NOT_SAMPLED)
    return trace.set_span_in_context(NonRecordingSpan(ids), parent)


def new_unsampled_traceparent() -> str:
    """The ``traceparent`` W3C trace context writes for a new trace that is
    not sampled (what ``inject`` gives for :func:`_unsampled`'s context, at
    a sixth of its cost: most requests take this path when sampling)."""
    return f"00-{getrandbits(128) or 1:032x}-{getrandbits(64) or 1:016x}-00"


def traceparent_of(ids: SpanContext) -> str:
    """The ``traceparent`` W3C trace context writes for a span ``ids``, when
    the context holds nothing else (no ``tracestate``, no baggage)."""
    return f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"


def _sampled(ids: SpanContext, ratio: float) -> bool:
    """Head sampling: follow the parent's decision; a new trace is sampled
    with probability ``ratio``."""
    if ids.is_valid:
        return ids.trace_flags.sampled
    return ratio >= 1.0 or random() < ratio


def traced_client(
    target: Target,
    call_next: ClientHandler,
    *,
    system: str = "",
    tracer: trace.Tracer | None,
    head: HeadSampling | None = None,
) -> ClientHandler:
    """Client middleware: a CLIENT span around the request (with ``tracer``);
    its context is injected into the outgoing headers. With ``head``, the
    middleware samples (see :class:`cbs.tracing.otel.HeadSampling`): a request
    not sampled makes no span and carries an unsampled context on."""
    inject = propagate.inject
    if tracer is None:
        get_current = otel_context.get_current
        exact = context_fields() is not None

        async def passing(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
            current = get_current()
            if current or not exact:  # an empty context has nothing to pass on
                inject(headers, current, SETTER)
            envelope_token = ENVELOPE_ID.set(request.id)
            try:
                return await call_next(request, headers, timeout)
            finally:
                ENVELOPE_ID.reset(envelope_token)

        return passing

    name = target.subject
    static = _static(system or "cbs", "send", name, target.service, target.verb)
    start_span = _span_starter(tracer, name, SpanKind.CLIENT, static)
    set_span = trace.set_span_in_context
    current_span = trace.get_current_span
    attach, detach = otel_context.attach, otel_context.detach
    fields = context_fields()
    parent_of = _extractor(fields)

    get_current = otel_context.get_current
    ratio = head.ratio if head is not None else 1.0
    w3c = fields is not None and "traceparent" in fields

    async def traced(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
        parent = None  # the current context
        ids = current_span().get_span_context()
        if headers and (fields is None or not fields.isdisjoint(headers)) and not ids.is_valid:
            # Outside a span, a context the caller passed in the headers
            # (a gateway forwarding its caller's, say) is the parent.
            parent = parent_of(headers)
            ids = current_span(parent).get_span_context()
        if head is not None and not _sampled(ids, ratio):
            ctx = parent if parent is not None else get_current()
            if ids.is_valid:
                inject(headers, ctx, SETTER)
            elif fields is not None and not ctx:  # W3C only, no baggage: one header
                headers["traceparent"] = new_unsampled_traceparent()
            else:
                inject(headers, _unsampled(ctx), SETTER)
            envelope_token = ENVELOPE_ID.set(request.id)
            try:
                return await call_next(request, headers, timeout)
            finally:
                ENVELOPE_ID.reset(envelope_token)
        span = start_span(parent, request)
        ctx = set_span(span)
        if w3c and parent is None and not get_current():
            # Outside any context, W3C trace context writes one header: the
            # new span's (no tracestate, no baggage).
            headers["traceparent"] = traceparent_of(span.get_span_context())
        else:
            inject(headers, ctx, SETTER)
        token = attach(ctx)
        envelope_token = ENVELOPE_ID.set(request.id)
        try:
            return await call_next(request, headers, timeout)
        except BaseException as exc:
            _fail(span, exc)
            raise
        finally:
            ENVELOPE_ID.reset(envelope_token)
            detach(token)
            span.end()

    starter = _lean_starter(tracer, name, SpanKind.CLIENT, static, fields)
    if starter is None:
        return traced
    from cbs.tracing.recorder import RecordedSpan

    general, root, child, key = traced, starter.root, starter.child, SPAN_KEY
    now, enter, leave = _context_functions()
    assert fields is not None

    async def lean(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
        # The common cases, read and written here: outside any context, or
        # in a recorded span's and nothing else, no context in the headers.
        # Anything else takes the path above.
        span: RecordedSpan | None = None
        if not headers or fields.isdisjoint(headers):
            current = now()
            if not current:
                if ratio < 1.0 and random() >= ratio:  # a new trace, not sampled
                    headers["traceparent"] = new_unsampled_traceparent()
                    envelope_token = ENVELOPE_ID.set(request.id)
                    try:
                        return await call_next(request, headers, timeout)
                    finally:
                        ENVELOPE_ID.reset(envelope_token)
                span = root({"cbs.schema": request.schema, "messaging.message.id": request.id})
            elif len(current) == 1:
                parent = current.get(key)  # type: ignore[arg-type]
                if type(parent) is RecordedSpan:
                    more = {"cbs.schema": request.schema, "messaging.message.id": request.id}
                    span = child(more, parent)
        if span is None:
            return await general(request, headers, timeout)
        headers["traceparent"] = span.traceparent()
        token = enter(Context({key: span}))  # type: ignore[dict-item]
        envelope_token = ENVELOPE_ID.set(request.id)
        try:
            return await call_next(request, headers, timeout)
        except BaseException as exc:
            _fail(span, exc)
            raise
        finally:
            ENVELOPE_ID.reset(envelope_token)
            leave(token)
            span.end()

    return lean


def traced_server(
    served: Served,
    call_next: ServerHandler,
    *,
    system: str = "",
    tracer: trace.Tracer | None,
    head: HeadSampling | None = None,
) -> ServerHandler:
    """Server middleware: a SERVER span around the handling (with ``tracer``),
    child of the context extracted from the request headers; current while
    the cell runs. With ``head``, a request not sampled makes no span; its
    context (unsampled) is current while the cell runs."""
    attach, detach = otel_context.attach, otel_context.detach
    fields = context_fields()
    parent_of = _extractor(fields)
    if tracer is None:

        async def passing(request: Envelope, headers: Mapping[str, str]) -> Envelope:
            envelope_token = ENVELOPE_ID.set(request.id)
            carries = headers and (fields is None or not fields.isdisjoint(headers))
            token = attach(parent_of(headers)) if carries else None
            try:
                return await call_next(request, headers)
            finally:
                if token is not None:
                    detach(token)
                ENVELOPE_ID.reset(envelope_token)

        return passing

    name = served.subject
    static = _static(
        system or "cbs", "process", name, served.cell.service, served.endpoint.verb
    ) | {"messaging.consumer.group.name": served.queue_group, "cbs.cell": served.cell.id}
    start_span = _span_starter(tracer, name, SpanKind.SERVER, static)
    set_span = trace.set_span_in_context

    current_span = trace.get_current_span
    ratio = head.ratio if head is not None else 1.0

    async def traced(request: Envelope, headers: Mapping[str, str]) -> Envelope:
        carries = headers and (fields is None or not fields.isdisjoint(headers))
        parent = parent_of(headers) if carries else _EMPTY
        if head is not None:
            ids = current_span(parent).get_span_context()
            if not _sampled(ids, ratio):
                token = attach(parent if ids.is_valid else _unsampled(parent))
                envelope_token = ENVELOPE_ID.set(request.id)
                try:
                    return await call_next(request, headers)
                finally:
                    ENVELOPE_ID.reset(envelope_token)
                    detach(token)
        span = start_span(parent, request)
        token = attach(set_span(span, parent))
        envelope_token = ENVELOPE_ID.set(request.id)
        try:
            return await call_next(request, headers)
        except BaseException as exc:
            _fail(span, exc)
            raise
        finally:
            ENVELOPE_ID.reset(envelope_token)
            detach(token)
            span.end()

    starter = _lean_starter(tracer, name, SpanKind.SERVER, static, fields)
    if starter is None:
        return traced
    general, root, remote_child, key = traced, starter.root, starter.remote_child, SPAN_KEY
    _, enter, leave = _context_functions()
    assert fields is not None

    async def lean(request: Envelope, headers: Mapping[str, str]) -> Envelope:
        # The common cases, read here: no context in the headers, or a
        # sampled traceparent and nothing else. Anything else takes the path above.
        more = {"cbs.schema": request.schema, "messaging.message.id": request.id}
        if not headers or fields.isdisjoint(headers):
            if ratio < 1.0 and random() >= ratio:  # a new trace, not sampled
                token = enter(_unsampled(_EMPTY))
                envelope_token = ENVELOPE_ID.set(request.id)
                try:
                    return await call_next(request, headers)
                finally:
                    ENVELOPE_ID.reset(envelope_token)
                    leave(token)
            span = root(more)
        else:
            value = headers.get("traceparent")
            if (
                type(value) is not str
                or "tracestate" in headers
                or "baggage" in headers
                or _SAMPLED_CANONICAL(value) is None
            ):
                return await general(request, headers)
            trace_id, span_id = value[3:35], value[36:52]
            if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
                return await general(request, headers)
            span = remote_child(more, trace_id, span_id)
        token = enter(Context({key: span}))  # type: ignore[dict-item]
        envelope_token = ENVELOPE_ID.set(request.id)
        try:
            return await call_next(request, headers)
        except BaseException as exc:
            _fail(span, exc)
            raise
        finally:
            ENVELOPE_ID.reset(envelope_token)
            leave(token)
            span.end()

    return lean
