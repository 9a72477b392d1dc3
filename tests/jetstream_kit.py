"""Shared pieces of the cbs-jetstream tests: a recording cell with durable
verbs, and bounded waiting."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

from cbs.contracts import BadRequest, Internal
from cbs.kernel import Cell, CellRegistry, Config, current_request, hookimpl

SCHEMA = "sink/v1/Item"
#: Fast retries for tests: 50 ms, 100 ms, 200 ms, ...
FAST = {
    "jetstream_backoff": 0.05,
    "jetstream_backoff_max": 0.4,
    "jetstream_max_deliveries": 4,
    "drain_timeout": 5.0,
}


class Sink:
    """Plugin offering the cell ``sink`` (service ``sink``), whose durable verbs
    record every delivery by envelope id:

    * ``record``: succeeds;
    * ``flaky``: fails with ``Internal`` until the payload's ``fail`` count of
      deliveries is reached (``fail: -1``: always);
    * ``strict``: raises ``BadRequest``;
    * ``slow``: sleeps ``payload["sleep"]`` seconds.
    """

    def __init__(self, name: str = "sink", *, max_concurrency: int = 100) -> None:
        self.name = name
        self.seen: collections.Counter[str] = collections.Counter()
        self.payloads: dict[str, dict[str, Any]] = {}
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.headers: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
        self.running = 0
        self.peak = 0
        self.cell = Cell(
            "sink",
            category="storage",
            version="1.0.0",
            purpose="Records durable deliveries",
            max_concurrency=max_concurrency,
        )
        cell = self.cell

        def note(payload: dict[str, Any]) -> str:
            request = current_request()
            ident = request.envelope.id
            self.seen[ident] += 1
            self.payloads[ident] = payload
            self.times[ident].append(time.monotonic())
            self.headers[ident].append(dict(request.headers))
            return ident

        @cell.verb("record", schema=SCHEMA, durable=True)
        async def record(payload: dict[str, Any]) -> dict[str, Any]:
            note(payload)
            return {"ok": True}

        @cell.verb("flaky", schema=SCHEMA, durable=True)
        async def flaky(payload: dict[str, Any]) -> dict[str, Any]:
            ident = note(payload)
            fail = int(payload.get("fail", -1))
            if fail < 0 or self.seen[ident] <= fail:
                raise Internal("Not now")
            return {"ok": True}

        @cell.verb("strict", schema=SCHEMA, durable=True)
        async def strict(payload: dict[str, Any]) -> dict[str, Any]:
            note(payload)
            raise BadRequest("Never valid", details={"field": "anything"})

        @cell.verb("slow", schema=SCHEMA, durable=True)
        async def slow(payload: dict[str, Any]) -> dict[str, Any]:
            note(payload)
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                await asyncio.sleep(float(payload.get("sleep", 0.05)))
            finally:
                self.running -= 1
            return {"ok": True}

        @cell.verb("ask", schema=SCHEMA)
        async def ask(payload: dict[str, Any]) -> dict[str, Any]:
            return {"asked": payload.get("n")}

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cells.add(self.cell)


async def eventually(check: Callable[[], bool], seconds: float = 10.0, what: str = "") -> None:
    """Wait until ``check()`` holds, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g} s: {what or check}")
        await asyncio.sleep(0.02)
