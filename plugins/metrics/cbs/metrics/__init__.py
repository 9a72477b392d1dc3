"""Prometheus metrics, health endpoints and a status page for CBS (``cbs-metrics``).

The entry point (:mod:`cbs.metrics.plugin`) imports nothing heavy;
prometheus_client is imported when a body starts. See docs/observability.md.
"""
