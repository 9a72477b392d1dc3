"""The two seams every implementation plugs into: a ``Bus`` and a ``Cell``.

A bus moves encoded envelopes (bytes) between parties; the kernel encodes and
decodes, so every transport gets the same validation and error replies. What
the kernel's server path hands back for each delivery is an :class:`Outcome`:
the reply as an envelope *and* as bytes, so that whoever needs to know whether
a request succeeded (a durable inbox, metrics) reads a field, never the bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from cbs.contracts.envelope import Envelope
from cbs.contracts.errors import CbsError

__all__ = [
    "Bus",
    "Subscription",
    "Cell",
    "Endpoint",
    "Outcome",
    "RawHandler",
    "PayloadHandler",
    "ReplyCheck",
    "WrongReply",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_BYTES",
]

#: Requests of one served subject that may wait for a free handler slot
#: (per subscription, i.e. per verb and process) before new ones are refused.
DEFAULT_MAX_PENDING = 1000
#: Bytes of requests that may wait so, whatever their number.
DEFAULT_MAX_PENDING_BYTES = 16 * 1024 * 1024


@attrs.frozen
class Outcome:
    """How one delivered request ended: the encoded reply (what goes back on
    the wire), the reply envelope (``None`` for a handler that answers
    something other than an envelope, e.g. a control subject) and, for an
    error reply, the error."""

    data: bytes
    reply: Envelope | None = None
    error: CbsError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def code(self) -> str | None:
        """The error code of an error reply (``None`` on success)."""
        return None if self.error is None else self.error.code


#: What a bus calls for each request it delivers: encoded request and headers
#: in, the :class:`Outcome` out (the bus sends ``outcome.data`` back).
RawHandler = Callable[[bytes, Mapping[str, str] | None], Awaitable[Outcome]]


class WrongReply(Exception):
    """Raised by a :data:`ReplyCheck` for bytes that are not the reply it waits
    for (another request's id, not an envelope at all): the bus drops them,
    counts them and keeps waiting for the real reply."""


#: Checks and decodes the reply to one request; raises :class:`WrongReply` to
#: have the bus drop what arrived and keep waiting.
ReplyCheck = Callable[[bytes], Any]

#: What a cell implements per verb: request payload in, reply payload out.
PayloadHandler = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]]


@runtime_checkable
class Subscription(Protocol):
    """A served subject. ``stop()`` stops new deliveries and waits for the
    in-flight handlers of this subscription (and the requests waiting for a
    slot) to finish. When the body gives up waiting (its ``drain_timeout``)
    it cancels ``stop()``: the subscription should then answer what is still
    waiting or running with ``Unavailable`` and cancel those handlers."""

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
        check: ReplyCheck | None = None,
    ) -> Any:
        """Send one request and return the reply: ``check(data)`` of the first
        reply that ``check`` accepts (without ``check``, the first reply's
        bytes). A reply for which ``check`` raises :class:`WrongReply` is
        dropped and counted, and the wait goes on. Raise ``Timeout`` when no
        accepted reply comes in ``timeout`` seconds and ``NotFound`` when
        nobody serves ``subject``."""

    async def publish(
        self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send without waiting for a reply (one member of each queue group)."""

    async def serve(
        self,
        subject: str,
        queue: str,
        handler: RawHandler,
        *,
        max_concurrency: int,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> Subscription:
        """Deliver requests on ``subject`` to ``handler``, sharing them with the
        other members of queue group ``queue``; run up to ``max_concurrency``
        handlers at once. Requests beyond that wait, up to ``max_pending`` of
        them and ``max_pending_bytes`` of request bytes; beyond those the bus
        answers at once with an ``Unavailable`` error reply carrying
        ``details.retry_after`` (``cbs.kernel.transport.Intake`` does the
        counting). A waiting request whose ``cbs-deadline`` header has passed
        when its turn comes is answered ``Timeout`` without running. The body
        always passes both keywords: a transport must accept them."""

    async def close(self) -> None:
        """Drain and disconnect: in-flight requests complete first."""

    def capabilities(self) -> Sequence[object]:
        """Typed capabilities this transport offers other plugins once started
        (for NATS: the connection; for any bus: its connection state). The
        body publishes them after ``start()`` and withdraws them at close."""


@attrs.frozen(eq=False)
class Endpoint:
    """One verb of a cell: its subject is ``cbs.{service}.{verb}``."""

    verb: str
    schema: str
    handler: PayloadHandler
    reply_schema: str | None = None
    #: Other request schemas accepted too, e.g. the previous major version.
    also_accepts: tuple[str, ...] = ()
    #: Options that plugins declare and read (``durable``, ``idempotent``, ...):
    #: the kernel only keeps them; see ``cbs.kernel.EndpointOption``.
    options: Mapping[str, Any] = attrs.field(factory=dict)


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
