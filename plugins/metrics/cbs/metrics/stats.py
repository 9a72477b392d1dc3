"""Per-endpoint counters, kept by middleware in plain Python numbers.

The middleware runs on the body's event loop and only adds to integers and a
float: no lock, no label lookup, no prometheus_client call per message. The
collector (:mod:`cbs.metrics.collector`) turns the counters into Prometheus
metric families when ``/metrics`` is scraped.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Mapping

from cbs.contracts import CbsError, Envelope
from cbs.kernel import (
    ClientHandler,
    ClientMiddleware,
    Served,
    ServerHandler,
    ServerMiddleware,
    Target,
)

__all__ = [
    "BUCKETS",
    "BodyStats",
    "EndpointStats",
    "client_middleware",
    "error_code",
    "server_middleware",
]

#: Upper bounds of the latency histograms, in seconds (CBS requests often take
#: well under a millisecond, so the buckets start at 100 us).
BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def error_code(exc: BaseException) -> str:
    """The wire code a failure stands for (what the caller sees)."""
    if isinstance(exc, CbsError):
        return exc.code
    if isinstance(exc, asyncio.CancelledError):
        return "Cancelled"
    return "Internal"


class EndpointStats:
    """Counters of one subject, on one side (client or server)."""

    __slots__ = ("buckets", "errors", "in_flight", "labels", "requests", "seconds")

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.requests = 0  # finished requests, failed ones included
        self.in_flight = 0
        self.errors: dict[str, int] = {}  # code -> count
        self.buckets = [0] * (len(BUCKETS) + 1)  # per bucket (not cumulative); last: +Inf
        self.seconds = 0.0  # total latency

    def failed(self, exc: BaseException) -> None:
        code = error_code(exc)
        self.errors[code] = self.errors.get(code, 0) + 1

    def finished(self, elapsed: float) -> None:
        """One request left, after ``elapsed`` seconds."""
        self.in_flight -= 1
        self.requests += 1
        self.buckets[bisect_left(BUCKETS, elapsed)] += 1
        self.seconds += elapsed

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class BodyStats:
    """Everything one body counts: client and server endpoints by subject, and
    the cells it serves."""

    CLIENT_LABELS = ("service", "verb", "subject")
    SERVER_LABELS = ("cell", "service", "verb", "subject")

    def __init__(self) -> None:
        self.client: dict[str, EndpointStats] = {}
        self.server: dict[str, EndpointStats] = {}
        #: cell id -> (service, version) of every cell served since the body was built
        self.cells: dict[str, tuple[str, str]] = {}
        #: ids of the cells served right now
        self.up: set[str] = set()

    def cell_started(self, cell_id: str, service: str, version: str) -> None:
        self.cells[cell_id] = (service, version)
        self.up.add(cell_id)

    def cell_stopped(self, cell_id: str) -> None:
        self.up.discard(cell_id)

    def client_endpoint(self, target: Target) -> EndpointStats:
        found = self.client.get(target.subject)
        if found is None:
            found = EndpointStats((target.service, target.verb, target.subject))
            self.client[target.subject] = found
        return found

    def server_endpoint(self, served: Served) -> EndpointStats:
        found = self.server.get(served.subject)
        if found is None:
            labels = (served.cell.id, served.cell.service, served.endpoint.verb, served.subject)
            found = EndpointStats(labels)
            self.server[served.subject] = found
        return found


def client_middleware(stats: BodyStats) -> ClientMiddleware:
    """Counts requests sent, their errors by code, latency and in-flight."""

    def factory(target: Target, call_next: ClientHandler) -> ClientHandler:
        endpoint = stats.client_endpoint(target)
        clock = time.perf_counter

        async def measured(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
            endpoint.in_flight += 1
            began = clock()
            try:
                return await call_next(request, headers, timeout)
            except BaseException as exc:
                endpoint.failed(exc)
                raise
            finally:
                endpoint.finished(clock() - began)

        return measured

    return factory


def server_middleware(stats: BodyStats) -> ServerMiddleware:
    """Counts requests handled, their errors by code, latency and in-flight."""

    def factory(served: Served, call_next: ServerHandler) -> ServerHandler:
        endpoint = stats.server_endpoint(served)
        clock = time.perf_counter

        async def measured(request: Envelope, headers: Mapping[str, str]) -> Envelope:
            endpoint.in_flight += 1
            began = clock()
            try:
                return await call_next(request, headers)
            except BaseException as exc:
                endpoint.failed(exc)
                raise
            finally:
                endpoint.finished(clock() - began)

        return measured

    return factory
