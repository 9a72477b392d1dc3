"""A JSON-lines span exporter, for the ``tracing_file`` option
(``CBS_TRACING_FILE``), and a span processor that can be switched off."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["JsonLinesExporter", "WhileRunning"]

log = logging.getLogger("cbs.tracing")


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file as one line of OpenTelemetry's JSON form
    (``ReadableSpan.to_json``). For debugging and tests, with a
    ``SimpleSpanProcessor``: a span is on disk once it has ended.

    The file is opened (for appending) here, so a path that cannot be written
    raises ``OSError`` at set-up, not at the first span."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._out: IO[str] | None = self.path.open("a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
        try:
            with self._lock:
                if self._out is None:
                    self._out = self.path.open("a", encoding="utf-8")
                self._out.write(lines)
                self._out.flush()
        except OSError as exc:
            log.error(
                "cannot write spans to %s: %s",
                self.path,
                exc.strerror or exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None


class WhileRunning(SpanProcessor):
    """Forwards to ``inner`` until :meth:`shutdown`, then does nothing: what a
    body leaves in a ``TracerProvider`` it does not own (an SDK provider
    cannot drop a span processor)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner: SpanProcessor | None = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        inner = self.inner
        if inner is not None:
            inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        inner = self.inner
        if inner is not None:
            inner.on_end(span)

    def shutdown(self) -> None:
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        inner = self.inner
        return True if inner is None else inner.force_flush(timeout_millis)
