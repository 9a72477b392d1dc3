"""The Prometheus side: one collector per process, in prometheus_client's
default registry, that reads the counters of every body's
:class:`~cbs.metrics.stats.BodyStats` when scraped.

Because it lives in the default registry, ``/metrics`` also serves whatever
else is registered there: prometheus_client's process and Python metrics, and
the metrics of other plugins (a circuit breaker's state gauge, say). A plugin
adds metrics by creating them with prometheus_client as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cbs.metrics.stats import BUCKETS, BodyStats, EndpointStats

__all__ = ["CbsCollector", "collector", "track"]

#: ``le`` label values, formatted as prometheus_client formats them.
_BOUNDS = [*(repr(float(b)) for b in BUCKETS), "+Inf"]


def _families(side: str, labels: list[str], endpoints: Iterable[EndpointStats]) -> list[Metric]:
    who = "sent by this process" if side == "client" else "handled by this process"
    requests = CounterMetricFamily(
        f"cbs_{side}_requests", f"CBS requests {who}, failed ones included", labels=labels
    )
    errors = CounterMetricFamily(
        f"cbs_{side}_errors",
        f"CBS requests {who} that failed, by error code",
        labels=[*labels, "code"],
    )
    latency = HistogramMetricFamily(
        f"cbs_{side}_request_duration_seconds",
        f"Latency of CBS requests {who}, in seconds",
        labels=labels,
    )
    in_flight = GaugeMetricFamily(
        f"cbs_{side}_requests_in_flight", f"CBS requests {who} right now", labels=labels
    )
    merged: dict[tuple[str, ...], list[EndpointStats]] = {}
    for endpoint in endpoints:
        merged.setdefault(endpoint.labels, []).append(endpoint)
    for values, group in sorted(merged.items()):
        label_values = list(values)
        requests.add_metric(label_values, sum(e.requests for e in group))
        codes: dict[str, int] = {}
        for e in group:
            for code, count in list(e.errors.items()):
                codes[code] = codes.get(code, 0) + count
        for code, count in sorted(codes.items()):
            errors.add_metric([*label_values, code], count)
        cumulative, running = [], 0
        for i, bound in enumerate(_BOUNDS):
            running += sum(e.buckets[i] for e in group)
            cumulative.append((bound, float(running)))
        latency.add_metric(label_values, cumulative, sum(e.seconds for e in group))
        in_flight.add_metric(label_values, sum(e.in_flight for e in group))
    return [requests, errors, latency, in_flight]


def _build(bodies: list[BodyStats]) -> Iterator[Metric]:
    client = [e for b in bodies for e in list(b.client.values())]
    server = [e for b in bodies for e in list(b.server.values())]
    yield from _families("client", list(BodyStats.CLIENT_LABELS), client)
    yield from _families("server", list(BodyStats.SERVER_LABELS), server)
    instances = GaugeMetricFamily(
        "cbs_cell_instances_up",
        "Instances of a cell served by this process (summed over processes: instances up)",
        labels=["cell", "service", "version"],
    )
    counted: dict[tuple[str, str, str], int] = {}
    for b in bodies:
        up = set(b.up)
        for cell_id, (service, version) in list(b.cells.items()):
            key = (cell_id, service, version)
            counted[key] = counted.get(key, 0) + (cell_id in up)
    for key, count in sorted(counted.items()):
        instances.add_metric(list(key), count)  # 0 once stopped: the series stays
    yield instances
    cells = GaugeMetricFamily("cbs_cells_up", "Distinct cells served by this process", labels=[])
    if bodies:
        cells.add_metric([], len({key[0] for key, count in counted.items() if count}))
    yield cells


class CbsCollector(Collector):
    """Reads the counters of the bodies it tracks (summed, when two bodies of
    one process count the same subject)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: list[BodyStats] = []

    def track(self, stats: BodyStats) -> None:
        with self._lock:
            if not any(s is stats for s in self._bodies):
                self._bodies.append(stats)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            bodies = list(self._bodies)
        return _build(bodies)

    def describe(self) -> Iterator[Metric]:
        # The names, without samples, so that the registry refuses a clash.
        return _build([])


_registered_lock = threading.Lock()
_collector: CbsCollector | None = None


def collector() -> CbsCollector:
    """The process's collector, registered in the default registry at first use."""
    global _collector
    with _registered_lock:
        if _collector is None:
            created = CbsCollector()
            REGISTRY.register(created)
            _collector = created
        return _collector


def track(stats: BodyStats) -> None:
    """Include a body's counters in ``/metrics`` (idempotent)."""
    collector().track(stats)
