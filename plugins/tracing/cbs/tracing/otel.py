"""Choosing the ``TracerProvider`` a body records its spans with, and
setting up OpenTelemetry's SDK from the standard ``OTEL_*`` variables.

The provider belongs to the body; OpenTelemetry's global provider is never
set, so once a body has stopped the global state is what it was before.

1. One the application put in the body's stash under
   :data:`cbs.tracing.TRACER_PROVIDER` before the start: used as it is.
2. Else the global one, if the application installed one
   (``trace.set_tracer_provider``): used as it is.
3. Else, when there is somewhere to send spans (``OTEL_TRACES_EXPORTER``:
   ``otlp``, ``console``, ``none``, a comma-separated list; when unset, OTLP
   if ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
   is set; or the ``tracing_file`` option), one of the body's own, made when
   it starts and flushed and shut down when it has stopped. When it sends
   over OTLP only, with head sampling decided by the middleware (below) and
   span limits CBS's attributes pass, the middleware's spans are recorded by
   :class:`cbs.tracing.recorder.SpanRecorder`, which is also the provider's
   span processor.
4. Else none (and the SDK is not even imported): the middleware then makes no
   span, but passes incoming trace context on and stamps log records, for
   almost no cost.

``tracing_file`` adds a JSON-lines exporter to the provider while the body
runs; on a provider the body does not own, that exporter is switched off
when the body stops (an SDK provider cannot drop a span processor).

Head sampling of the body's own provider: ``OTEL_TRACES_SAMPLER`` unset or
``parentbased_always_on`` (record everything), or ``parentbased_traceidratio``
with ``OTEL_TRACES_SAMPLER_ARG`` (record that share of new traces), is decided
by the middleware itself (:class:`HeadSampling`): a request that is not
sampled, or whose caller's trace is not, never reaches the SDK, and carries
an unsampled ``traceparent`` on, so the services it calls do not record it
either. It costs about what tracing without a provider costs, where the SDK
would make a non-recording span for it (about half the price of a recorded
one). Any other sampler, and every provider the application gives, decide
through the SDK as OpenTelemetry documents.

The rest (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``, ``OTEL_PROPAGATORS``,
``OTEL_SDK_DISABLED``) is read by OpenTelemetry itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
from typing import TYPE_CHECKING

import attrs
from opentelemetry import trace

from cbs.kernel import Body, StashKey
from cbs.tracing import TRACER_PROVIDER

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from cbs.tracing.export import WhileRunning
    from cbs.tracing.recorder import SpanRecorder

__all__ = [
    "HeadSampling",
    "exporters_from_env",
    "head_sampling",
    "provider",
    "recorder",
    "start",
    "stop",
]

log = logging.getLogger("cbs.tracing")

#: service.name when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one.
DEFAULT_SERVICE_NAME = "cbs"

#: The provider the body's chains record with (``None``: pass context on only).
_ACTIVE: StashKey[trace.TracerProvider | None] = StashKey()
#: The provider the body made itself (shut down when it stops).
_OWN: StashKey[SdkTracerProvider] = StashKey()
#: The file exporter added to a provider the body does not own.
_FILE: StashKey[WhileRunning] = StashKey()
#: How the middleware samples for the body's own provider.
_HEAD: StashKey[HeadSampling] = StashKey()
#: What records the middleware's spans in place of the body's own provider.
_RECORDER: StashKey[SpanRecorder] = StashKey()


@attrs.frozen
class HeadSampling:
    """Parent-based head sampling decided by the middleware: a trace that
    starts here is recorded with probability ``ratio``; a request whose
    caller's trace is sampled is recorded, one whose caller's is not is not."""

    ratio: float = 1.0


def _sampling_from_env() -> HeadSampling | None:
    """The :class:`HeadSampling` that ``OTEL_TRACES_SAMPLER`` asks for, or
    ``None`` when the SDK's sampler must decide (any other sampler)."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if name == "parentbased_always_on":
        return HeadSampling(1.0)
    if name != "parentbased_traceidratio":
        return None
    raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "")
    try:
        ratio = float(raw)
    except ValueError:
        ratio = math.nan
    if not 0.0 <= ratio <= 1.0:
        log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a ratio from 0 to 1: using 1.0", raw)
        ratio = 1.0
    return HeadSampling(ratio)


