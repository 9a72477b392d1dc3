"""Control subjects of a pool on NATS (JSON bodies, not envelopes):

- ``$CBS.POOL.scale`` ``{"service": "greeter", "replicas": 3}``: the pool whose
  groups serve the service sets that group's size and answers; other pools
  stay silent. ``$CBS.POOL.<pool-id>.scale`` asks one pool (it answers a
  ``NotFound`` error when it does not serve the service).
- ``$CBS.POOL.status`` (every pool answers) and ``$CBS.POOL.<pool-id>.status``:
  ``{"pool": ID, "groups": [GroupStats ...]}``.
- ``$CBS.POOL.<pool-id>.restart``: a rolling restart, as ``SIGHUP``.

Errors are ``{"error": {"code": ..., "message": ...}}`` with the CBS codes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from cbs.contracts import BadRequest, CbsError, NotFound, Timeout
from cbs.pool.supervisor import Supervisor

__all__ = ["SCALE", "STATUS", "Control", "request_scale", "pool_statuses"]

SCALE = "$CBS.POOL.scale"
STATUS = "$CBS.POOL.status"
MAX_REPLICAS = 64


def pool_subject(pool_id: str, verb: str) -> str:
    return f"$CBS.POOL.{pool_id}.{verb}"


def _error(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


class Control:
    """Answers the control subjects for one supervisor."""

    def __init__(self, nc: Client, supervisor: Supervisor) -> None:
        self._nc = nc
        self._sup = supervisor
        self._subs: list[Any] = []

    async def start(self) -> None:
        pid = self._sup.pool_id
        handlers = {
            SCALE: self._on_scale,
            pool_subject(pid, "scale"): self._on_scale,
            STATUS: self._on_status,
            pool_subject(pid, "status"): self._on_status,
            pool_subject(pid, "restart"): self._on_restart,
        }
        for subject, cb in handlers.items():
            self._subs.append(await self._nc.subscribe(subject, cb=cb))
        await self._nc.flush()

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        self._subs.clear()

    async def _on_scale(self, msg: Msg) -> None:
        if not msg.reply:
            return
        broadcast = msg.subject == SCALE
        try:
            request = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            request = None
        service = request.get("service") if isinstance(request, dict) else None
        replicas = request.get("replicas") if isinstance(request, dict) else None
        if (
            not isinstance(service, str)
            or not isinstance(replicas, int)
            or isinstance(replicas, bool)
            or not 0 <= replicas <= MAX_REPLICAS
        ):
            if not broadcast:
                await msg.respond(_error("BadRequest", "expected {service, replicas: 0..64}"))
            return
        group = self._sup.find(service)
        if group is None:
            if not broadcast:
                await msg.respond(_error("NotFound", f"pool serves no {service}"))
            return
        self._sup.scale(group, replicas)
        reply = {
            "pool": self._sup.pool_id,
            "group": group.name,
            "services": list(group.services),
            "cells": list(group.cells),
            "replicas": replicas,
        }
        await msg.respond(orjson.dumps(reply))

    async def _on_status(self, msg: Msg) -> None:
        if msg.reply:
            groups = [g.to_dict() for g in self._sup.groups()]
            await msg.respond(orjson.dumps({"pool": self._sup.pool_id, "groups": groups}))

    async def _on_restart(self, msg: Msg) -> None:
        self._sup.rolling_restart()
        if msg.reply:
            await msg.respond(orjson.dumps({"pool": self._sup.pool_id, "restarting": True}))


async def request_scale(
    nc: Client, service: str, replicas: int, *, pool: str | None = None, timeout: float = 2.0
) -> dict[str, Any]:
    """Ask the pool serving ``service`` to run ``replicas`` workers; its answer."""
    subject = SCALE if pool is None else pool_subject(pool, "scale")
    data = orjson.dumps({"service": service, "replicas": replicas})
    try:
        msg = await nc.request(subject, data, timeout=timeout)
    except NoRespondersError:
        raise NotFound(f"no pool answers on {subject}") from None
    except NatsTimeout:
        raise Timeout(f"no pool serving {service} answered within {timeout:g} s") from None
    reply = orjson.loads(msg.data)
    error = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(error, dict):
        raise CbsError.from_wire(error)
    if not isinstance(reply, dict):
        raise BadRequest("the pool's answer is not an object")
    return reply


async def pool_statuses(
    nc: Client, *, wait: float = 0.5, quiet: float = 0.15
) -> list[dict[str, Any]]:
    """Every pool's status that arrives within ``wait`` seconds."""
    replies: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def collect(msg: Msg) -> None:
        try:
            data = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        if isinstance(data, dict):
            replies.append(data)
            arrived.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(STATUS, b"", reply=inbox)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), min(left, quiet) if replies else left)
            except TimeoutError:
                if replies:
                    break
    finally:
        await sub.unsubscribe()
    return replies
