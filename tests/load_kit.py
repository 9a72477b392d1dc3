"""Bursts of requests to ``worker.work`` (the versioned test cells answer
``{"n": n, "version": ...}``) while something changes under them: what failed,
and which versions answered."""

from __future__ import annotations

import asyncio
from typing import Any


class WorkLoad:
    """Requests from ``caller``; every failure and every answering version kept."""

    def __init__(self, caller: Any, *, timeout: float = 10) -> None:
        self.caller = caller
        self.timeout = timeout
        self.failures: list[BaseException] = []
        self.versions: set[str] = set()

    async def one(self, n: int) -> None:
        try:
            reply = await self.caller.request(
                "worker", "work", {"n": n}, schema="test/v1/Job", timeout=self.timeout
            )
            assert reply["n"] == n
            self.versions.add(reply["version"])
        except BaseException as exc:
            self.failures.append(exc)

    async def burst(self, count: int = 500) -> list[asyncio.Future[None]]:
        """``count`` requests on their way (each has been sent or is queued to)."""
        requests = [asyncio.ensure_future(self.one(i)) for i in range(count)]
        await asyncio.sleep(0)
        return requests
