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
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from opentelemetry.trace import get_current_span

__all__ = ["ENVELOPE_ID", "IdsFormatter", "add_ids_to_text_logs", "install_record_factory"]

#: The envelope id of the request being sent or handled in this context.
ENVELOPE_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "cbs_tracing_envelope_id", default=""
)

_installed = False


def install_record_factory() -> None:
    """Wrap the log record factory once per process (idempotent)."""
    global _installed
    if _installed:
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
    _installed = True


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
            handler.setFormatter(IdsFormatter(handler.formatter))
