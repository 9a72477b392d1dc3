"""OpenTelemetry tracing for CBS (``cbs-tracing``).

The entry point (:mod:`cbs.tracing.plugin`) imports nothing heavy; OpenTelemetry
is imported when a body starts. See docs/observability.md.
"""
