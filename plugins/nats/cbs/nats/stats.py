"""Per-endpoint counters for discovery (``$SRV.STATS``), kept by the transport
as it answers each request: no middleware layer, no extra call per message.
Imports nothing from nats."""

from __future__ import annotations

from typing import Any

__all__ = ["EndpointStats", "StatsTable"]


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
