"""Breaker visibility: the per-body table, transition logs, and the states
query that ``cbs cells`` sends over the bus (the Prometheus gauge is in
:mod:`cbs.breaker.gauge`).

Breakers live in the process that calls. Every started body with this plugin
on a shared bus subscribes to ``_cbs.breaker.states`` (each body in a queue
group of its own, so every one of them hears a query) and answers a query
``{"reply_to": SUBJECT}`` by publishing its breakers' states to ``SUBJECT``::

    {"instance": "<id>", "breakers": [{"service": "greeter", "verb": "say_hello",
                                      "state": "open"}, ...]}

Only the generic ``Bus`` operations are used (serve, publish), so it works on
any shared transport.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cbs.breaker.circuit import OPEN, STATES, BreakerSettings, CircuitBreaker
from cbs.contracts import Bus, Outcome, Subscription

if TYPE_CHECKING:
    from cbs.kernel import Body

__all__ = [
    "QUERY_SUBJECT",
    "BreakerTable",
    "Responder",
    "gather",
    "summarize",
    "format_field",
    "cells_field",
]

log = logging.getLogger("cbs.breaker")

QUERY_SUBJECT = "_cbs.breaker.states"
_REPLY_PREFIX = "_cbs.breaker.reply."
#: What the responder hands back to the bus: nothing to reply (it publishes itself).
_NOTHING = Outcome(b"")


# -- the table ------------------------------------------------------------------------------


class BreakerTable:
    """The breakers of one body, by ``(service, verb)``; they outlive restarts."""

    def __init__(self) -> None:
        self.breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self.instance = uuid.uuid4().hex
        #: Called as ``listener(service, verb, old, new)`` on every state change.
        self.listeners: list[Callable[[str, str, str, str], None]] = []

    def get(
        self, service: str, verb: str, settings: BreakerSettings, clock: Any = time.monotonic
    ) -> CircuitBreaker:
        """The breaker of a target, made at its first use (same settings)."""
        key = (service, verb)
        breaker = self.breakers.get(key)
        if breaker is None or breaker.settings != settings:
            breaker = CircuitBreaker(
                f"{service}.{verb}", settings, clock=clock, on_change=self._changed
            )
            self.breakers[key] = breaker
        return breaker

    def _changed(self, breaker: CircuitBreaker, old: str, new: str) -> None:
        level = logging.WARNING if new == OPEN else logging.INFO
        log.log(level, "breaker %s: %s -> %s", breaker.name, old, new)
        service, _, verb = breaker.name.partition(".")
        for listener in self.listeners:
            try:
                listener(service, verb, old, new)
            except Exception:
                log.exception("breaker %s: a state listener failed", breaker.name)

    def states(self) -> dict[tuple[str, str], str]:
        return {key: breaker.state for key, breaker in self.breakers.items()}

    def message(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "breakers": [
                {"service": service, "verb": verb, "state": state}
                for (service, verb), state in sorted(self.states().items())
            ],
        }


# -- the states query -------------------------------------------------------------------------


class Responder:
    """Answers states queries for one body while it is started."""

    def __init__(self, bus: Bus, table: BreakerTable) -> None:
        self.bus = bus
        self.table = table
        self.sub: Subscription | None = None
        self.queue = f"breaker_{table.instance}"  # a group of one: every body hears each query

    async def start(self) -> None:
        from cbs.kernel.transport import answer_control  # the table is made by every body

        bus, table = self.bus, self.table
        answer = answer_control(bus, _REPLY_PREFIX, lambda query: table.message())
        self.sub = await bus.serve(QUERY_SUBJECT, self.queue, answer, max_concurrency=4)

    async def stop(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            await sub.stop()


async def gather(bus: Bus, *, wait: float = 0.5, quiet: float = 0.15) -> list[dict[str, Any]]:
    """Ask every body on ``bus`` for its breakers' states. Replies are taken
    for ``wait`` seconds at most, and no longer than ``quiet`` seconds after
    the last one."""
    from cbs.kernel.transport import gather_replies

    return await gather_replies(
        bus,
        QUERY_SUBJECT,
        {},
        inbox_prefix=_REPLY_PREFIX,
        accept=lambda reply: isinstance(reply.get("breakers"), list),
        wait=wait,
        quiet=quiet,
    )


def summarize(
    cells: list[dict[str, Any]], replies: list[dict[str, Any]]
) -> dict[str, dict[str, dict[str, int]]]:
    """Per cell id: ``{verb: {state: number of callers}}`` for the verbs of
    the cell some caller has a breaker for."""
    seen: dict[tuple[str, str], dict[str, int]] = {}
    for reply in replies:
        for entry in reply.get("breakers", []):
            if not isinstance(entry, dict) or entry.get("state") not in STATES:
                continue
            counts = seen.setdefault((str(entry.get("service")), str(entry.get("verb"))), {})
            counts[entry["state"]] = counts.get(entry["state"], 0) + 1
    result: dict[str, dict[str, dict[str, int]]] = {}
    for cell in cells:
        service = cell.get("service", "")
        verbs = [s.split(".")[2] for s in cell.get("subjects", []) if s.count(".") == 2]
        found = {verb: seen[(service, verb)] for verb in verbs if (service, verb) in seen}
        if found:
            result[cell["id"]] = found
    return result


def format_field(value: Any) -> str:
    """``say_hello:open`` when every caller agrees, else the worst state and
    how many callers are in it: ``say_hello:open(1/3)``."""
    parts = []
    for verb, counts in value.items():
        worst = max(counts, key=STATES.index)
        total = sum(counts.values())
        parts.append(
            f"{verb}:{worst}"
            if counts[worst] == total
            else f"{verb}:{worst}({counts[worst]}/{total})"
        )
    return ",".join(parts)


async def cells_field(body: Body, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``breaker`` field of ``cbs cells``: the states of the breakers that
    callers on the bus hold for each cell's verbs. With no shared bus, the
    breakers of this process."""
    from cbs.breaker.plugin import TABLE
    from cbs.kernel import TransportState

    bus = body.bus  # started by the transport's discovery when there is a shared bus
    if bus is not None and bus.shared:
        transport = body.capabilities.get(TransportState)
        if transport is not None and not transport.may_subscribe(_REPLY_PREFIX + "query"):
            return {}  # an identity that may not ask (not admin, under NATS permissions)
        return summarize(cells, await gather(bus))
    table = body.stash.get(TABLE, None)
    return summarize(cells, [table.message()] if table is not None else [])
