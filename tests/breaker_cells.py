"""A cell that fails on demand, for the cbs-breaker tests: it counts the
requests that reach it and keeps their headers."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Mapping
from typing import Any

from cbs.contracts import BadRequest, Internal, NotFound, Unavailable
from cbs.kernel import Cell, CellRegistry, Config, current_request, hookimpl

SCHEMA = "flaky/v1/Any"


class Flaky:
    """Plugin with one cell, service ``flaky``: verb ``work`` (not idempotent)
    and verb ``read`` (``idempotent=True``). ``mode`` says how every call
    ends: ``ok``, ``fail`` (a crash: ``Internal``), ``slow`` (sleeps ``delay``
    seconds, then ok), ``unavailable``, ``bad``, ``missing`` (``NotFound``);
    ``script`` modes, if any, are used first, one per call."""

    def __init__(self, service: str = "flaky") -> None:
        self.name = f"flaky_cell_{service}"
        self.mode = "ok"
        self.script: list[str] = []
        self.delay = 5.0
        self.calls: collections.Counter[str] = collections.Counter()
        self.seen: list[tuple[str, float, Mapping[str, str]]] = []  # verb, time.time(), headers
        self.cancelled = 0
        self.cell = Cell(service, category="logic", version="1.0.0", purpose="Fails on demand")
        self.cell.add_verb("work", self._work, schema=SCHEMA)
        self.cell.add_verb("read", self._read, schema=SCHEMA, idempotent=True)

    async def _work(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._run("work")

    async def _read(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._run("read")

    async def _run(self, verb: str) -> dict[str, Any]:
        self.calls[verb] += 1
        self.seen.append((verb, time.time(), dict(current_request().headers)))
        mode = self.script.pop(0) if self.script else self.mode
        if mode == "fail":
            raise RuntimeError("boom")
        if mode == "internal":
            raise Internal()
        if mode == "unavailable":
            raise Unavailable("Busy")
        if mode == "bad":
            raise BadRequest("No good")
        if mode == "missing":
            raise NotFound("No such thing")
        if mode == "slow":
            try:
                await asyncio.sleep(self.delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return {"verb": verb, "n": self.calls[verb]}

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cells.add(self.cell)
