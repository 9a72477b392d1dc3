"""Which stored requests a service has handled: a JetStream key-value bucket.

``CBS_DONE_{service}`` (the stream ``KV_CBS_DONE_{service}``, subjects
``$KV.CBS_DONE_{service}.{key}``, one revision per key, entries expire
``jetstream_dedup_window`` after their last write) holds one record per
stored request, keyed by its ``Nats-Msg-Id`` (the envelope id for a send):

* ``run``  a handler has claimed it (written with compare-and-set: only one
  claim can be created; refreshed while the handler runs);
* ``done`` the handler succeeded (written before the ack);
* ``failed`` the handler failed and the request is retried;
* ``dead`` the request went to the dead letters.

The records are plain JSON (``{"s": "done", "o": owner, "t": unix time}``), so
``nats kv get CBS_DONE_printer <id>`` shows them.
"""

from __future__ import annotations

import hashlib
import re
import time

import attrs
import nats.errors
import nats.js.errors
import orjson
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from cbs.jetstream.publish import ATTEMPT, publish_stored
from cbs.jetstream.settings import Settings

__all__ = [
    "DedupStore",
    "Record",
    "RUN",
    "DONE",
    "FAILED",
    "DEAD",
    "done_bucket",
    "done_config",
    "dedup_key",
]

RUN, DONE, FAILED, DEAD = "run", "done", "failed", "dead"
#: The JetStream API error codes of a compare-and-set that lost.
_WRONG_LAST = frozenset({10071, 10164})
_KEY_RE = re.compile(r"[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*")


def done_bucket(service: str) -> str:
    return f"CBS_DONE_{service}"


def done_config(service: str, settings: Settings) -> StreamConfig:
    """The stream behind the bucket, as ``nats kv add`` would make it."""
    bucket = done_bucket(service)
    window = settings.dedup_window
    return StreamConfig(
        name=f"KV_{bucket}",
        subjects=[f"$KV.{bucket}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.NEW,
        max_msgs_per_subject=1,
        max_age=window,
        duplicate_window=min(window, 120.0),
        num_replicas=settings.replicas,
        allow_rollup_hdrs=True,
        deny_delete=True,
        allow_direct=True,
    )


def dedup_key(msg_id: str | None, data: bytes, seq: int) -> str:
    """The record's key: the stored message's ``Nats-Msg-Id`` (the envelope id
    for a send; a replay or a dead-letter retry has its own), else the
    envelope id in the data, else the stream sequence. A value that is no
    valid key is hashed."""
    ident = msg_id
    if not ident:
        try:
            found = orjson.loads(data).get("id")
        except (orjson.JSONDecodeError, AttributeError):
            found = None
        ident = found if isinstance(found, str) and found else f"seq.{seq}"
    if _KEY_RE.fullmatch(ident) is None:
        ident = "h." + hashlib.sha256(ident.encode("utf-8", "replace")).hexdigest()
    return ident


@attrs.frozen
class Record:
    state: str
    owner: str
    at: float  # unix time of the write (the writer's clock)
    revision: int


class DedupStore:
    """The records of one service, written and read by one inbox (``owner``
    names that inbox's run: random, new at every start)."""

    def __init__(self, js: JetStreamContext, service: str, owner: str, timeout: float) -> None:
        self.js = js
        self.bucket = done_bucket(service)
        self.stream = f"KV_{self.bucket}"
        self.owner = owner
        self.timeout = timeout
        self._prefix = f"$KV.{self.bucket}."

    def _value(self, state: str) -> bytes:
        return orjson.dumps({"s": state, "o": self.owner, "t": time.time()})

    async def _write(self, key: str, state: str, last: int) -> int | None:
        """One compare-and-set attempt: the new revision, or ``None`` when the
        key's revision is not ``last`` (0: the key must not exist)."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(last)}
        try:
            ack = await self.js.publish(
                self._prefix + key, self._value(state), timeout=ATTEMPT, headers=headers
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST:
                return None
            raise
        return ack.seq

    async def claim(self, key: str) -> tuple[int | None, Record | None]:
        """Create the ``run`` record: ``(revision, None)``; or, when a record
        exists, ``(None, that record)`` (``(None, None)`` if it vanished
        meanwhile: expired; try again)."""
        revision = await self._write(key, RUN, 0)
        if revision is not None:
            return revision, None
        return None, await self.get(key)

    async def take_over(self, key: str, record: Record) -> int | None:
        """Replace ``record`` by a claim of ours, unless someone changed it first."""
        return await self._write(key, RUN, record.revision)

    async def refresh(self, key: str, revision: int) -> int | None:
        """Rewrite our claim (it shows the handler is alive); ``None`` if it is
        no longer ours."""
        return await self._write(key, RUN, revision)

    async def finish(self, key: str, state: str) -> None:
        """Write ``done``, ``failed`` or ``dead``, retrying until the server
        answers or ``timeout`` runs out (``Timeout``, ``Unavailable``)."""
        await publish_stored(
            self.js, self._prefix + key, self._value(state), {}, timeout=self.timeout
        )

    async def get(self, key: str) -> Record | None:
        try:
            msg = await self.js.get_msg(self.stream, subject=self._prefix + key, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        try:
            value = orjson.loads(msg.data or b"{}")
            return Record(str(value["s"]), str(value["o"]), float(value["t"]), msg.seq or 0)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # Not ours (written by hand?): treat it as an abandoned claim.
            return Record(FAILED, "", 0.0, msg.seq or 0)


#: What a failed store operation raises (besides CbsError from finish).
STORE_ERRORS: tuple[type[Exception], ...] = (
    nats.errors.Error,
    nats.js.errors.Error,
    TimeoutError,
)
