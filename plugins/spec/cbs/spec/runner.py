"""``cbs run body.yaml``: serve a spec and reconcile every change of the file.

The spec's ``settings`` (and the options its policies map to) are applied to
the body's configuration before it starts: the spec wins over flags and
environment variables for the options it sets. Then the body starts with no
cell, the reconciler brings it to the spec, and the file is watched
(watchfiles): each change that parses is reconciled, an invalid one changes
nothing and is logged with its file, line and column.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from cbs.contracts import Bus
from cbs.kernel import Body, TransportState
from cbs.spec.autoscale import ClusterLoad, Decision, Engine
from cbs.spec.balance import Balancer
from cbs.spec.loader import SpecError
from cbs.spec.model import BodySpec, read
from cbs.spec.plugin import RUNNER  # the key is the hooks': they read it in every body
from cbs.spec.reconcile import Reconciler, Report

__all__ = ["SpecRunner", "RUNNER"]

log = logging.getLogger("cbs.spec")


def _summary(report: Report) -> str:
    parts = [c.line() for c in report.applied]
    parts += [f"rolled back {line}" for line in report.rolled_back]
    parts += [c.line() for c in report.restart]
    return "; ".join(parts) or "no change"


class SpecRunner:
    """Serves one spec file on one body: start, watch, reconcile, stop."""

    def __init__(self, body: Body, path: str | Path) -> None:
        self.body = body
        self.path = Path(path)
        self.spec: BodySpec = read(self.path)  # SpecError before anything starts
        self.reconciler: Reconciler | None = None
        self.reports: list[Report] = []
        self._digest = self._read_digest()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._autoscaling: list[asyncio.Task[None]] = []
        self._responder: object | None = None
        #: Autoscaling: one engine per service with a policy, and the decisions made.
        self.engines: dict[str, Engine] = {}
        #: The in-flight load of all instances of a service ($SRV.STATS).
        self.cluster = ClusterLoad()
        self.decisions: list[Decision] = []
        self.balancer: Balancer | None = None
        self._unexport: Callable[[], None] | None = None

    def _read_digest(self) -> bytes:
        try:
            return hashlib.sha256(self.path.read_bytes()).digest()
        except OSError:
            return b""

    def configure(self) -> None:
        values = {k: v for k, v in self.body.config.items() if v is not None}
        values.update(self.spec.settings)
        self.body.configure(values)

    async def start(self) -> Report:
        self.configure()
        body = self.body
        body.stash[RUNNER] = self
        self.reconciler = Reconciler(body, self.spec.settings)
        with body.not_ready("the spec's cells are starting"):
            await body.start(serve=False)
            report = await self.reconciler.apply(self.spec)
        self.reports.append(report)
        if report.error:
            raise SpecError(report.error)
        log.info("spec %s (body %s): %s", self.path, self.spec.body_id, _summary(report))
        await self._start_control()
        from cbs.spec.autoscale import export_metrics, start_autoscaling

        self._tasks.append(asyncio.ensure_future(self._watch()))
        self._autoscaling = start_autoscaling(self)
        self.reconciler.on_applied = self._applied
        self._unexport = export_metrics(self)
        return report

    async def _start_control(self) -> None:
        bus = self.body.bus
        if bus is None or not bus.shared:
            return
        from cbs.spec.control import Responder

        assert self.reconciler is not None
        responder = Responder(bus, self.reconciler, self.spec.body_id)
        state = self.body.capabilities.get(TransportState)
        if state is not None and not all(
            state.may_subscribe(s, responder.queue) for s in responder.subjects
        ):
            log.info("spec: not answering $CBS.SPEC.*: this body's identity may not subscribe")
            return
        await responder.start()
        self._responder = responder
        if self.spec.balancing.enabled:
            await self._start_balancing(bus)

    async def _start_balancing(self, bus: Bus) -> None:
        from cbs.spec.balance import Balancer
        from cbs.spec.plugin import STATS

        if STATS not in self.body.stash:  # middleware composed before this runner
            log.warning("spec: balancing needs the body to start under the spec runner: off")
            return
        balancer = Balancer(self.body, bus, self.spec.balancing, self.body.stash[STATS])
        await balancer.start()
        self.balancer = balancer
        self.body.stash[STATS].balancer = balancer

    def _policies(self, spec: BodySpec) -> object:
        ranges = {c.id: (c.min_replicas, c.max_replicas) for c in spec.cells.values()}
        return (dict(spec.autoscale), ranges)

    def _applied(self, spec: BodySpec) -> None:
        """A spec was applied (file or bus): it is the one in force; new
        autoscaling policies or ranges start their engines afresh."""
        from cbs.spec.autoscale import start_autoscaling

        before, self.spec = self.spec, spec
        if self._policies(before) != self._policies(spec):
            for task in self._autoscaling:
                task.cancel()
            self.engines.clear()
            self._autoscaling = start_autoscaling(self)
            log.info("spec: autoscaling policies changed: %s", ", ".join(self.engines) or "none")

    async def reconcile_file(self) -> Report | None:
        """Read the file again and reconcile it if it changed (``None`` if not)."""
        digest = self._read_digest()
        if digest == self._digest or not digest:
            return None
        self._digest = digest
        assert self.reconciler is not None
        try:
            spec = read(self.path)
        except SpecError as exc:
            log.error("spec refused, nothing changed: %s", exc)
            report = Report(error=str(exc))
        else:
            report = await self.reconciler.apply(spec)
            if not report.error:
                log.info("spec %s changed: %s", self.path, _summary(report))
        self.reports.append(report)
        return report

    async def _watch(self) -> None:
        import watchfiles

        target = self.path.resolve()

        def ours(change: watchfiles.Change, path: str) -> bool:
            return Path(path).resolve() == target

        try:
            async for _ in watchfiles.awatch(
                target.parent,
                watch_filter=ours,
                stop_event=self._stop,
                debounce=100,
                step=20,
                recursive=False,
                rust_timeout=1000,
                yield_on_timeout=True,  # each second: a change missed while setting up
            ):
                await self.reconcile_file()
        except Exception:
            log.exception("spec: watching %s failed; changes are no longer reconciled", self.path)

    async def stop(self) -> None:
        self._stop.set()
        if self._unexport is not None:
            self._unexport()
            self._unexport = None
        tasks = self._tasks + self._autoscaling
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._autoscaling.clear()
        balancer, self.balancer = self.balancer, None
        if balancer is not None:
            from cbs.spec.plugin import STATS

            if STATS in self.body.stash:
                self.body.stash[STATS].balancer = None
            await balancer.stop()
        if self.reconciler is not None:
            await self.reconciler.sidecars.close()
        responder = self._responder
        self._responder = None
        if responder is not None:
            from cbs.spec.control import Responder

            assert isinstance(responder, Responder)
            await responder.stop()

    async def run_until_signal(
        self,
        on_ready: Callable[[], None] | None = None,
        *,
        starting: Awaitable[object] | None = None,
    ) -> None:
        # The plugin stops the runner when the body stops.
        await self.body.run_until_signal(on_ready=on_ready, starting=starting)
