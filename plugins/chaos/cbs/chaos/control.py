"""Switching rules at runtime over the control subjects.

Every started body with this plugin on a shared bus (and ``chaos_control``
not ``off``) subscribes to ``$CBS.CHAOS.ALL`` and to ``$CBS.CHAOS.<instance>``,
each in a queue group of its own so that every body hears a message to ALL.
A control message is a JSON object::

    {"op": "set", "rules": [...], "replace": false, "reply_to": "_cbs.chaos.reply.<hex>"}
    {"op": "clear", "names": ["flaky"], "reply_to": ...}     # no names: every rule
    {"op": "list", "reply_to": ...}

A body applies it, then publishes its state to ``reply_to`` (which must start
with ``_cbs.chaos.reply.``)::

    {"instance": "<hex>", "pid": 1234, "cells": ["greet"], "rules": [...]}

or, for rules it refuses (nothing changes), the same with ``"error": "<one
line>"``. Only the generic ``Bus`` operations are used (serve, publish).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cbs.chaos.layers import ChaosState, describe
from cbs.chaos.rules import parse_rules
from cbs.contracts import Bus, Outcome, Subscription
from cbs.kernel import ConfigError
from cbs.kernel.transport import answer_control, gather_replies

__all__ = ["PREFIX", "ALL", "CONTROL_SUBJECT", "REPLY_PREFIX", "Responder", "send"]

log = logging.getLogger("cbs.chaos")

PREFIX = "$CBS.CHAOS."
ALL = PREFIX + "ALL"
#: ``ALL``, as the package offers it.
CONTROL_SUBJECT = ALL
REPLY_PREFIX = "_cbs.chaos.reply."
OPS = ("set", "clear", "list")
#: What a control handler hands back to the bus: no reply (it publishes its own).
_NOTHING = Outcome(b"")


class Responder:
    """Answers control messages for one body while it is started."""

    def __init__(self, bus: Bus, state: ChaosState, cells: Callable[[], list[str]]) -> None:
        self.bus = bus
        self.state = state
        self.cells = cells
        self.instance = uuid.uuid4().hex[:12]
        self.queue = f"chaos_{self.instance}"  # a group of one: every body hears ALL
        #: The subjects it subscribes to, in ``queue``.
        self.subjects = (ALL, PREFIX + self.instance)
        self.subs: list[Subscription] = []

    def apply(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Apply one control message; the body's state after it."""
        state = self.state
        reply: dict[str, Any] = {"instance": self.instance, "pid": os.getpid()}
        op = message.get("op")
        try:
            if op == "set":
                rules = parse_rules(message.get("rules"))
                if message.get("replace"):
                    state.replace(rules)
                else:
                    state.merge(rules)
                log.warning("chaos: rules set: %s", ", ".join(r.name for r in rules) or "none")
            elif op == "clear":
                names = message.get("names") or []
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise ConfigError("names must be a list of rule names")
                gone = state.clear(names)
                log.warning("chaos: rules cleared: %s", ", ".join(gone) or "none")
            elif op != "list":
                raise ConfigError(f"op must be one of {', '.join(OPS)}")
        except ConfigError as exc:
            reply["error"] = str(exc)
        reply["cells"] = self.cells()
        reply["rules"] = describe(state)
        return reply

    async def start(self) -> None:
        handler = answer_control(self.bus, REPLY_PREFIX, self.apply)
        for subject in self.subjects:
            self.subs.append(await self.bus.serve(subject, self.queue, handler, max_concurrency=1))

    async def stop(self) -> None:
        subs, self.subs = self.subs, []
        for sub in subs:
            await sub.stop()


async def send(
    bus: Bus,
    message: Mapping[str, Any],
    *,
    instance: str | None = None,
    expect: int = 0,
    wait: float = 1.0,
    quiet: float = 0.2,
    exclude: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Send a control message to every body (or one ``instance``) and gather
    their replies: for ``wait`` seconds at most, and no longer than ``quiet``
    seconds after the last one, or until ``expect`` bodies answered. Replies
    from ``exclude`` instances are left out."""
    want = 1 if instance else expect

    def accept(reply: dict[str, Any]) -> bool:
        ident = reply.get("instance")
        return isinstance(ident, str) and ident not in exclude

    return await gather_replies(
        bus,
        PREFIX + instance if instance else ALL,
        message,
        inbox_prefix=REPLY_PREFIX,
        accept=accept,
        expect=want,
        wait=wait,
        quiet=quiet,
    )
