"""OpenTelemetry tracing for CBS (``cbs-tracing``).

The entry point (:mod:`cbs.tracing.plugin`) imports nothing heavy; OpenTelemetry
is imported when a body starts. See docs/observability.md.

The ``TracerProvider`` belongs to the body; the plugin never sets
OpenTelemetry's global one. To give one body a provider of its own (a test
collecting spans, say), put it in the body's stash before the start::

    from cbs.tracing import TRACER_PROVIDER

    body.stash[TRACER_PROVIDER] = provider
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel import StashKey

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from cbs.kernel import Body

__all__ = ["TRACER_PROVIDER", "tracer_provider"]

#: A provider the application gives a body (used as it is, never shut down by CBS).
TRACER_PROVIDER: StashKey[TracerProvider] = StashKey()


def tracer_provider(body: Body) -> TracerProvider | None:
    """The provider ``body`` records spans with while it is started: the one
    given under :data:`TRACER_PROVIDER`, else the global one an application
    installed, else the body's own (when exporters are configured), else
    ``None`` (trace context is only passed on)."""
    from cbs.tracing import otel

    return otel.provider(body)
