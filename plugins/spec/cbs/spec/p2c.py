"""Caller-side balancing: the power of two choices on observed latency and
in-flight requests (Envoy's least-request balancer, Moleculer's latency
strategy), with the option ``balancing = p2c`` (a spec's
``balancing.strategy: p2c``).

The wire contract stays: every instance still serves ``cbs.{service}.{verb}``
in queue group ``{service}``, and foreign callers use only that. A body with
the option also serves each verb of its cells on an **instance subject**,
``cbs.{service}.{verb}.{instance}`` (a fourth token; queue group
``{service}`` too, so the permissions of the service's identity cover it),
and tells the others on ``$CBS.LB.P2C`` every 0.25 s
(``{"service", "instance"}``; ``"gone": true`` when it stops serving).

A caller with the option keeps, per instance it heard of within the last
second, its own EWMA of the latency it observed there and its own in-flight
count. When a service has two such instances or more, the client middleware
``p2c`` (phase ``transport``: once per attempt, inside retries) picks two at
random and sends to the one with the lower ``ewma x (in_flight + 1)`` (an
instance never tried scores 0, so each is tried). With fewer than two, or
when the instance no longer answers (no responders: it is marked gone), the
request goes to the queue-group subject as before.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from cbs.contracts import Bus, Cell, Envelope, NoResponders, Outcome, Subscription
from cbs.kernel import Body, ClientHandler, Served, Target
from cbs.kernel.transport import endpoint_handler, request_sender

__all__ = ["SUBJECT", "P2C", "instance_subject"]

log = logging.getLogger("cbs.spec.p2c")

SUBJECT = "$CBS.LB.P2C"
HEARTBEAT = 0.25
#: How recent an instance's announcement must be to be chosen.
FRESH = 1.0
#: Weight of the newest latency in the EWMA.
ALPHA = 0.3
_NOTHING = Outcome(b"")


def instance_subject(service: str, verb: str, instance: str) -> str:
    return f"cbs.{service}.{verb}.{instance}"


class _Instance:
    __slots__ = ("ewma", "heard", "in_flight")

    def __init__(self, heard: float) -> None:
        self.heard = heard
        self.ewma = 0.0  # seconds; 0 until tried
        self.in_flight = 0


class P2C:
    """Both sides of one body: its instance subjects and announcements, and
    what it knows of the instances of the services it calls."""

    def __init__(self, body: Body) -> None:
        self.body = body
        self.instance = uuid.uuid4().hex[:12]
        #: Service -> instance id -> what this caller observed.
        self.known: dict[str, dict[str, _Instance]] = {}
        #: Requests sent to an instance subject / to the queue group.
        self.chosen = 0
        self.fallbacks = 0
        self._bus: Bus | None = None
        self._served: dict[int, tuple[Cell, list[Subscription]]] = {}
        self._sub: Subscription | None = None
        self._beat: asyncio.Task[None] | None = None
        self._rng = random.Random()

    # -- the instance side ------------------------------------------------------------------

    async def cell_started(self, cell: Cell) -> None:
        bus = self.body.bus
        if bus is None or not bus.shared:
            return
        factories = self.body.middleware.server_factories()
        subs = []
        for endpoint in cell.endpoints:
            subs.append(
                await bus.serve(
                    instance_subject(cell.service, endpoint.verb, self.instance),
                    cell.service,
                    endpoint_handler(Served(cell, endpoint), factories),
                    max_concurrency=cell.max_concurrency,
                )
            )
        self._served[id(cell)] = (cell, subs)

    async def cell_stopping(self, cell: Cell) -> None:
        found = self._served.pop(id(cell), None)
        if found is None:
            return
        if not any(c.service == cell.service for c, _ in self._served.values()):
            await self._publish({"service": cell.service, "instance": self.instance, "gone": True})
        for sub in found[1]:
            await sub.stop()

    async def _publish(self, state: Mapping[str, Any]) -> None:
        bus = self.body.bus
        if bus is not None and bus.shared:
            await bus.publish(SUBJECT, orjson.dumps(state))

    async def _announce(self) -> None:
        for service in sorted({c.service for c, _ in self._served.values()}):
            await self._publish({"service": service, "instance": self.instance})

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self._announce()
            except Exception as exc:
                log.debug("p2c: announcement failed: %s", exc)
            await asyncio.sleep(HEARTBEAT)

    # -- the caller side --------------------------------------------------------------------

    async def start(self) -> None:
        bus = self.body.bus
        if bus is None or not bus.shared or self._sub is not None:
            return
        self._bus = bus

        async def heard(data: bytes, headers: Mapping[str, str] | None) -> Outcome:
            try:
                state = orjson.loads(data)
                service, instance = state["service"], state["instance"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return _NOTHING
            if not isinstance(service, str) or not isinstance(instance, str):
                return _NOTHING
            known = self.known.setdefault(service, {})
            if state.get("gone"):
                known.pop(instance, None)
            elif instance in known:
                known[instance].heard = time.monotonic()
            else:
                known[instance] = _Instance(time.monotonic())
            return _NOTHING

        self._sub = await bus.serve(SUBJECT, f"p2c_{self.instance}", heard, max_concurrency=4)
        self._beat = asyncio.ensure_future(self._heartbeat())

    async def stop(self) -> None:
        for service in sorted({c.service for c, _ in self._served.values()}):
            try:
                await self._publish({"service": service, "instance": self.instance, "gone": True})
            except Exception as exc:
                log.debug("p2c: could not announce the stop: %s", exc)
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
            self._beat = None
        served, self._served = list(self._served.values()), {}
        for _, subs in served:  # those in flight finish
            for sub in subs:
                await sub.stop()
        if self._sub is not None:
            await self._sub.stop()
            self._sub = None

    def _pick(self, service: str) -> tuple[str, _Instance] | None:
        known = self.known.get(service)
        if not known or len(known) < 2:
            return None
        now = time.monotonic()
        live = [(k, v) for k, v in known.items() if now - v.heard < FRESH]
        if len(live) < 2:
            return None
        (ka, a), (kb, b) = self._rng.sample(live, 2)
        return (ka, a) if a.ewma * (a.in_flight + 1) <= b.ewma * (b.in_flight + 1) else (kb, b)

    def middleware(self, target: Target, call_next: ClientHandler) -> ClientHandler:
        """The client middleware ``p2c`` (phase ``transport``)."""
        service, verb = target.service, target.verb
        senders: dict[str, ClientHandler] = {}
        clock = time.perf_counter

        async def balanced(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
            picked = self._pick(service)
            bus = self._bus
            if picked is None or bus is None:
                self.fallbacks += 1
                return await call_next(request, headers, timeout)
            name, stats = picked
            send = senders.get(name)
            if send is None:
                if len(senders) > 256:
                    senders.clear()
                send = senders[name] = request_sender(bus, instance_subject(service, verb, name))
            stats.in_flight += 1
            started = clock()
            try:
                reply = await send(request, headers, timeout)
            except NoResponders:  # the instance is gone: the queue group has the others
                self.known.get(service, {}).pop(name, None)
                self.fallbacks += 1
                return await call_next(request, headers, timeout)
            finally:
                stats.in_flight -= 1
                took = clock() - started
                stats.ewma = took if stats.ewma == 0.0 else stats.ewma + ALPHA * (took - stats.ewma)
            self.chosen += 1
            return reply

        return balanced
