"""Sidecars run by the body itself when no :class:`~cbs.spec.Scaler` is
there: each ``command`` of the spec as child processes of the body, ``replicas``
of them (default 1). A changed command starts the new processes first, then
stops the old ones; a stop is SIGTERM, then SIGKILL after ``GRACE`` seconds.
Every process is stopped by its pid when the body stops. A process that exits
is logged (WARNING, with its exit code) and not restarted: supervision is the
pool's job (cbs-pool)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

__all__ = ["LocalSidecars", "GRACE"]

log = logging.getLogger("cbs.spec")

GRACE = 10.0


class LocalSidecars:
    """The sidecar processes of one body, by name."""

    def __init__(self) -> None:
        self.running: dict[str, tuple[tuple[str, ...], list[asyncio.subprocess.Process]]] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    def pids(self, name: str) -> list[int]:
        return [p.pid for p in self.running.get(name, ((), []))[1]]

    async def scale(self, name: str, command: Sequence[str], n: int) -> int:
        command = tuple(command)
        before_command, before = self.running.get(name, ((), []))
        if command == before_command and len(before) == n:
            return n
        if command != before_command or n == 0:
            started = [await self._start(name, command) for _ in range(n)]
            self.running[name] = (command, started)
            await self._stop_all(before)
        elif n > len(before):
            more = [await self._start(name, command) for _ in range(n - len(before))]
            self.running[name] = (command, before + more)
        else:
            self.running[name] = (command, before[:n])
            await self._stop_all(before[n:])
        if n == 0:
            del self.running[name]
        return n

    async def _start(self, name: str, command: tuple[str, ...]) -> asyncio.subprocess.Process:
        try:
            process = await asyncio.create_subprocess_exec(*command)
        except OSError as exc:
            from cbs.spec.loader import SpecError

            raise SpecError(f"sidecar {name}: cannot start {command[0]}: {exc.strerror}") from None
        log.info("spec: sidecar %s started (pid %d)", name, process.pid)
        watcher = asyncio.ensure_future(self._watch(name, process))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return process

    async def _watch(self, name: str, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if any(process in procs for _, procs in self.running.values()):
            log.warning("spec: sidecar %s (pid %d) exited with %d", name, process.pid, code)

    async def _stop_all(self, processes: list[asyncio.subprocess.Process]) -> None:
        await asyncio.gather(*(self._stop(p) for p in processes))

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), GRACE)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def close(self) -> None:
        running, self.running = self.running, {}
        await self._stop_all([p for _, procs in running.values() for p in procs])
        for watcher in list(self._watchers):
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
