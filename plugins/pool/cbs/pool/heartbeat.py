"""The worker side of a pool: heartbeats on the pipe the supervisor gave
(``CBS_POOL_HEARTBEAT_FD``), with how busy the worker is.

``busy`` counts requests inside the server path; ``queue`` those of them
beyond their cell's pool (``threads`` or ``processes``), waiting for one.
When the supervisor is gone (the pipe is closed) the worker stops itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
from collections.abc import Mapping

import orjson

from cbs.contracts import Envelope
from cbs.kernel import Cell, Served, ServerHandler

__all__ = ["Heartbeat"]

log = logging.getLogger("cbs.pool")


class Heartbeat:
    def __init__(self, fd: int, every: float) -> None:
        self._fd = fd
        self._every = every
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[str, int] = {}
        self._capacity: dict[str, int] = {}
        self.state = "starting"

    def middleware(self, served: Served, inner: ServerHandler) -> ServerHandler:
        cell = served.cell
        key = f"{cell.id}.{served.endpoint.verb}"
        capacity = cell.max_concurrency
        pooled = not inspect.iscoroutinefunction(inspect.unwrap(served.endpoint.handler))
        if pooled and isinstance(cell, Cell) and cell.isolation != "none":
            capacity = cell.processes if cell.isolation == "process" else cell.threads
        self._capacity[key] = capacity
        inflight = self._inflight
        inflight.setdefault(key, 0)

        async def counted(request: Envelope, headers: Mapping[str, str]) -> Envelope:
            inflight[key] += 1
            try:
                return await inner(request, headers)
            finally:
                inflight[key] -= 1

        return counted

    def _line(self) -> bytes:
        busy = sum(self._inflight.values())
        queue = sum(max(0, n - self._capacity.get(k, n)) for k, n in self._inflight.items())
        return orjson.dumps({"state": self.state, "busy": busy, "queue": queue}) + b"\n"

    def beat(self) -> None:
        try:
            os.write(self._fd, self._line())
        except (BrokenPipeError, OSError):
            if self._task is not None:
                self._task.cancel()
                self._task = None
                log.warning("the supervisor is gone: stopping")
                os.kill(os.getpid(), signal.SIGTERM)

    def start(self) -> None:
        self.state = "serving"
        self.beat()
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            self.beat()

    def draining(self) -> None:
        self.state = "draining"
        self.beat()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
