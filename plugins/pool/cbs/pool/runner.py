"""``cbs run --workers N``: this process supervises, workers serve.

The :class:`PoolRunner` is the kernel's :class:`~cbs.kernel.Runner` that
``cbs run`` hands over to: it builds the groups (the Python cells, those with
replicas of their own, the sidecars of the pool file), connects a body that
serves nothing (for the control subjects), and runs the supervisor until
SIGINT or SIGTERM; SIGHUP restarts every worker, one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Mapping, Sequence

from cbs.contracts import Cell
from cbs.kernel import Body, Runner, UsageError
from cbs.pool.control import Control
from cbs.pool.specs import SidecarSpec
from cbs.pool.supervisor import WORKER_ENV, Group, Settings, Supervisor

__all__ = ["PoolRunner", "worker_command"]

log = logging.getLogger("cbs.pool")


def worker_command(
    body: Body,
    args: argparse.Namespace,
    cells: Sequence[str],
    worker_set: Mapping[str, str] | None = None,
) -> list[str]:
    """``python -m cbs ... run --cells IDS`` with the flags this ``cbs run`` got
    (the pool's own options left out: a worker does not supervise), those of
    ``worker_set`` set to its values instead."""
    worker_set = worker_set or {}
    argv = [sys.executable, "-m", "cbs"]
    if getattr(args, "debug", False):
        argv.append("--debug")
    if getattr(args, "quiet", False):
        argv.append("-q")
    if getattr(args, "disable_plugin_autoload", False):
        argv.append("--disable-plugin-autoload")
    for spec in getattr(args, "plugin_specs", None) or []:
        argv += ["-p", spec]
    argv.append("run")
    for name, option in body.options.as_dict().items():
        value = worker_set.get(name, getattr(args, name, None))
        if value is None or option.plugin == "pool":
            continue
        argv += [option.cli_flag] if value is True else [option.cli_flag, str(value)]
    return [*argv, "--cells", *cells]


class PoolRunner(Runner):
    def __init__(
        self,
        settings: Settings,
        *,
        workers: int,
        replicas: Mapping[str, int],
        sidecars: Sequence[SidecarSpec],
        pool_id: str,
        worker_set: Mapping[str, str] | None = None,
    ) -> None:
        self.worker_set = dict(worker_set or {})
        self.settings = settings
        self.workers = workers
        self.replicas = dict(replicas)
        self.sidecars = list(sidecars)
        self.pool_id = pool_id

    def groups(self, body: Body, args: argparse.Namespace) -> list[Group]:
        chosen = args.cells or [e.name for e in body.cells]
        unknown = [c for c in chosen if c not in body.cells]
        if unknown:
            raise UsageError(f"no installed cell '{unknown[0]}' (see: cbs cells)")
        cells = [body.cells.cell(c) for c in chosen]
        groups: list[Group] = []
        for service, count in self.replicas.items():
            own = [c for c in cells if c.service == service]
            if not own and not any(s.service == service for s in self.sidecars):
                raise UsageError(f"replicas: no cell to serve serves service '{service}'")
            if own:
                groups.append(self._group(body, args, service, own, count))
        rest = [c for c in cells if c.service not in self.replicas]
        if rest and (self.workers or args.cells or not self.sidecars):
            groups.append(self._group(body, args, "cells", rest, max(self.workers, 1)))
        for spec in self.sidecars:
            groups.append(
                Group(
                    name=spec.id,
                    command=[spec.command, *spec.args],
                    cells=(spec.id,),
                    services=(spec.service,),
                    desired=spec.replicas,
                    language=spec.language,
                    env=dict(spec.env),
                    heartbeat=spec.health == "heartbeat",
                )
            )
        return groups

    def _group(
        self, body: Body, args: argparse.Namespace, name: str, cells: Sequence[Cell], count: int
    ) -> Group:
        ids = [c.id for c in cells]
        services = tuple(dict.fromkeys(c.service for c in cells))
        return Group(
            name=name,
            command=worker_command(body, args, ids, self.worker_set),
            cells=tuple(ids),
            services=services,
            desired=count,
            env=WORKER_ENV,
        )

    async def run(self, body: Body, args: argparse.Namespace) -> int:
        if not body.transport_shared():
            raise UsageError(
                "cbs run --workers needs a bus other processes share (e.g. --nats-url URL)"
            )
        groups = self.groups(body, args)
        await body.start(serve=False)
        supervisor = Supervisor(groups, self.settings, self.pool_id)
        body.capabilities.provide(supervisor, plugin="pool")
        control = None
        from cbs.nats import NatsConnection

        conn = body.capabilities.get(NatsConnection)
        sidecars = {spec.id for spec in self.sidecars}
        for group in groups:
            if conn is not None and group.name in sidecars:
                # Where to connect (no credentials: give those in the sidecar's env).
                group.env = {"NATS_URL": conn.url, **group.env}
        if conn is not None:
            control = Control(conn.client, supervisor)
            await control.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, supervisor.rolling_restart)
        sizes = ", ".join(f"{g.name}={g.desired}" for g in groups)
        log.info(
            "pool %s: supervising %s; SIGHUP restarts workers one by one, Ctrl-C stops",
            self.pool_id,
            sizes or "nothing",
        )
        try:
            await supervisor.run(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if control is not None:
                await control.stop()
            body.capabilities.withdraw(supervisor)
        return 0
