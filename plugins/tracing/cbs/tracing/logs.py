"""Trace and envelope ids on log records.

Every record made while a request is sent or handled gets three attributes:

* ``otelTraceID`` (32 hex digits) and ``otelSpanID`` (16), as OpenTelemetry's
  logging instrumentation names them; ``"0"`` outside a span;
* ``cbs_envelope_id``: the id of the envelope being sent or handled (the
  correlation id), ``""`` outside a request.

Use them in a format string (``%(otelTraceID)s``) or a JSON formatter. Plain
``logging.Formatter`` handlers of the root logger (what ``logging.basicConfig``
and the ``cbs`` command line install) can also be made to append
``[trace_id=... envelope_id=...]`` to lines logged inside a request.

Both change process-wide ``logging`` state, so they are held by the bodies
started with the plugin (:func:`hold`) and undone when the last of them has
stopped (:func:`release`).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import get_current_span

from cbs.kernel import Body, StashKey

__all__ = [
    "ENVELOPE_ID",
    "IdsFormatter",
    "add_ids_to_text_logs",
    "hold",
    "install_record_factory",
    "release",
    "uninstall",
]

#: The envelope id of the request being sent or handled in this context.
ENVELOPE_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "cbs_tracing_envelope_id", default=""
)

_lock = threading.Lock()
#: (ours, the factory it wraps) while installed
_factory: tuple[Callable[..., logging.LogRecord], Callable[..., logging.LogRecord]] | None = None
#: formatters wrapped by add_ids_to_text_logs: (handler, our formatter)
_wrapped: list[tuple[logging.Handler, IdsFormatter]] = []
_holders = 0
_HELD: StashKey[bool] = StashKey()


def install_record_factory() -> None:
    """Wrap the log record factory (idempotent; :func:`uninstall` undoes it)."""
    global _factory
    if _factory is not None:
        return
    previous = logging.getLogRecordFactory()

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = get_current_span().get_span_context()
        if ctx.is_valid:
            record.otelTraceID = format(ctx.trace_id, "032x")
            record.otelSpanID = format(ctx.span_id, "016x")
        else:
            record.otelTraceID = record.otelSpanID = "0"
        record.cbs_envelope_id = ENVELOPE_ID.get()
        return record

    logging.setLogRecordFactory(make_record)
    _factory = (make_record, previous)


class IdsFormatter(logging.Formatter):
    """Formats with ``inner``, then appends the ids to the first line."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        trace_id = getattr(record, "otelTraceID", "0")
        envelope_id = getattr(record, "cbs_envelope_id", "")
        ids = []
        if trace_id != "0":
            ids.append(f"trace_id={trace_id}")
        if envelope_id:
            ids.append(f"envelope_id={envelope_id}")
        if not ids:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{' '.join(ids)}]{newline}{rest}"


def add_ids_to_text_logs() -> None:
    """Wrap the formatter of each root handler that uses a plain
    ``logging.Formatter``; other formatters (JSON, colours) are left alone."""
    for handler in logging.getLogger().handlers:
        if type(handler.formatter) is logging.Formatter:
            wrapping = IdsFormatter(handler.formatter)
            handler.setFormatter(wrapping)
            _wrapped.append((handler, wrapping))


def uninstall() -> None:
    """Put back the record factory and the formatters, where nobody changed
    them since (a factory installed on top of ours stays, and so does ours)."""
    global _factory
    if _factory is not None:
        ours, previous = _factory
        if logging.getLogRecordFactory() is ours:
            logging.setLogRecordFactory(previous)
            _factory = None
    for handler, wrapping in _wrapped:
        if handler.formatter is wrapping:
            handler.setFormatter(wrapping.inner)
    _wrapped.clear()


def hold(body: Body, ids_in_text: bool) -> None:
    """At a body's start: install the record factory (and, with
    ``ids_in_text``, wrap plain formatters) unless already done."""
    global _holders
    with _lock:
        if _HELD not in body.stash:
            body.stash[_HELD] = True
            _holders += 1
        install_record_factory()
        if ids_in_text:
            add_ids_to_text_logs()


def release(body: Body) -> None:
    """When a body has stopped: undo :func:`hold` once no body holds it."""
    global _holders
    with _lock:
        if _HELD not in body.stash:
            return
        del body.stash[_HELD]
        _holders -= 1
        if _holders == 0:
            uninstall()
