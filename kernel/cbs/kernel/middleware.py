"""Per-message paths, composed once per endpoint at start-up.

Client side (``Body.request``)::

    [client middleware ...] -> encode -> bus.request(check) -> raise on error

    ``check`` decodes each reply that arrives; one that does not answer this
    request (wrong id, not an envelope) is dropped by the bus and counted,
    and the wait goes on: only the matching reply completes the call.

Server side (what a bus delivers)::

    decode -> [server middleware ...] -> schema check -> cell handler -> reply
    -> encode -> Outcome;  any exception becomes an error reply (tracebacks
    only in the log)

Middleware is ordered by **phase**, outermost first (:data:`PHASES`), then by
``order`` within a phase (lower wraps outside), then by registration.

A client handler takes ``(request, headers, timeout)`` and returns the reply
envelope of a *successful* reply; failures are raised as ``CbsError`` (the
transport's own ``NotFound``, nobody serves the subject, as its subclass
``NoResponders``, unlike a cell's ``NotFound`` error reply). A server
handler takes ``(request, headers)`` and returns the reply envelope, or raises.
``headers`` on the client side is a fresh dict middleware may add to.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import orjson

from cbs.contracts import (
    BadRequest,
    Bus,
    CbsError,
    Cell,
    Endpoint,
    Envelope,
    Internal,
    NoResponders,
    NotFound,
    Outcome,
    RawHandler,
    codec,
)
from cbs.contracts.envelope import UUID4_RE, check_name, check_schema
from cbs.kernel.registries import PHASES

__all__ = [
    "ClientHandler",
    "ServerHandler",
    "ClientMiddleware",
    "ServerMiddleware",
    "Target",
    "Served",
    "Request",
    "current_request",
    "PHASES",
    "compose",
    "client_chain",
    "server_path",
    "DEADLINE_HEADER",
    "deadline_left",
]

#: Header carrying the absolute deadline of a request: Unix time in seconds,
#: as a decimal number with millisecond precision, e.g. ``1767225600.250``.
#: Whoever sets it (cbs-breaker's attempt timeout does) promises that the
#: caller has given up by then: transports do not start queued requests whose
#: deadline has passed, and cbs-breaker's server guard cuts handlers off at it.
DEADLINE_HEADER = "cbs-deadline"


def deadline_left(raw: str | None, now: float) -> float | None:
    """Seconds left before a ``cbs-deadline`` value at Unix time ``now``
    (negative once passed; ``None`` for no value or one that is not a
    finite number, which is ignored)."""
    if raw is None:
        return None
    try:
        deadline = float(raw)
    except ValueError:
        return None
    return deadline - now if math.isfinite(deadline) else None


log = logging.getLogger("cbs.kernel")

ClientHandler = Callable[[Envelope, dict[str, str], float], Awaitable[Envelope]]
ServerHandler = Callable[[Envelope, Mapping[str, str]], Awaitable[Envelope]]


@attrs.frozen
class Target:
    """Where a client chain sends: a verb of a service, and its endpoint when
    the cell is installed in this process (so its options are known)."""

    service: str
    verb: str
    endpoint: Endpoint | None = None

    @property
    def subject(self) -> str:
        return f"cbs.{self.service}.{self.verb}"


@attrs.frozen
class Served:
    """An endpoint this body serves."""

    cell: Cell
    endpoint: Endpoint

    @property
    def subject(self) -> str:
        return f"cbs.{self.cell.service}.{self.endpoint.verb}"

    @property
    def queue_group(self) -> str:
        return self.cell.service


ClientMiddleware = Callable[[Target, ClientHandler], ClientHandler]
ServerMiddleware = Callable[[Served, ServerHandler], ServerHandler]


@attrs.frozen
class Request:
    """The request being handled, for handlers that need more than the payload."""

    envelope: Envelope
    headers: Mapping[str, str]


# Holds (envelope, headers); the Request is built only when a handler asks.
_current: contextvars.ContextVar[tuple[Envelope, Mapping[str, str]]] = contextvars.ContextVar(
    "cbs_request"
)


def current_request() -> Request:
    """The request the calling handler is serving (``LookupError`` outside one)."""
    return Request(*_current.get())


def compose(factories: Sequence[Callable[[Any, Any], Any]], target: Any, inner: Any) -> Any:
    """``f1(target, f2(target, ... inner))``: the first factory wraps outside."""
    handler = inner
    for factory in reversed(factories):
        handler = factory(target, handler)
    return handler


def client_chain(bus: Bus, target: Target, factories: Sequence[ClientMiddleware]) -> ClientHandler:
    """The composed client path for one target."""
    handler: ClientHandler = compose(factories, target, request_sender(bus, target.subject))
    return handler


def request_sender(bus: Bus, subject: str) -> ClientHandler:
    """The innermost step of a client path: encode, ``bus.request`` on
    ``subject``, decode the reply (an error reply raises its ``CbsError``;
    nobody serving the subject raises ``NoResponders``)."""
    bus_request = bus.request
    encode = codec.encode
    decode_reply = codec.decode_reply

    async def send(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
        try:
            reply: Envelope = await bus_request(
                subject,
                encode(request),
                timeout=timeout,
                headers=headers or None,
                check=lambda data: decode_reply(data, request),
            )
        except NotFound as exc:  # from the transport itself: nobody serves the subject
            if isinstance(exc, NoResponders):
                raise
            raise NoResponders(exc.message, details=exc.details) from None
        if reply.error is not None:
            raise CbsError.from_wire(reply.error)
        return reply

    return send


def _salvage(data: bytes, service: str, verb: str, schema: str) -> Envelope | None:
    """A request-shaped envelope to address an error reply to, from request
    bytes that were not decoded (or failed to), when they hold a usable id
    (else ``None``). Only the id is read from ``data``."""
    try:
        obj = orjson.loads(data)
        ident = obj["id"] if isinstance(obj, dict) else None
    except (orjson.JSONDecodeError, KeyError):
        return None
    if not isinstance(ident, str) or UUID4_RE.fullmatch(ident) is None:
        return None
    return Envelope(id=ident, service=service, verb=verb, schema=schema, payload={})


def server_path(served: Served, factories: Sequence[ServerMiddleware]) -> RawHandler:
    """The composed server path for one endpoint, as a bus ``RawHandler``
    (public as ``cbs.kernel.transport.endpoint_handler``)."""
    cell, endpoint = served.cell, served.endpoint
    service, verb = cell.service, endpoint.verb
    accepts = frozenset((endpoint.schema, *endpoint.also_accepts))
    reply_schema = endpoint.reply_schema
    error_schema = cell.error_schema
    call_cell = endpoint.handler
    encode = codec.encode
    trusted = Envelope.trusted
    # A reply's route is this endpoint's (and the request's schema, already
    # checked, when it names no reply schema of its own): checked once here.
    check_name("service", service)
    check_name("verb", verb)
    if reply_schema is not None:
        check_schema(reply_schema)

    async def invoke(request: Envelope, headers: Mapping[str, str]) -> Envelope:
        if request.schema not in accepts:
            raise BadRequest(
                f"Unsupported schema '{request.schema}'",
                details={"field": "schema", "accepts": sorted(accepts)},
            )
        token = _current.set((request, headers))
        try:
            result = await call_cell(request.payload)  # type: ignore[arg-type]
        finally:
            _current.reset(token)
        if type(result) is not dict:
            if not isinstance(result, Mapping):
                log.error("cell %s verb %s returned %s, not a mapping", cell.id, verb, type(result))
                raise Internal()
            result = dict(result)
        schema = request.schema if reply_schema is None else reply_schema
        return trusted(request.id, service, verb, schema, result)

    chain: ServerHandler = compose(factories, served, invoke)

    def fail(request: Envelope, exc: BaseException) -> Outcome:
        if isinstance(exc, CbsError):
            error = exc
        else:
            log.error(
                "cell %s failed on %s (envelope id %s)",
                cell.id,
                served.subject,
                request.id,
                exc_info=exc,
            )
            error = Internal()
        reply = request.error_reply(error, schema=error_schema)
        return Outcome(encode(reply), reply, error)

    async def handle(data: bytes, headers: Mapping[str, str] | None) -> Outcome:
        try:
            request = codec.decode(data)
            if request.service != service or request.verb != verb:
                raise BadRequest("Envelope service and verb do not match the subject")
            if request.payload is None:
                raise BadRequest("A request must carry a payload")
        except BadRequest as exc:
            addressed = _salvage(data, service, verb, endpoint.schema) or Envelope.request(
                service, verb, {}, schema=endpoint.schema
            )
            return fail(addressed, exc)
        try:
            reply = await chain(request, headers or {})
            if reply.error is not None:  # a middleware answered with an error envelope
                return Outcome(encode(reply), reply, CbsError.from_wire(reply.error))
            return Outcome(encode(reply), reply)
        except Exception as exc:
            return fail(request, exc)
        except asyncio.CancelledError as exc:
            if _being_cancelled():  # the body or the transport stops it: pass that on
                raise
            # The cell raised it of its own accord (nobody cancelled this
            # task): a crash like any other, or it would end a task that is
            # not its own (the transport's reading, when it ran eagerly).
            return fail(request, exc)

    return handle


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
