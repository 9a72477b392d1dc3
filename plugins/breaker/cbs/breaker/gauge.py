"""The gauge ``cbs_breaker_state{service,verb}`` (0 closed, 1 half-open,
2 open) of one body, read from its :class:`~cbs.breaker.report.BreakerTable`
when scraped: a breaker's transition costs no prometheus_client call.

Imported only to register it in a body's metrics registry (cbs-metrics), so
prometheus_client is imported only where it is served anyway.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cbs.breaker.circuit import STATES
from cbs.breaker.report import BreakerTable

__all__ = ["BreakerCollector"]


class BreakerCollector(Collector):
    """The states of one body's breakers."""

    def __init__(self, table: BreakerTable) -> None:
        self.table = table

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "cbs_breaker_state",
            "Circuit breaker state of a CBS target: 0 closed, 1 half-open, 2 open",
            labels=["service", "verb"],
        )

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for (service, verb), state in sorted(self.table.states().items()):
            family.add_metric([service, verb], STATES.index(state))
        yield family

    def describe(self) -> Iterator[Metric]:
        yield self._family()
