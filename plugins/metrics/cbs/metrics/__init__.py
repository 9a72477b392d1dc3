"""Prometheus metrics, health endpoints and a status page for CBS (``cbs-metrics``).

The entry point (:mod:`cbs.metrics.plugin`) imports nothing heavy;
prometheus_client is imported when the body's registry is first read (its
endpoint starting, a scrape, an application asking for it), not when a body
starts. See docs/observability.md.

Every body has its own prometheus_client ``CollectorRegistry``. The body's
collectors are in it while the body is started, and taken out when it stops.
Another plugin adds per-body metrics through the :class:`MetricsRegistry`
capability when the body has started (and removes them when it has stopped)::

    from cbs.metrics import MetricsRegistry

    metrics = body.capabilities.get(MetricsRegistry)  # None: no cbs-metrics here
    if metrics is not None:
        remove = metrics.add(lambda: MyCollector(state))  # made when first read
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel import StashKey
from cbs.metrics.export import MetricsRegistry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from cbs.kernel import Body

__all__ = ["METRICS", "MetricsRegistry", "registry"]

#: The body's :class:`MetricsRegistry` (set by this plugin when the body first
#: starts, kept across restarts).
METRICS: StashKey[MetricsRegistry] = StashKey()


def registry(body: Body) -> CollectorRegistry | None:
    """The metrics registry of ``body`` (made now if nothing has read it yet),
    or ``None`` before its first start or when cbs-metrics is not wired into it."""
    metrics = body.stash.get(METRICS, None)
    return None if metrics is None else metrics.registry
