"""Specs over the bus: the control subjects a body running a spec answers.

A body started with ``cbs run body.yaml`` on a shared bus subscribes, each in
a queue group of its own (every instance of a body hears every message), to::

    $CBS.SPEC.<body-id>.apply   $CBS.SPEC.ALL.apply
    $CBS.SPEC.<body-id>.diff    $CBS.SPEC.ALL.diff

A message is a JSON object ``{"spec": "<body.yaml text>", "name": "body.yaml",
"reply_to": "_cbs.spec.reply.<hex>"}``. The body checks the spec (nothing
changes if it is invalid), applies it (``apply``) or only plans it
(``diff``), and publishes to ``reply_to`` (which must start with
``_cbs.spec.reply.``)::

    {"body": "<id>", "instance": "<hex>", "pid": 1234, "op": "apply",
     "applied": [...], "rolled_back": [...], "restart": [...], "error": null}

``diff`` answers ``"changes": [...]`` instead. Only the generic ``Bus``
operations are used (serve, publish). When NATS security is on, the body's
identity must be allowed to subscribe to ``$CBS.SPEC.>`` and only the admin
identity may publish there (docs/security.md).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any

from cbs.contracts import Bus, Outcome, Subscription
from cbs.kernel.transport import answer_control, gather_replies
from cbs.spec.loader import SpecError
from cbs.spec.model import read_text
from cbs.spec.reconcile import Reconciler

__all__ = ["PREFIX", "ALL", "REPLY_PREFIX", "OPS", "Responder", "send", "subject_for"]

log = logging.getLogger("cbs.spec")

PREFIX = "$CBS.SPEC."
ALL = "ALL"
REPLY_PREFIX = "_cbs.spec.reply."
OPS = ("apply", "diff")
_NOTHING = Outcome(b"")


def subject_for(body_id: str, op: str) -> str:
    """``$CBS.SPEC.<body-id|ALL>.<op>``."""
    return f"{PREFIX}{body_id}.{op}"


class Responder:
    """Answers ``apply`` and ``diff`` for one body while it runs a spec."""

    def __init__(self, bus: Bus, reconciler: Reconciler, body_id: str) -> None:
        self.bus = bus
        self.reconciler = reconciler
        self.body_id = body_id
        self.instance = uuid.uuid4().hex[:12]
        self.queue = f"spec_{self.instance}"
        self.subjects = tuple(subject_for(who, op) for who in (body_id, ALL) for op in OPS)
        self.subs: list[Subscription] = []

    async def handle(self, op: str, message: Mapping[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "body": self.body_id,
            "instance": self.instance,
            "pid": os.getpid(),
            "op": op,
        }
        text, name = message.get("spec"), message.get("name") or "body.yaml"
        try:
            if not isinstance(text, str) or not isinstance(name, str):
                raise SpecError("the message has no spec text")
            spec = read_text(text, name)
            if op == "diff":
                reply["changes"] = [c.to_dict() for c in self.reconciler.plan(spec)]
                reply["error"] = None
                return reply
        except SpecError as exc:
            reply["error"] = str(exc)
            return reply
        reply.update((await self.reconciler.apply(spec)).to_dict())
        return reply

    async def start(self) -> None:
        for subject in self.subjects:
            op = subject.rsplit(".", 1)[1]
            handler = answer_control(self.bus, REPLY_PREFIX, partial(self.handle, op))
            self.subs.append(await self.bus.serve(subject, self.queue, handler, max_concurrency=1))

    async def stop(self) -> None:
        subs, self.subs = self.subs, []
        for sub in subs:
            await sub.stop()


async def send(
    bus: Bus,
    op: str,
    text: str,
    name: str,
    *,
    body_id: str,
    expect: int = 0,
    wait: float = 10.0,
    quiet: float = 0.5,
) -> list[dict[str, Any]]:
    """Send a spec to ``$CBS.SPEC.<body_id>.<op>`` and gather the answers:
    until ``expect`` arrived, else until none came for ``quiet`` seconds
    after the first, at most ``wait`` seconds."""
    return await gather_replies(
        bus,
        subject_for(body_id, op),
        {"spec": text, "name": name},
        inbox_prefix=REPLY_PREFIX,
        accept=lambda reply: isinstance(reply.get("instance"), str),
        expect=expect,
        wait=wait,
        quiet=quiet,
    )
