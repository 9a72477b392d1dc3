"""Setting up OpenTelemetry's SDK from the standard ``OTEL_*`` variables.

* An application (or a test) that set its own ``TracerProvider`` keeps it: CBS
  spans go to it, and only ``CBS_TRACING_FILE`` adds an exporter to it.
* Otherwise a ``TracerProvider`` is installed when there is somewhere to send
  spans: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``; a
  comma-separated list), or, when that is unset, OTLP if
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is
  set, plus the JSON-lines file of the ``tracing_file`` option.
* With nowhere to send spans, none is installed (and the SDK is not even
  imported): the middleware then makes no span, but passes incoming trace
  context on and stamps log records, for almost no cost.

The rest (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``,
``OTEL_PROPAGATORS``, ``OTEL_SDK_DISABLED``) is read by OpenTelemetry itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING

from opentelemetry import trace

from cbs.kernel import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from cbs.tracing.export import JsonLinesExporter

__all__ = ["configure", "exporters_from_env", "flush", "is_recording"]

log = logging.getLogger("cbs.tracing")

#: service.name when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one.
DEFAULT_SERVICE_NAME = "cbs"

_lock = threading.Lock()
_own_provider: TracerProvider | None = None
_files: set[str] = set()


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def exporters_from_env() -> list[SpanProcessor]:
    """Span processors for ``OTEL_TRACES_EXPORTER`` (see the module docstring)."""
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    names = os.environ.get("OTEL_TRACES_EXPORTER")
    if names is None:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = "otlp" if endpoint else "none"
    processors: list[SpanProcessor] = []
    for name in (n.strip().lower() for n in names.split(",")):
        if name in ("", "none"):
            continue
        if name == "otlp":
            protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                log.warning("OTLP protocol %r is not supported: using http/protobuf", protocol)
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            # stderr: stdout belongs to the command (cbs call prints the reply there).
            processors.append(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        else:
            log.warning("OTEL_TRACES_EXPORTER: unknown exporter %r ignored", name)
    return processors


def _resource() -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create({"process.pid": os.getpid()})
    name = str(resource.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def _file_exporter(file: str) -> JsonLinesExporter:
    """The ``tracing_file`` exporter, its file open: before anything is installed,
    so a path that cannot be written stops start-up with one line."""
    from cbs.tracing.export import JsonLinesExporter

    try:
        return JsonLinesExporter(file)
    except OSError as exc:
        raise ConfigError(
            f"bad tracing_file: cannot write spans to {file} ({exc.strerror or exc})"
        ) from None


def configure(file: str | None = None) -> None:
    """Install a ``TracerProvider`` if there is somewhere to send spans and no
    one installed one yet; add the JSON-lines ``file`` exporter. Idempotent.
    Imports OpenTelemetry's SDK only when there is something to set up."""
    global _own_provider
    with _lock:
        if _truthy("OTEL_SDK_DISABLED"):
            return
        exporter = _file_exporter(file) if file and file not in _files else None
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            processors = exporters_from_env()
            if not processors and not file:
                return  # nowhere to send spans: the middleware only propagates
            from opentelemetry.sdk.trace import TracerProvider

            provider = TracerProvider(resource=_resource())
            for processor in processors:
                provider.add_span_processor(processor)
            trace.set_tracer_provider(provider)
            _own_provider = provider
            log.debug("tracing: TracerProvider installed (%d exporters)", len(processors))
        if exporter is not None and file is not None:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor

            if isinstance(provider, TracerProvider):
                provider.add_span_processor(SimpleSpanProcessor(exporter))
                _files.add(file)
            else:
                exporter.shutdown()
                log.warning("tracing: the installed TracerProvider cannot take the file exporter")


def is_recording() -> bool:
    """Whether a real ``TracerProvider`` is installed (ours or the application's)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


async def flush(timeout: float = 5.0) -> None:
    """Export the spans our provider still holds (the SDK also does at exit)."""
    provider = _own_provider
    if provider is not None:
        await asyncio.to_thread(provider.force_flush, int(timeout * 1000))
