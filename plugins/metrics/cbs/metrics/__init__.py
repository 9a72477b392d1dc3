"""Prometheus metrics, health endpoints and a status page for CBS (``cbs-metrics``).

The entry point (:mod:`cbs.metrics.plugin`) imports nothing heavy;
prometheus_client is imported when a body starts. See docs/observability.md.

Every body has its own prometheus_client ``CollectorRegistry``, made when the
body first starts and kept in its stash under :data:`METRICS_REGISTRY`. The
body's collectors are in it while the body is started, and taken out when it
stops. Another plugin adds per-body metrics by registering a collector there
when the body has started (and unregistering it when it has stopped)::

    from cbs.metrics import registry

    found = registry(body)  # None: cbs-metrics is not wired into this body
    if found is not None:
        found.register(my_collector)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel import StashKey

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from cbs.kernel import Body

__all__ = ["METRICS_REGISTRY", "registry"]

#: The body's own metrics registry (set by this plugin when the body starts).
METRICS_REGISTRY: StashKey[CollectorRegistry] = StashKey()


def registry(body: Body) -> CollectorRegistry | None:
    """The metrics registry of ``body``, or ``None`` before its first start or
    when cbs-metrics is not wired into it."""
    return body.stash.get(METRICS_REGISTRY, None)
