"""Adaptive load balancing: a saturated instance steps out of its queue group.

NATS spreads the requests of a queue group at random, so a slow instance
keeps getting its share. With ``balancing.step_out`` set, this plugin's
server middleware watches the in-flight requests of each service in this
body; when they reach ``step_out`` x ``max_concurrency`` and this instance
is slow (below), the cell steps out of its queue group (``Body.step_out``:
its subscriptions stop taking requests, those in flight finish). It steps
back in (``Body.step_in``) after ``max_out`` seconds, once its in-flight
requests are down to ``step_in`` x ``max_concurrency``; earlier when it is no
longer slower than the others, or when no other instance is in. The wire
contract does not change: foreign callers still send to
``cbs.{service}.{verb}``, the instances still share queue group
``{service}``; the others simply take what this one would have had.

Instances of a service tell each other their state on ``$CBS.LB.ALL``
(``{"service", "instance", "out", "p50_ms"}`` every 0.25 s, at each change,
and ``"out": true`` when a body stops). An instance steps out only while it
heard, within the last second, of another instance of its service that is
in, of none that is out, and its own median handler latency is more than
``SLOWER`` (2) times the best of those that are in. A body alone on its
service, or as fast as the others, never steps out; an instance that is out
steps back in at once when it hears that the last other one went out or
stopped, or hears nothing from it for a second. Two instances deciding in
the same heartbeat could both be out for that moment; ``max_out`` bounds it.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from cbs.contracts import Bus, Outcome, Subscription
from cbs.kernel import Body
from cbs.spec.model import Balancing
from cbs.spec.signals import Stats

__all__ = ["Balancer", "SUBJECT"]

log = logging.getLogger("cbs.spec.balance")

SUBJECT = "$CBS.LB.ALL"
HEARTBEAT = 0.25
#: How much slower than the best peer an instance must be to step out.
SLOWER = 2.0
#: How recent a peer's state must be to count.
FRESH = 1.0
_NOTHING = Outcome(b"")


class Balancer:
    """Steps the cells of one body out of and into their queue groups."""

    def __init__(self, body: Body, bus: Bus, settings: Balancing, stats: Stats) -> None:
        self.body = body
        self.stats = stats
        #: Service -> this body's median latency (ms), refreshed each heartbeat.
        self.p50: dict[str, float] = {}
        self.bus = bus
        self.settings = settings
        self.instance = uuid.uuid4().hex[:12]
        #: Cell id -> when it stepped out.
        self.out: dict[str, float] = {}
        #: Service -> peer instance -> (heard at, out, median latency in ms).
        self.peers: dict[str, dict[str, tuple[float, bool, float | None]]] = {}
        self.steps_out = 0
        self._busy: set[str] = set()
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._beat: asyncio.Task[None] | None = None

    # -- what the middleware calls -------------------------------------------------------

    def load(self, cell_id: str, service: str, in_flight: int, capacity: int) -> None:
        """After each change of the in-flight count of a cell's service."""
        busy = in_flight / max(capacity, 1)
        if cell_id in self._busy:
            return  # stepping out or in already
        if cell_id in self.out:
            if busy <= self.settings.step_in_level and not self._slower(service):
                self._busy.add(cell_id)
                self._spawn(self._step_in(cell_id, service, "no longer slower"))
        elif (
            self.settings.step_out is not None
            and busy >= self.settings.step_out
            and self._another_in(service)
        ):
            self._busy.add(cell_id)
            self._spawn(self._step_out(cell_id, service, busy))

    def _others(self, service: str) -> list[tuple[bool, float | None]]:
        """``(out, p50_ms)`` of the other instances heard within ``FRESH``."""
        now = time.monotonic()
        return [
            (out, p50)
            for peer, (heard, out, p50) in self.peers.get(service, {}).items()
            if peer != self.instance and now - heard < FRESH
        ]

    def _slower(self, service: str) -> bool:
        """Whether this instance is ``SLOWER`` times slower than the best
        other instance that is in (false if none is)."""
        mine = self.p50.get(service)
        best = min((p50 for out, p50 in self._others(service) if not out and p50), default=None)
        return mine is not None and best is not None and mine > SLOWER * best

    def _another_in(self, service: str) -> bool:
        """Whether this instance may step out: others are in, none is out,
        and this one is slower than the best of them."""
        others = self._others(service)
        if not others or any(out for out, _ in others):
            return False
        return self._slower(service)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _step_out(self, cell_id: str, service: str, busy: float) -> None:
        try:
            if await self.body.step_out(cell_id):
                self.out[cell_id] = time.monotonic()
                self.steps_out += 1
                log.debug("balance: %s stepped out (busy %.2f)", cell_id, busy)
                await self._announce(service)
        finally:
            self._busy.discard(cell_id)

    async def _step_in(self, cell_id: str, service: str, why: str) -> None:
        if cell_id not in self.out:
            self._busy.discard(cell_id)
            return
        try:
            del self.out[cell_id]
            await self.body.step_in(cell_id)
            log.debug("balance: %s stepped in (%s)", cell_id, why)
            await self._announce(service)
        finally:
            self._busy.discard(cell_id)

    # -- state shared with the other instances ---------------------------------------------

    async def _announce(self, service: str | None = None) -> None:
        out_services = {c.service for c in self.body.served_cells if c.id in self.out}
        services = {service} if service else {c.service for c in self.body.served_cells}
        for name in services:
            state = {
                "service": name,
                "instance": self.instance,
                "out": name in out_services,
                "p50_ms": self.p50.get(name),
            }
            await self.bus.publish(SUBJECT, orjson.dumps(state))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            for name, stats in self.stats.services.items():
                if stats.latencies:
                    self.p50[name] = 1000.0 * statistics.median(stats.latencies)
            try:
                await self._announce()
            except Exception as exc:
                log.debug("balance: heartbeat failed: %s", exc)
            self._check_out()

    def _check_out(self) -> None:
        """Step in what stayed out ``max_out``, or has no other instance in."""
        now = time.monotonic()
        stats = self.stats.services
        for cell in self.body.served_cells:
            since = self.out.get(cell.id)
            if since is None or cell.id in self._busy:
                continue
            alone = not any(not out for out, _ in self._others(cell.service))
            service = stats.get(cell.service)
            drained = service is None or service.busy <= self.settings.step_in_level
            if alone or (now - since >= self.settings.max_out and drained):
                self._busy.add(cell.id)
                why = "no other instance is in" if alone else "max_out"
                self._spawn(self._step_in(cell.id, cell.service, why))

    async def start(self) -> None:
        async def heard(data: bytes, headers: Mapping[str, str] | None) -> Outcome:
            try:
                state = orjson.loads(data)
                service, instance, out = state["service"], state["instance"], bool(state["out"])
                p50 = state.get("p50_ms")
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                return _NOTHING
            if not isinstance(p50, (int, float)):
                p50 = None
            if isinstance(service, str) and isinstance(instance, str):
                self.peers.setdefault(service, {})[instance] = (time.monotonic(), out, p50)
                if out and self.out:
                    self._check_out()
            return _NOTHING

        self._sub = await self.bus.serve(SUBJECT, f"lb_{self.instance}", heard, max_concurrency=4)
        self._beat = asyncio.ensure_future(self._heartbeat())
        await self._announce()

    async def stop(self) -> None:
        try:  # the others step in before this body's subscriptions drain
            for cell in self.body.served_cells:
                state = {"service": cell.service, "instance": self.instance, "out": True}
                await self.bus.publish(SUBJECT, orjson.dumps(state))
        except Exception as exc:
            log.debug("balance: could not announce the stop: %s", exc)
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
            self._beat = None
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for cell_id in list(self.out):
            del self.out[cell_id]
            await self.body.step_in(cell_id)  # so that the stop drains it as usual
        if self._sub is not None:
            await self._sub.stop()
            self._sub = None
