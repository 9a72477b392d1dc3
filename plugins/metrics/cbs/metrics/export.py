"""The body's metrics registry, offered to other plugins as a capability.

prometheus_client takes about 40 ms to import (its exposition module brings
``http.server``). A body that serves no endpoint and is never scraped needs
none of it, so collectors are handed over as functions that make them, and
the ``CollectorRegistry`` is made, with every collector handed over so far,
the first time something reads it: the endpoint starting, an application
asking :func:`cbs.metrics.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cbs.kernel import Capability

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

__all__ = ["MetricsRegistry"]


class MetricsRegistry(Capability):
    """One body's prometheus_client registry (cbs-metrics offers it while the
    body runs; it lasts across restarts, so counters go on). Another plugin
    adds its collector when the body has started and removes it when it has
    stopped::

        metrics = body.capabilities.get(MetricsRegistry)  # None: no cbs-metrics
        if metrics is not None:
            remove = metrics.add(lambda: MyCollector(state))
    """

    provided_by = "cbs-metrics"

    def __init__(self) -> None:
        self._registry: CollectorRegistry | None = None
        #: Collectors handed over, by the token ``add`` returned a remover for;
        #: a maker not called yet while the registry is not made.
        self._added: dict[object, Collector | Callable[[], Collector]] = {}

    @property
    def made(self) -> bool:
        """Whether the registry exists (something has read it)."""
        return self._registry is not None

    @property
    def registry(self) -> CollectorRegistry:
        """The registry, made with every collector added so far on first use."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry()
            for token, make in list(self._added.items()):
                collector = make()  # type: ignore[operator]
                registry.register(collector)
                self._added[token] = collector
            self._registry = registry
        return self._registry

    def add(self, make: Callable[[], Collector]) -> Callable[[], None]:
        """Put the collector ``make()`` returns in the registry: at once when
        the registry is made, else when it is. Returns a function that takes
        it out again (calling it twice does nothing more)."""
        token = object()
        if self._registry is None:
            self._added[token] = make
        else:
            collector = make()
            self._registry.register(collector)
            self._added[token] = collector

        def remove() -> None:
            added = self._added.pop(token, None)
            if added is not None and self._registry is not None:
                self._registry.unregister(added)  # type: ignore[arg-type]

        return remove
