"""Notice a dead read loop within a fraction of a second, and reconnect.

nats-py reads from the server in one task (``Client._reading_task``). When
that task ends on an exception its read loop does not expect, the client
still says it is connected, keeps sending (and answering nothing), and only
ping-stale detection (``max_outstanding_pings`` x ``ping_interval``, minutes)
would notice. :class:`ReadLoopWatchdog` checks every ``interval`` seconds and,
when the task has ended while the client is connected, forces a reconnect:
nats-py opens a fresh connection and restores every subscription.

Reads nats-py's ``_reading_task`` and ``_status`` (no public equivalent in
nats-py 2.16); see ``_header_fix`` for the failure that made this necessary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client

__all__ = ["ReadLoopWatchdog", "is_receiving"]

log = logging.getLogger("cbs.nats")


def _read_loop_dead(nc: Client) -> bool:
    task = nc._reading_task
    return task is None or task.done()


def is_receiving(nc: Client) -> bool:
    """Connected, and the read loop runs (messages reach subscriptions)."""
    return nc.is_connected and not _read_loop_dead(nc)


class ReadLoopWatchdog:
    """Forces a reconnect of ``nc`` when its read loop dies while connected."""

    def __init__(self, nc: Client, *, interval: float = 0.25) -> None:
        self.nc = nc
        self.interval = interval
        #: Reconnects forced so far.
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._watch(), name="cbs-nats-read-loop-watchdog"
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        nc = self.nc
        while not nc.is_closed:
            await asyncio.sleep(self.interval)
            # Draining and reconnecting end the loop on purpose; not a fault.
            if nc._status == Client.CONNECTED and _read_loop_dead(nc):
                self.restarts += 1
                log.warning("nats: the read loop stopped while connected; reconnecting")
                try:
                    await nc.force_reconnect()
                except Exception:
                    log.exception("nats: forced reconnect failed")
