"""The schema registry: every published request schema of every verb, in the
JetStream key-value bucket ``CBS_SCHEMAS``.

Keys are ``{service}.{verb}.{version}``; versions count from 1 per verb, in
the order schemas were first published (as Confluent numbers the versions of
a subject). A value is a JSON object: ``service``, ``verb``, ``version``,
``label`` (the envelope's ``schema``, e.g. ``demo/v2/Name``), ``hash``,
``schema`` (the JSON Schema), and, when known, ``reply_label`` and
``reply_schema``, the ``cell`` and its ``cell_version``. Publishing the same
label with the same content again adds nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from cbs.contracts import Cell
from cbs.kernel import Body, StashKey
from cbs.schemas.documents import fingerprint
from cbs.schemas.validation import contract_of

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = ["BUCKET", "Registry", "entries_of", "published"]

BUCKET = "CBS_SCHEMAS"

log = logging.getLogger("cbs.schemas")

#: Publications to the registry still running, per body.
TASKS: StashKey[set[asyncio.Task[None]]] = StashKey()


async def published(body: Body) -> None:
    """Wait until the schema publications ``body`` started have ended
    (published, or refused with a WARNING line)."""
    tasks = body.stash.get(TASKS, set())
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def entries_of(cell: Cell) -> list[dict[str, Any]]:
    """What a cell publishes: per verb with schemas, the older accepted
    request schemas first, then the current one."""
    found: list[dict[str, Any]] = []
    for endpoint in cell.endpoints:
        contract = contract_of(endpoint)
        if contract is None:
            continue
        common = {
            "service": cell.service,
            "verb": endpoint.verb,
            "cell": cell.id,
            "cell_version": cell.version,
        }
        for label, schema in contract.older.items():
            found.append({**common, "label": label, "schema": schema})
        if contract.request is not None:
            entry: dict[str, Any] = {**common, "label": contract.label}
            entry["schema"] = contract.request
            if contract.reply is not None:
                entry["reply_label"] = contract.reply_label
                entry["reply_schema"] = contract.reply
            found.append(entry)
    for entry in found:
        entry["hash"] = fingerprint(entry["schema"])
    return found


class Registry:
    """The bucket, on a JetStream context."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv: KeyValue | None = None

    async def _bucket(self, *, create: bool) -> KeyValue | None:
        if self._kv is None:
            from nats.js.errors import BucketNotFoundError, NotFoundError

            try:
                self._kv = await self._js.key_value(BUCKET)
            except (BucketNotFoundError, NotFoundError):
                if not create:
                    return None
                self._kv = await self._js.create_key_value(
                    bucket=BUCKET, history=1, description="CBS: published verb schemas"
                )
        return self._kv

    async def history(self, service: str, verb: str) -> list[dict[str, Any]]:
        """Every version of the verb's request schema, oldest first (read
        ``.1``, ``.2``, ... up to the first missing number)."""
        from nats.js.errors import KeyNotFoundError

        kv = await self._bucket(create=False)
        if kv is None:
            return []
        found: list[dict[str, Any]] = []
        while True:
            try:
                entry = await kv.get(f"{service}.{verb}.{len(found) + 1}")
            except KeyNotFoundError:
                return found
            if not entry.value:
                return found
            found.append(orjson.loads(entry.value))

    async def get(
        self, service: str, verb: str, version: int | None = None
    ) -> dict[str, Any] | None:
        """One version (default: the latest), or ``None``."""
        versions = await self.history(service, verb)
        if version is None:
            return versions[-1] if versions else None
        return next((e for e in versions if e.get("version") == version), None)

    async def publish(self, entry: Mapping[str, Any]) -> int:
        """Store ``entry`` as the verb's next version unless a version with
        the same label and hash exists; returns its version."""
        from nats.js.errors import KeyWrongLastSequenceError

        kv = await self._bucket(create=True)
        assert kv is not None
        service, verb = entry["service"], entry["verb"]
        for _ in range(10):  # another body may take the same number meanwhile
            versions = await self.history(service, verb)
            for old in versions:
                if old.get("label") == entry["label"] and old.get("hash") == entry["hash"]:
                    return int(old["version"])
            version = 1 + max((int(e["version"]) for e in versions), default=0)
            value = orjson.dumps({**entry, "version": version}, option=orjson.OPT_SORT_KEYS)
            try:
                await kv.create(f"{service}.{verb}.{version}", value)
            except KeyWrongLastSequenceError:
                continue
            return version
        raise RuntimeError(f"{service}.{verb}: no free version number in the registry")


async def publish_cell(js: JetStreamContext, cell: Cell, timeout: float) -> None:
    """Publish a served cell's schemas; a refusal or a timeout is one WARNING
    line (an identity that may not write the bucket serves all the same)."""
    entries = entries_of(cell)
    if not entries:
        return
    registry = Registry(js)
    try:
        async with asyncio.timeout(timeout):
            for entry in entries:
                await registry.publish(entry)
    except Exception as exc:  # permissions, no JetStream, a timeout: never fatal
        log.warning("cell %s: schemas not published to %s: %s", cell.id, BUCKET, type(exc).__name__)