def head_sampling(body: Body) -> HeadSampling | None:
    """How the middleware samples while ``body`` runs (``None``: the SDK decides)."""
    return body.stash.get(_HEAD, None)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _exporter_names() -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (see the module docstring)."""
    names = os.environ.get("OTEL_TRACES_EXPORTER")
    if names is None:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = "otlp" if endpoint else "none"
    chosen = (name.strip().lower() for name in names.split(","))
    return [name for name in chosen if name not in ("", "none")]


def exporters_from_env() -> list[SpanProcessor]:
    """Span processors for ``OTEL_TRACES_EXPORTER`` (see the module docstring).
    The SDK is imported only when there is an exporter to make."""
    processors: list[SpanProcessor] = []
    for name in _exporter_names():
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )

        if name == "otlp":
            protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                log.warning("OTLP protocol %r is not supported: using http/protobuf", protocol)
            # The SDK's OTLP/HTTP exporter, encoding spans at a tenth of its cost.
            from cbs.tracing.otlp_export import OtlpSpanExporter

            processors.append(BatchSpanProcessor(OtlpSpanExporter()))
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


def _file_processor(file: str) -> SimpleSpanProcessor:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from cbs.tracing.export import JsonLinesExporter

    return SimpleSpanProcessor(JsonLinesExporter(file))


def start(body: Body) -> None:
    """Choose the provider of ``body`` (see the module docstring); at
    ``cbs_body_starting``. Imports OpenTelemetry's SDK only when there is
    something to set up."""
    left = _forget(body)  # normally done when it stopped
    if left is not None:
        left.shutdown()
    file = body.config.get("tracing_file")
    chosen: trace.TracerProvider | None = body.stash.get(TRACER_PROVIDER, None)
    if chosen is None:
        chosen = trace.get_tracer_provider()
        if isinstance(chosen, trace.ProxyTracerProvider):  # nobody installed one
            chosen = None
    if chosen is None and not _truthy("OTEL_SDK_DISABLED") and (file or _exporter_names()):
        head = _sampling_from_env()
        # The middleware decides sampling, and OTLP is the only destination:
        # the recorder records the spans in place of the SDK.
        recorder = None if head is None or file else _recorder()
        processors = [recorder] if recorder is not None else exporters_from_env()
        if processors or file:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

            resource = recorder.resource if recorder is not None else _resource()
            if head is None:
                own = TracerProvider(resource=resource)  # the SDK's sampler decides
            else:
                # The middleware decides before a span is made; what reaches
                # the SDK is to be recorded.
                own = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
                body.stash[_HEAD] = head
            if recorder is not None:
                body.stash[_RECORDER] = recorder
            for processor in processors:
                own.add_span_processor(processor)
            if file:
                own.add_span_processor(_file_processor(file))
            body.stash[_OWN] = own
            chosen = own
            log.debug("tracing: the body's TracerProvider (%d exporters)", len(processors))
    elif file:
        from opentelemetry.sdk.trace import TracerProvider

        if isinstance(chosen, TracerProvider):
            from cbs.tracing.export import WhileRunning

            switch = WhileRunning(_file_processor(file))
            chosen.add_span_processor(switch)
            body.stash[_FILE] = switch
        else:
            log.warning("tracing: the TracerProvider in use cannot take the file exporter")
    body.stash[_ACTIVE] = chosen


def _recorder() -> SpanRecorder | None:
    """What records the middleware's spans when the body's own provider sends
    them over OTLP and nowhere else, and the span limits let the middleware's
    attributes through unchanged (see :mod:`cbs.tracing.recorder`); else
    ``None``: the SDK records them."""
    if _exporter_names() != ["otlp"]:
        return None
    from opentelemetry.sdk.trace import SpanLimits

    from cbs.tracing.otlp_export import FAST_EXPORT, OtlpSpanExporter
    from cbs.tracing.recorder import SpanRecorder, limits_allow

    limits = SpanLimits()
    if not FAST_EXPORT or not limits_allow(limits):
        return None
    from cbs.tracing.middleware import SCOPE, VERSION

    exporter = OtlpSpanExporter()
    return SpanRecorder(_resource(), exporter, scope=SCOPE, version=VERSION, limits=limits)


def provider(body: Body) -> trace.TracerProvider | None:
    """The provider ``body`` records its spans with while it is started."""
    return body.stash.get(_ACTIVE, None)


def recorder(body: Body) -> SpanRecorder | None:
    """What records the middleware's spans while ``body`` is started, in
    place of its provider (``None``: the provider's tracer does)."""
    return body.stash.get(_RECORDER, None)


def _forget(body: Body) -> SdkTracerProvider | None:
    """Forget the body's provider; switch its file exporter off. Returns the
    body's own provider (with its recorder, if any), still to be flushed and
    shut down."""
    if _ACTIVE in body.stash:
        del body.stash[_ACTIVE]
    if _HEAD in body.stash:
        del body.stash[_HEAD]
    if _RECORDER in body.stash:
        del body.stash[_RECORDER]
    if _FILE in body.stash:
        switch = body.stash[_FILE]
        del body.stash[_FILE]
        switch.shutdown()
    own = body.stash.get(_OWN, None)
    if own is not None:
        del body.stash[_OWN]
    return own


async def stop(body: Body, timeout: float = 5.0) -> None:
    """At ``cbs_body_stopped``: export the spans the body's own provider still
    holds, and shut it down."""
    own = _forget(body)
    if own is not None:
        await asyncio.to_thread(_shutdown, own, timeout)


def _shutdown(own: SdkTracerProvider, timeout: float) -> None:
    own.force_flush(int(timeout * 1000))
    own.shutdown()
