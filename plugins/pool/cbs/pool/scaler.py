"""The kernel's :class:`~cbs.kernel.Scaler`, for a body that serves cells
itself (``cbs run body.yaml``): worker processes beside it, one group per
service, started on the first ``scale``.

``scale(service, n)`` counts this body's own instance: ``n = 3`` with the
body serving the service is two workers. A worker is ``python -m cbs run
--cells IDS`` with the body's options (in its environment, or as flags for
options without one) and the cells of that service that the body has
installed; it serves once its heartbeat says so (subscriptions made and
flushed), and shrinking stops the newest workers the graceful way (they
drain first), as ``cbs scale`` does. The supervisor also answers the pool's
control subjects (``cbs scale``, ``$CBS.POOL.status``) and is the body's
``PoolStats`` (``cbs cells``, metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cbs.kernel import Body, ConfigError, Scaler
from cbs.pool.supervisor import WORKER_ENV, Group, Settings, Supervisor

if TYPE_CHECKING:
    from cbs.pool.control import Control

__all__ = ["PoolScaler"]

log = logging.getLogger("cbs.pool")


class PoolScaler(Scaler):
    provided_by = "cbs-pool"

    def __init__(
        self, body: Body, settings: Settings, pool_id: str, worker_set: Mapping[str, str]
    ) -> None:
        self.body = body
        self.settings = settings
        self.pool_id = pool_id
        self.worker_set = dict(worker_set)
        self.supervisor: Supervisor | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._control: Control | None = None
        self._changed = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}

    # -- the supervisor, started when first needed -----------------------------------------

    async def _start(self) -> Supervisor:
        if self.supervisor is not None:
            return self.supervisor
        supervisor = Supervisor([], self.settings, self.pool_id)
        supervisor.on_change = self._changed.set
        self.supervisor = supervisor
        self._stop.clear()
        self._task = asyncio.ensure_future(supervisor.run(self._stop))
        self.body.capabilities.provide(supervisor, plugin="pool")
        try:
            from cbs.nats import NatsConnection
        except ImportError:  # pragma: no cover - cbs-pool depends on cbs-nats
            return supervisor
        conn = self.body.capabilities.get(NatsConnection)
        if conn is not None:
            from cbs.pool.control import Control  # nats-py: only once a pool runs

            self._control = Control(conn.client, supervisor)
            await self._control.start()
        return supervisor

    async def close(self) -> None:
        """Stop every worker (they drain first)."""
        if self.supervisor is None:
            return
        self._stop.set()
        if self._control is not None:
            await self._control.stop()
            self._control = None
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.body.capabilities.withdraw(self.supervisor)
        self.supervisor = None

    # -- workers ---------------------------------------------------------------------------

    def _command(self, cells: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """``python -m cbs run --cells IDS`` and the environment carrying
        this body's options (secrets stay out of the command line)."""
        argv = [sys.executable, "-m", "cbs", "run"]
        env = dict(WORKER_ENV)
        for name, option in self.body.options.as_dict().items():
            if option.plugin == "pool":
                continue
            value = self.worker_set.get(name, self.body.config.get(name))
            if value is None:
                continue
            if value is True:
                argv.append(option.cli_flag)
            elif value is False:
                continue
            elif option.env:
                env[option.env] = str(value)
            else:
                argv += [option.cli_flag, str(value)]
        return [*argv, "--cells", *cells], env

    def _own(self, service: str) -> int:
        return 1 if any(c.service == service for c in self.body.served_cells) else 0

    def _group(self, name: str) -> Group | None:
        return None if self.supervisor is None else self.supervisor.named(name)

    async def _wait(self, group: Group, n: int, what: str) -> None:
        """Until ``n`` workers of ``group`` serve and no other is alive."""
        deadline = time.monotonic() + self.settings.start_timeout + self.settings.stop_timeout
        while True:
            serving = [w for w in group.workers if w.state == "serving" and not w.stopping]
            if len(serving) == n and len(group.workers) == n:
                return
            if group.crash_loop:
                raise ConfigError(f"{what}: its workers keep exiting (see the log)")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConfigError(f"{what}: {len(serving)} of {n} workers serve after waiting")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):  # the supervisor ticks every 0.1 s
                await asyncio.wait_for(self._changed.wait(), min(left, 0.1))

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def scale(self, service: str, n: int) -> int:
        async with self._lock(service):
            own = self._own(service)
            workers = max(n - own, 0)
            group = self._group(service)
            if group is None:
                if workers == 0:
                    return own
                cells = [e.name for e in self.body.cells if e.item.service == service]
                if not cells:
                    raise ConfigError(f"replicas of {service}: no installed cell serves it")
                command, env = self._command(cells)
                supervisor = await self._start()
                group = Group(
                    name=service,
                    command=command,
                    cells=tuple(cells),
                    services=(service,),
                    desired=0,
                    env=env,
                )
                supervisor.add(group)
            assert self.supervisor is not None
            if group.desired != workers:
                self.supervisor.scale(group, workers)
            await self._wait(group, workers, f"replicas of {service}")
            return workers + own

    def replicas(self, service: str) -> int:
        group = self._group(service)
        serving = (
            0
            if group is None
            else sum(1 for w in group.workers if w.state == "serving" and not w.stopping)
        )
        return serving + self._own(service)

    async def scale_sidecar(self, name: str, command: Sequence[str], n: int) -> int:
        async with self._lock(name):
            old = self._group(name)
            if old is not None and (n == 0 or list(old.command) == list(command)):
                assert self.supervisor is not None
                if old.desired != n:
                    self.supervisor.scale(old, n)
                await self._wait(old, n, f"sidecar {name}")
                if n == 0:
                    self.supervisor.remove(old)
                return n
            if n == 0:
                return 0
            supervisor = await self._start()
            env = {**os.environ, **WORKER_ENV}
            from cbs.nats import NatsConnection

            conn = self.body.capabilities.get(NatsConnection)
            if conn is not None:
                env.setdefault("NATS_URL", conn.url)
            new = Group(
                name=name,
                command=list(command),
                cells=(name,),
                services=(name,),
                desired=n,
                env={k: v for k, v in env.items() if k in ("NATS_URL", *WORKER_ENV)},
                heartbeat=False,
            )
            supervisor.add(new)
            await self._wait(new, n, f"sidecar {name}")  # new ones first
            if old is not None:
                supervisor.scale(old, 0)
                await self._wait(old, 0, f"sidecar {name}")
                supervisor.remove(old)
            return n
