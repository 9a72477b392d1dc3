"""The durable inboxes of one body as Prometheus metrics, read when scraped:

* ``cbs_jetstream_consumer_pending{service,verb}``: stored requests of the
  verb not yet delivered to any instance (the consumer's ``num_pending``,
  the lag);
* ``cbs_jetstream_consumer_ack_pending{service,verb}``: delivered and not yet
  acknowledged (``num_ack_pending``);
* ``cbs_jetstream_consumer_redelivered{service,verb}``: of those, delivered
  more than once (``num_redelivered``);
* ``cbs_jetstream_dead_lettered_total{service,verb}``: requests this body
  sent to the dead letters.

The consumer figures are the server's, the same on every instance of the
service (aggregate them with ``max``); the runtime refreshes them every
:data:`cbs.jetstream.runtime.CONSUMER_INFO_PERIOD` seconds, so a scrape costs
no request to the server. Imported only to register the collector in a body's
metrics registry (cbs-metrics).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cbs.jetstream.runtime import JetStreamRuntime

__all__ = ["JetStreamCollector"]

_LABELS = ["service", "verb"]


class JetStreamCollector(Collector):
    """The consumers and dead letters of one body's durable inboxes."""

    def __init__(self, runtime: JetStreamRuntime | None) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "cbs_jetstream_consumer_pending",
            "Stored durable requests not yet delivered (the consumer's num_pending)",
            labels=_LABELS,
        )
        ack_pending = GaugeMetricFamily(
            "cbs_jetstream_consumer_ack_pending",
            "Durable requests delivered and not yet acknowledged (num_ack_pending)",
            labels=_LABELS,
        )
        redelivered = GaugeMetricFamily(
            "cbs_jetstream_consumer_redelivered",
            "Unacknowledged durable requests delivered more than once (num_redelivered)",
            labels=_LABELS,
        )
        dead = CounterMetricFamily(
            "cbs_jetstream_dead_lettered",
            "Durable requests this body sent to the dead letters",
            labels=_LABELS,
        )
        runtime = self.runtime
        if runtime is not None:
            for (service, verb), info in sorted(runtime.consumers.items()):
                pending.add_metric([service, verb], info[0])
                ack_pending.add_metric([service, verb], info[1])
                redelivered.add_metric([service, verb], info[2])
            for (service, verb), count in sorted(runtime.dead_lettered.items()):
                dead.add_metric([service, verb], count)
        yield pending
        yield ack_pending
        yield redelivered
        yield dead

    def describe(self) -> Iterator[Metric]:
        yield from JetStreamCollector(None).collect()
