"""The two seams every implementation plugs into: a ``Bus`` and a ``Cell``.

A bus moves encoded envelopes (bytes) between parties; the kernel encodes and
decodes, so every transport gets the same validation and error replies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = ["Bus", "Subscription", "Cell", "Endpoint", "RawHandler", "PayloadHandler"]

#: What a bus calls for each request it delivers: encoded request and headers
#: in, encoded reply out.
RawHandler = Callable[[bytes, Mapping[str, str] | None], Awaitable[bytes]]

#: What a cell implements per verb: request payload in, reply payload out.
PayloadHandler = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]]


@runtime_checkable
class Subscription(Protocol):
    """A served subject. ``stop()`` stops new deliveries and waits for the
    in-flight handlers of this subscription to finish."""

    async def stop(self) -> None: ...


@runtime_checkable
class Bus(Protocol):
    """A transport. ``shared`` tells whether parties in other processes can
    reach what this bus serves (``False`` for the in-process bus)."""

    name: str
    shared: bool

    async def start(self) -> None:
        """Connect. Raise a ``CbsError`` with a one-line message on failure."""

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """Send one request, return the encoded reply. Raise ``Timeout`` when
        no reply comes in ``timeout`` seconds and ``NotFound`` when nobody
        serves ``subject``."""

    async def publish(
        self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send without waiting for a reply (one member of each queue group)."""

    async def serve(
        self, subject: str, queue: str, handler: RawHandler, *, max_concurrency: int
    ) -> Subscription:
        """Deliver requests on ``subject`` to ``handler``, sharing them with the
        other members of queue group ``queue``; run up to ``max_concurrency``
        handlers at once."""

    async def close(self) -> None:
        """Drain and disconnect: in-flight requests complete first."""


@attrs.frozen
class Endpoint:
    """One verb of a cell: its subject is ``cbs.{service}.{verb}``."""

    verb: str
    schema: str
    handler: PayloadHandler
    reply_schema: str | None = None
    #: Other request schemas accepted too, e.g. the previous major version.
    also_accepts: tuple[str, ...] = ()
    #: Safe to call twice with the same request (lets clients retry it).
    idempotent: bool = False
    #: Also served from a durable, persistent inbox (e.g. JetStream), where
    #: ``Body.send`` delivers at least once.
    durable: bool = False


@runtime_checkable
class Cell(Protocol):
    """What the body needs from a cell: identity, endpoints and lifecycle."""

    id: str
    service: str
    category: str
    version: str
    max_concurrency: int
    error_schema: str

    @property
    def endpoints(self) -> Sequence[Endpoint]: ...

    def manifest(self) -> dict[str, Any]:
        """The cell's manifest ("DNA"), valid against ``manifest.schema.json``."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
