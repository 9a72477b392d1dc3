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
        #: What ``add`` was given, by the token its remover holds.
        self._makers: dict[object, Callable[[], Collector]] = {}
        #: The collectors made from them, once the registry is made.
        self._made: dict[object, Collector] = {}

    @property
    def made(self) -> bool:
        """Whether the registry exists (something has read it)."""
        return self._registry is not None

    @property
    def registry(self) -> CollectorRegistry:
        """The registry, made with every collector added so far on first use."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry()
            for token in self._makers:
                self._make(token)
        return self._registry

    def add(self, make: Callable[[], Collector]) -> Callable[[], None]:
        """Put the collector ``make()`` returns in the registry: at once when
        the registry is made, else when it is. Returns a function that takes
        it out again (calling it twice does nothing more)."""
        token = object()
        self._makers[token] = make
        if self._registry is not None:
            self._make(token)

        def remove() -> None:
            self._makers.pop(token, None)
            collector = self._made.pop(token, None)
            if collector is not None and self._registry is not None:
                self._registry.unregister(collector)

        return remove

    def _make(self, token: object) -> None:
        assert self._registry is not None
        collector = self._makers[token]()
        self._registry.register(collector)
        self._made[token] = collector
