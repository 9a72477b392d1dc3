"""Per-endpoint counters for discovery: a server middleware composed once per
endpoint (no per-message hook call). Imports nothing from nats, so that
registering it costs no start-up time."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from cbs.contracts import CbsError, Envelope
from cbs.kernel import Served, ServerHandler

__all__ = ["EndpointStats", "StatsTable", "stats_middleware"]


class EndpointStats:
    """Counters of one served endpoint, as ADR-32 reports them."""

    __slots__ = ("last_error", "num_errors", "num_requests", "processing_time")

    def __init__(self) -> None:
        self.num_requests = 0
        self.num_errors = 0
        self.processing_time = 0  # nanoseconds, total
        self.last_error = ""

    def to_dict(self) -> dict[str, Any]:
        n = self.num_requests
        return {
            "num_requests": n,
            "num_errors": self.num_errors,
            "processing_time": self.processing_time,
            "average_processing_time": self.processing_time // n if n else 0,
            "last_error": self.last_error,
            "data": None,
        }


StatsTable = dict[str, EndpointStats]  # subject -> stats


def stats_middleware(table: StatsTable) -> Callable[[Served, ServerHandler], ServerHandler]:
    """A server middleware factory that counts requests, errors and time."""

    def factory(served: Served, call_next: ServerHandler) -> ServerHandler:
        stats = table.setdefault(served.subject, EndpointStats())
        clock = time.perf_counter_ns

        async def counted(request: Envelope, headers: Mapping[str, str]) -> Envelope:
            began = clock()
            try:
                return await call_next(request, headers)
            except BaseException as exc:
                stats.num_errors += 1
                code = exc.code if isinstance(exc, CbsError) else "Internal"
                stats.last_error = code
                raise
            finally:
                stats.num_requests += 1
                stats.processing_time += clock() - began

        return counted

    return factory
