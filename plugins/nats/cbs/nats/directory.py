"""The :class:`~cbs.kernel.Directory` of a shared NATS: who serves what, from
the NATS services protocol (``$SRV.INFO`` / ``$SRV.STATS``, see discovery.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from cbs.kernel import Directory
from cbs.nats.discovery import INFO, discover, summarize
from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = ["NatsDirectory"]


class NatsDirectory(Directory):
    """Asks every body on the connection's NATS."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    async def list_cells(self) -> list[dict[str, Any]]:
        infos = await discover(self._nc, "INFO")
        stats = await discover(self._nc, "STATS")
        return summarize(infos, stats)

    async def endpoint_schema(self, service: str, verb: str, *, timeout: float = 0.5) -> str | None:
        """The schema of the first instance that answers for ``cbs.service.verb``."""
        subject = f"cbs.{service}.{verb}"
        found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def seen(msg: Msg) -> None:
            try:
                info = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                return
            if not isinstance(info, dict) or info.get("type") != INFO or found.done():
                return
            for endpoint in info.get("endpoints") or []:
                meta = endpoint.get("metadata") if isinstance(endpoint, dict) else None
                schema = meta.get("cbs.schema") if isinstance(meta, dict) else None
                if endpoint.get("subject") == subject and isinstance(schema, str):
                    found.set_result(schema)
                    return

        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, cb=seen)
        try:
            await self._nc.publish("$SRV.INFO", b"", reply=inbox)
            return await asyncio.wait_for(found, timeout)
        except TimeoutError:
            return None
        finally:
            await sub.unsubscribe()
