"""What the autoscaler reads: per-service in-flight and latency, measured by
this plugin's own server middleware (phase ``observe``, order 20: inside
metrics), and the durable-inbox lag (:class:`~cbs.spec.capabilities.QueueDepth`).
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

from cbs.spec.capabilities import QueueDepth

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from cbs.contracts import Envelope
    from cbs.kernel import Body, Served, ServerHandler
    from cbs.spec.balance import Balancer

__all__ = ["ServiceStats", "Stats", "JetStreamDepth", "PLACEMENT"]

#: Where the measuring middleware sits: observe phase, inside metrics (10).
PLACEMENT = ("observe", 20)
#: Latencies kept per service for the p95 (the most recent ones).
WINDOW = 512


class ServiceStats:
    """In-flight count and recent latencies of one service in this body."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.capacity = 1
        self.latencies: collections.deque[float] = collections.deque(maxlen=WINDOW)

    @property
    def busy(self) -> float:
        """In-flight requests as a fraction of ``max_concurrency``."""
        return self.in_flight / max(self.capacity, 1)

    def p95_ms(self) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return 1000.0 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class Stats:
    """Per-service stats of one body; ``middleware`` is its server factory."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.services: dict[str, ServiceStats] = {}
        self.clock = clock
        #: Told of each change of in-flight counts when balancing is on.
        self.balancer: Balancer | None = None

    def of(self, service: str) -> ServiceStats:
        return self.services.setdefault(service, ServiceStats())

    def middleware(self, served: Served, call_next: ServerHandler) -> ServerHandler:
        cell_id, service = served.cell.id, served.cell.service
        stats = self.of(service)
        stats.capacity = max(stats.capacity, served.cell.max_concurrency)
        clock = self.clock

        async def measured(envelope: Envelope, headers: Mapping[str, str]) -> Envelope:
            stats.in_flight += 1
            balancer = self.balancer
            if balancer is not None:
                balancer.load(cell_id, service, stats.in_flight, stats.capacity)
            started = clock()
            try:
                return await call_next(envelope, headers)
            finally:
                stats.in_flight -= 1
                stats.latencies.append(clock() - started)
                if balancer is not None:
                    balancer.load(cell_id, service, stats.in_flight, stats.capacity)

        return measured


class JetStreamDepth(QueueDepth):
    """``num_pending`` of the durable consumer of a verb, read on the body's
    NATS connection. Stream ``CBS_{service}``, consumer
    ``CBS_{service}_{verb}``: the names docs/jetstream.md documents."""

    def __init__(self, body: Body) -> None:
        self.body = body

    async def pending(self, service: str, verb: str) -> int | None:
        try:
            from cbs.nats import NatsConnection
        except ImportError:  # no NATS here: no durable inbox either
            return None
        conn = self.body.capabilities.get(NatsConnection)
        if conn is None:
            return None
        try:
            info: Any = await conn.jetstream().consumer_info(
                f"CBS_{service}", f"CBS_{service}_{verb}", timeout=1.0
            )
        except Exception:
            return None
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
