"""The Prometheus side: one collector per body, in the body's own registry
(:class:`cbs.metrics.MetricsRegistry`), that reads the body's
:class:`~cbs.metrics.stats.BodyStats` when scraped.

Nothing goes into prometheus_client's default registry: two bodies of one
process count apart, and a stopped body's series are gone. The body's
``/metrics`` serves its registry together with the default registry
(prometheus_client's process and Python metrics, an application's own), see
:class:`Exposed`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cbs.kernel import TransportState
from cbs.metrics.stats import BUCKETS, BodyStats, EndpointStats

__all__ = ["CbsCollector", "Exposed"]

#: ``le`` label values, formatted as prometheus_client formats them.
_BOUNDS = [*(repr(float(b)) for b in BUCKETS), "+Inf"]


def _families(side: str, labels: list[str], endpoints: Iterable[EndpointStats]) -> list[Metric]:
    who = "sent by this body" if side == "client" else "handled by this body"
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


def _transport(state: TransportState | None) -> Iterator[Metric]:
    wrong = CounterMetricFamily(
        "cbs_client_wrong_replies",
        "Replies dropped because they answered no request waiting for them"
        " (another id, forged or malformed, or late)",
        labels=[],
    )
    malformed = CounterMetricFamily(
        "cbs_transport_malformed_messages",
        "Inbound messages the transport dropped because it could not parse them",
        labels=[],
    )
    refused = CounterMetricFamily(
        "cbs_server_refused_requests",
        "Requests answered Unavailable at once because their verb's queue of"
        " waiting requests was full (max_pending, max_pending_bytes)",
        labels=[],
    )
    if state is not None:
        wrong.add_metric([], state.wrong_replies)
        malformed.add_metric([], state.malformed_messages)
        refused.add_metric([], state.refused_requests)
    yield wrong
    yield malformed
    yield refused


def _build(stats: BodyStats | None) -> Iterator[Metric]:
    client = list(stats.client.values()) if stats is not None else []
    server = list(stats.server.values()) if stats is not None else []
    yield from _families("client", list(BodyStats.CLIENT_LABELS), client)
    yield from _families("server", list(BodyStats.SERVER_LABELS), server)
    instances = GaugeMetricFamily(
        "cbs_cell_instances_up",
        "Instances of a cell served by this body (summed over processes: instances up)",
        labels=["cell", "service", "version"],
    )
    cells = GaugeMetricFamily("cbs_cells_up", "Distinct cells served by this body", labels=[])
    if stats is not None:
        up = set(stats.up)
        for cell_id, (service, version) in sorted(list(stats.cells.items())):
            instances.add_metric([cell_id, service, version], int(cell_id in up))
        cells.add_metric([], len(up))
    yield instances
    yield cells


def _pool(groups: Sequence[Any]) -> Iterator[Metric]:
    """The groups of the pool this body supervises (cbs-pool's ``GroupStats``)."""
    labels = ["pool", "group", "language"]
    gauges = {
        "workers": GaugeMetricFamily(
            "cbs_pool_workers", "Worker processes wanted (cbs scale sets it)", labels=labels
        ),
        "alive": GaugeMetricFamily(
            "cbs_pool_workers_alive", "Worker processes running", labels=labels
        ),
        "serving": GaugeMetricFamily(
            "cbs_pool_workers_serving", "Workers whose last heartbeat said serving", labels=labels
        ),
        "busy": GaugeMetricFamily(
            "cbs_pool_busy", "Requests being handled by the group's workers", labels=labels
        ),
        "queue": GaugeMetricFamily(
            "cbs_pool_queue", "Requests waiting for a free thread or process", labels=labels
        ),
    }
    restarts = CounterMetricFamily(
        "cbs_pool_restarts",
        "Unplanned worker exits (crashes, kills, missed heartbeats)",
        labels=labels,
    )
    crash_loop = GaugeMetricFamily(
        "cbs_pool_crash_loop", "1 while the group is crash-looping", labels=labels
    )
    for group in groups:
        values = [group.pool, group.name, group.language]
        for key, family in gauges.items():
            family.add_metric(values, getattr(group, key))
        restarts.add_metric(values, group.restarts)
        crash_loop.add_metric(values, int(group.state == "crash-loop"))
    yield from gauges.values()
    yield restarts
    yield crash_loop


def _readiness(ready: bool | None) -> Metric:
    family = GaugeMetricFamily(
        "cbs_ready", "1 while the body is ready (what /readyz answers 200 to), else 0", labels=[]
    )
    if ready is not None:
        family.add_metric([], int(ready))
    return family


class CbsCollector(Collector):
    """Reads the counters of one body, of its transport (the
    :class:`~cbs.kernel.TransportState` capability) and of the pool it
    supervises (cbs-pool's ``PoolStats`` capability), when scraped."""

    def __init__(
        self,
        stats: BodyStats,
        transport: Callable[[], TransportState | None] = lambda: None,
        pool: Callable[[], Sequence[Any]] = lambda: (),
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.stats = stats
        self.transport = transport
        self.pool = pool
        self.ready = ready

    def collect(self) -> Iterator[Metric]:
        yield from _build(self.stats)
        yield from _transport(self.transport())
        yield from _pool(self.pool())
        yield _readiness(None if self.ready is None else self.ready())

    def describe(self) -> Iterator[Metric]:
        # The names, without samples, so that the registry refuses a clash.
        yield from _build(None)
        yield from _transport(None)
        yield from _pool(())
        yield _readiness(None)


class _Restricted(Collector):
    def __init__(self, parts: list[Collector]) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


class Exposed:
    """What one body's ``/metrics`` serves: its own registry, then
    prometheus_client's default registry. Has what prometheus_client's
    exposition uses of a registry (``collect``, and ``restricted_registry``
    for ``?name[]=`` queries)."""

    def __init__(self, own: CollectorRegistry, default: CollectorRegistry = REGISTRY) -> None:
        self.registries = [own, default]

    def collect(self) -> Iterator[Metric]:
        for registry in self.registries:
            yield from registry.collect()

    def restricted_registry(self, names: Iterable[str]) -> Collector:
        wanted = list(names)
        return _Restricted([r.restricted_registry(wanted) for r in self.registries])
