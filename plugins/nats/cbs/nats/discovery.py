"""Discovery on the NATS services protocol (ADR-32, ``io.nats.micro.v1``).

Each served cell is one service: name = cell id, version = cell version,
endpoints = its verbs (subject, queue group), metadata = category and schemas.
The metadata also says which server and cluster the body is connected to
(``cbs.server``, ``cbs.cluster``), so a listing across a cluster or a
supercluster shows where each instance is. Every body answers
``$SRV.{PING,INFO,STATS}``, ``$SRV.<verb>.<name>`` and
``$SRV.<verb>.<name>.<id>`` for its cells, so ``nats micro ls`` and any ADR-32
client see CBS cells. Stats come from the middleware in stats.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from cbs.contracts import Cell, Endpoint
from cbs.nats.capability import NatsConnection
from cbs.nats.stats import EndpointStats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.nuid import NUID

__all__ = ["Discovery", "discover", "summarize"]

#: The metadata that endpoint options advertise (``EndpointOptionRegistry.metadata``).
Metadata = Callable[[Endpoint], Mapping[str, str]]

PING = "io.nats.micro.v1.ping_response"
INFO = "io.nats.micro.v1.info_response"
STATS = "io.nats.micro.v1.stats_response"


def _service(cell: Cell, instance: str, where: dict[str, str]) -> dict[str, Any]:
    return {
        "name": cell.id,
        "id": instance,
        "version": cell.version,
        "metadata": {
            "cbs.category": cell.category,
            "cbs.service": cell.service,
            "cbs.language": str(cell.manifest().get("language", "python")),
            **where,
        },
    }


def _endpoints(cell: Cell, more: Metadata | None = None) -> list[dict[str, Any]]:
    result = []
    for e in cell.endpoints:
        metadata = {} if more is None else dict(more(e))
        metadata["cbs.schema"] = e.schema
        if e.reply_schema:
            metadata["cbs.reply_schema"] = e.reply_schema
        result.append(
            {
                "name": e.verb,
                "subject": f"cbs.{cell.service}.{e.verb}",
                "queue_group": cell.service,
                "metadata": metadata,
            }
        )
    return result


class Discovery:
    """Answers ADR-32 requests for the cells of one body."""

    def __init__(self, connection: NatsConnection, metadata: Metadata | None = None) -> None:
        self._nc = connection.client
        self._connection = connection
        self._metadata = metadata
        self._table = connection.stats  # kept by the transport as it answers
        self._nuid = NUID()
        self._cells: list[tuple[Cell, str, str]] = []  # cell, instance id, started
        self._subs: list[Any] = []

    async def add(self, cell: Cell) -> None:
        instance = self._nuid.next().decode()
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        self._cells.append((cell, instance, started))
        if not self._subs:
            for verb in ("PING", "INFO", "STATS"):
                for subject in (f"$SRV.{verb}", f"$SRV.{verb}.*", f"$SRV.{verb}.*.*"):
                    self._subs.append(await self._nc.subscribe(subject, cb=self._on_request))
            await self._nc.flush()

    async def remove(self, cell: Cell) -> None:
        """Stop answering for this cell object (another version may stay)."""
        self._cells = [entry for entry in self._cells if entry[0] is not cell]

    def _reply(
        self, kind: str, cell: Cell, instance: str, started: str, where: dict[str, str]
    ) -> dict[str, Any]:
        body = _service(cell, instance, where)
        if kind == "PING":
            return {"type": PING, **body}
        if kind == "INFO":
            description = cell.manifest().get("purpose", "")
            return {
                "type": INFO,
                **body,
                "description": description,
                "endpoints": _endpoints(cell, self._metadata),
            }
        endpoints = []
        for info in _endpoints(cell, self._metadata):
            stats = self._table.get(info["subject"]) or EndpointStats()
            endpoints.append(
                {
                    "name": info["name"],
                    "subject": info["subject"],
                    "queue_group": info["queue_group"],
                    **stats.to_dict(),
                }
            )
        return {"type": STATS, **body, "started": started, "endpoints": endpoints}

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            return
        tokens = msg.subject.split(".")
        kind = tokens[1]
        name = tokens[2] if len(tokens) > 2 else None
        ident = tokens[3] if len(tokens) > 3 else None
        where = await self._where()
        for cell, instance, started in self._cells:
            if (name is None or name == cell.id) and (ident is None or ident == instance):
                reply = self._reply(kind, cell, instance, started, where)
                await self._nc.publish(msg.reply, orjson.dumps(reply))

    async def _where(self) -> dict[str, str]:
        info = await self._connection.server()
        where = {"cbs.server": info.name} if info.name else {}
        if info.cluster:
            where["cbs.cluster"] = info.cluster
        return where

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        self._subs.clear()
        self._cells.clear()


async def discover(
    nc: Client, kind: str = "STATS", *, wait: float = 0.5, quiet: float = 0.15
) -> list[dict[str, Any]]:
    """Every ADR-32 reply to ``$SRV.<kind>`` that arrives within ``wait``
    seconds (stopping early after ``quiet`` seconds without a new one)."""
    replies: list[dict[str, Any]] = []
    inbox = nc.new_inbox()
    arrived = asyncio.Event()

    async def collect(msg: Msg) -> None:
        try:
            replies.append(orjson.loads(msg.data))
        except orjson.JSONDecodeError:
            return
        arrived.set()

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(f"$SRV.{kind}", b"", reply=inbox)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), min(left, quiet if replies else left))
            except TimeoutError:
                if replies:
                    break
    finally:
        await sub.unsubscribe()
    return replies


def summarize(infos: list[dict[str, Any]], stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells seen on a bus, one entry per cell id, for ``cbs cells``: like
    ``cbs cells --json`` plus ``language`` (metadata ``cbs.language``),
    ``instances``, ``requests`` and ``errors`` (totals), ``clusters`` (the NATS
    clusters the instances are on, comma-separated) and ``per_instance``
    counts (``requests``, ``errors``, ``processing_ns``: the total handler
    time), server and cluster."""
    cells: dict[str, dict[str, Any]] = {}
    for info in infos:
        if info.get("type") != INFO:
            continue
        meta = info.get("metadata") or {}
        entry = cells.setdefault(
            info["name"],
            {
                "id": info["name"],
                "name": info["name"],
                "category": meta.get("cbs.category", ""),
                "version": info.get("version", ""),
                "service": meta.get("cbs.service", ""),
                "subjects": [e["subject"] for e in info.get("endpoints", [])],
                "schemas": [
                    (e.get("metadata") or {}).get("cbs.schema", "")
                    for e in info.get("endpoints", [])
                ],
                "purpose": info.get("description", ""),
                "language": meta.get("cbs.language", "unknown"),
                "endpoints": [
                    {
                        "verb": e.get("name", ""),
                        "subject": e.get("subject", ""),
                        "schema": (e.get("metadata") or {}).get("cbs.schema", ""),
                        "reply_schema": (e.get("metadata") or {}).get("cbs.reply_schema"),
                        "metadata": {
                            k: v
                            for k, v in (e.get("metadata") or {}).items()
                            if k not in ("cbs.schema", "cbs.reply_schema")
                        },
                    }
                    for e in info.get("endpoints", [])
                ],
                "instances": 0,
                "requests": 0,
                "errors": 0,
                "per_instance": {},
            },
        )
        entry["instances"] += 1
        cluster = meta.get("cbs.cluster")
        if cluster:
            seen = set(filter(None, entry.get("clusters", "").split(",")))
            entry["clusters"] = ",".join(sorted(seen | {cluster}))
        where = {k[4:]: meta[k] for k in ("cbs.server", "cbs.cluster") if meta.get(k)}
        if where:
            counts = {"requests": 0, "errors": 0}
            entry["per_instance"].setdefault(info.get("id", ""), counts).update(where)
    for stat in stats:
        found = cells.get(stat.get("name", ""))
        if found is None or stat.get("type") != STATS:
            continue
        entry = found
        requests = sum(e.get("num_requests", 0) for e in stat.get("endpoints", []))
        errors = sum(e.get("num_errors", 0) for e in stat.get("endpoints", []))
        busy_ns = sum(e.get("processing_time", 0) for e in stat.get("endpoints", []))
        entry["requests"] += requests
        entry["errors"] += errors
        counts = {"requests": requests, "errors": errors, "processing_ns": busy_ns}
        entry["per_instance"].setdefault(stat["id"], {}).update(counts)
    return sorted(cells.values(), key=lambda c: c["id"])
