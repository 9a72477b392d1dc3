"""The transport kit: what a transport plugin needs from the kernel.

A transport (``cbs.contracts.Bus``) moves bytes; the kernel builds, once per
served endpoint, the handler that turns a delivered request into a reply and
hands it to :meth:`Bus.serve`. This module is public for transport authors
(the ``nats`` and ``jetstream`` plugins use it, and so can yours):

* :func:`endpoint_handler` -- the composed server path of one endpoint as a
  ``RawHandler``: decode, server middleware, schema check, the cell's handler,
  error replies. It returns an :class:`~cbs.contracts.Outcome`, so that a
  transport sends ``outcome.data`` and decides acks and retries on
  ``outcome.ok`` / ``outcome.code``, never on the bytes.
* :func:`start_eagerly` -- run a handler coroutine at once and make a task
  only if it waits. Most cell handlers answer without waiting, so a task per
  message (the usual way to serve messages concurrently) costs more than the
  handler itself. This is Python 3.12's ``eager_task_factory`` idea for one
  coroutine, on 3.11+.
* :func:`drive` -- finish such a coroutine in the calling task from where it
  first waited (what a task would do), for transports that call handlers
  inline (the in-process bus).
* :class:`Intake` -- the bookkeeping of one served subject under load: up to
  ``max_concurrency`` handlers run, up to ``max_pending`` requests (and
  ``max_pending_bytes``) wait in the transport's own queue, the rest are
  refused at once with an ``Unavailable`` reply that carries
  ``details.retry_after``; refusals are counted and logged (one WARNING line
  per second and subject at most).
* :func:`request_sender` -- the innermost step of a client path on one
  subject (encode, ``bus.request``, decode, error replies raised): what a
  client middleware uses to send somewhere else than the target's subject
  (cbs-spec's power-of-two-choices balancer sends to instance subjects).
* :func:`gather_replies` -- publish a control message to every body that
  listens on a subject and collect their JSON answers, sent to a
  ``reply_to`` inbox (the chaos, spec and breaker control subjects);
  :func:`answer_control` -- the handler a body serves such a subject with.
* :func:`error_reply` -- the encoded error reply to raw request bytes that
  were not handled (refused, expired, cut off), addressed to the request's id
  when it has a usable one; :func:`expired` -- whether a request's
  ``cbs-deadline`` header has passed (such a request is not started).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Generic, TypeVar

import orjson

from cbs.contracts import (
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_PENDING_BYTES,
    ERROR_SCHEMA,
    BadRequest,
    Bus,
    CbsError,
    Envelope,
    Outcome,
    RawHandler,
    Unavailable,
    codec,
    parse_subject,
)
from cbs.kernel.middleware import (
    DEADLINE_HEADER,
    Served,
    ServerMiddleware,
    _salvage,
    deadline_left,
    request_sender,
    server_path,
)

__all__ = [
    "answer_control",
    "gather_replies",
    "request_sender",
    "start_eagerly",
    "drive",
    "endpoint_handler",
    "Served",
    "Intake",
    "error_reply",
    "expired",
]

T = TypeVar("T")
Item = TypeVar("Item")

log = logging.getLogger("cbs.transport")


def endpoint_handler(served: Served, factories: Sequence[ServerMiddleware]) -> RawHandler:
    """The server path of one endpoint, composed once with ``factories`` (the
    body's server middleware, outermost first), as a ``RawHandler``."""
    return server_path(served, factories)


async def drive(coro: Coroutine[Any, Any, T], waiting: Any) -> T:
    """Drive ``coro`` on, in the calling task, from where it yielded ``waiting``
    (what its first ``coro.send(None)`` returned), as a task would."""
    while True:
        throw: BaseException | None = None
        if waiting is None:  # a bare yield (asyncio.sleep(0)): one loop turn
            await asyncio.sleep(0)
        else:
            # The coroutine's await flagged the future as blocking; a task
            # clears the flag when it takes the future over, and so do we.
            waiting._asyncio_future_blocking = False
            try:
                await waiting
            except asyncio.CancelledError as exc:
                # Our task was cancelled. If the future was cancelled with it,
                # the coroutine sees that when it resumes; otherwise tell it.
                if not waiting.cancelled():
                    throw = exc
            except BaseException:
                pass
        try:
            waiting = coro.throw(throw) if throw is not None else coro.send(None)
        except StopIteration as stop:
            result: T = stop.value
            return result


def start_eagerly(
    coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop
) -> asyncio.Task[Any] | None:
    """Run ``coro`` until it first waits. Returns ``None`` if it finished (its
    result is dropped; exceptions propagate), else the task that finishes it."""
    context = contextvars.copy_context()
    try:
        waiting = context.run(coro.send, None)
    except StopIteration:
        return None
    return loop.create_task(drive(coro, waiting), context=context)


def error_reply(data: bytes, subject: str, error: CbsError) -> bytes:
    """The encoded error reply to the request ``data`` received on
    ``subject``, for a request the transport answers without running its
    handler (refused, expired, cut off at the drain timeout). It answers the
    request's id when the bytes hold a usable one, so the caller's check
    accepts it; only the id is read, the request is not decoded."""
    try:
        service, verb = parse_subject(subject)
    except BadRequest:  # not a verb's subject (a control subject): use the envelope's own
        try:
            request = codec.decode(data)
        except BadRequest:
            request = Envelope.request("cbs", "unknown", {}, schema=ERROR_SCHEMA)
    else:
        request = _salvage(data, service, verb, ERROR_SCHEMA) or Envelope.request(
            service, verb, {}, schema=ERROR_SCHEMA
        )
    return codec.encode(request.error_reply(error))


def expired(headers: Mapping[str, str] | None) -> bool:
    """Whether the request's ``cbs-deadline`` header has passed (its caller
    has given up: do not start it)."""
    if not headers:
        return False
    left = deadline_left(headers.get(DEADLINE_HEADER), time.time())
    return left is not None and left <= 0


class Intake(Generic[Item]):
    """Admission for one served subject: a transport asks :meth:`try_run`
    for each delivered request (a free handler slot: run it now), else
    :meth:`try_queue` (room in the bounded queue: it waits), else answers with
    :meth:`refusal` at once. When a handler ends, :meth:`finished` hands its
    slot to the oldest waiting item, if any (the transport starts it, after
    checking :func:`expired`). Items are whatever the transport queues (a
    message, a future). ``on_refused`` is called for each refusal (a
    transport's running total for ``TransportState.refused_requests``)."""

    #: Seconds between two WARNING lines about refusals on one subject.
    WARN_EVERY = 1.0

    def __init__(
        self,
        subject: str,
        *,
        max_concurrency: int,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        on_refused: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.subject = subject
        self.max_concurrency = max_concurrency
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.running = 0
        self.pending_bytes = 0
        self.refused = 0
        self._waiting: deque[tuple[Item, int]] = deque()
        self._on_refused = on_refused
        self._clock = clock
        self._seconds: float | None = None  # moving average of a handler's run time
        self._unreported = 0
        self._reported_at = -self.WARN_EVERY
        self._idle: asyncio.Event | None = None

    @property
    def pending(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiting)

    def try_run(self) -> bool:
        """Take a free handler slot (``False``: all are busy)."""
        if self.running < self.max_concurrency:
            self.running += 1
            return True
        return False

    def try_queue(self, item: Item, size: int) -> bool:
        """Queue ``item`` (a request of ``size`` bytes) if there is room."""
        if len(self._waiting) >= self.max_pending or (
            self.pending_bytes + size > self.max_pending_bytes
        ):
            return False
        self._waiting.append((item, size))
        self.pending_bytes += size
        return True

    def withdraw(self, item: Item) -> bool:
        """Take a waiting ``item`` out of the queue (its caller gave up)."""
        for entry in self._waiting:
            if entry[0] is item:
                self._waiting.remove(entry)
                self.pending_bytes -= entry[1]
                return True
        return False

    def finished(self, started: float | None = None) -> Item | None:
        """A handler slot is free again (its handler ran since ``started``,
        a :attr:`clock` reading, or it was not used: ``None``). Returns the
        oldest waiting item, which now holds the slot, or ``None``."""
        if started is not None:
            took = self._clock() - started
            seconds = self._seconds
            self._seconds = took if seconds is None else seconds + (took - seconds) / 8
        if self._unreported:
            self._report()
        if self._waiting:
            item, size = self._waiting.popleft()
            self.pending_bytes -= size
            return item
        self.running -= 1
        if self.running == 0 and self._idle is not None:
            self._idle.set()
        return None

    def take_waiting(self) -> list[Item]:
        """Empty the queue and return what waited (to answer it: stopping)."""
        items = [item for item, _ in self._waiting]
        self._waiting.clear()
        self.pending_bytes = 0
        return items

    async def idle(self) -> None:
        """Wait until no handler runs and nothing waits."""
        while self.running or self._waiting:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def clock(self) -> float:
        return self._clock()

    def retry_after(self) -> float:
        """Seconds after which a refused caller may find room: the time to
        work off what runs and waits now, at the measured handler time."""
        seconds = 1.0 if self._seconds is None else self._seconds
        backlog = (self.running + len(self._waiting)) / self.max_concurrency
        return round(min(max(seconds * backlog, 0.01), 300.0), 3)

    def refusal(self, data: bytes) -> bytes:
        """Count a refused request and return its encoded ``Unavailable`` reply."""
        self.refused += 1
        self._unreported += 1
        if self._on_refused is not None:
            self._on_refused()
        if self._clock() - self._reported_at >= self.WARN_EVERY:
            self._report()
        error = Unavailable(
            "Too many requests waiting; retry later",
            details={"retry_after": self.retry_after()},
        )
        return error_reply(data, self.subject, error)

    def _report(self) -> None:
        now = self._clock()
        since = now - self._reported_at
        if since < self.WARN_EVERY:
            return
        window = min(since, self.WARN_EVERY) if self._reported_at < 0 else since
        log.warning(
            "%s: %d requests refused (Unavailable) in the last %.1f s, queue full"
            " (%d pending, %d bytes)",
            self.subject,
            self._unreported,
            window,
            len(self._waiting),
            self.pending_bytes,
        )
        self._unreported = 0
        self._reported_at = now


_NOTHING = Outcome(b"")


async def gather_replies(
    bus: Bus,
    subject: str,
    message: Mapping[str, Any],
    *,
    inbox_prefix: str,
    accept: Callable[[dict[str, Any]], bool],
    expect: int = 0,
    wait: float = 10.0,
    quiet: float = 0.5,
) -> list[dict[str, Any]]:
    """Publish ``message`` on ``subject`` with ``"reply_to"`` set to a new
    inbox under ``inbox_prefix``, and collect the JSON objects sent there that
    ``accept`` takes (anything else is dropped): until ``expect`` arrived;
    without ``expect``, until none came for ``quiet`` seconds after the last;
    in any case for ``wait`` seconds at most. Bodies answer a control subject
    each on their own, so a scatter and gather, not a request."""
    inbox = f"{inbox_prefix}{uuid.uuid4().hex}"
    replies: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def collect(data: bytes, headers: Mapping[str, str] | None) -> Outcome:
        try:
            reply = orjson.loads(data)
        except orjson.JSONDecodeError:
            return _NOTHING
        if isinstance(reply, dict) and accept(reply):
            replies.append(reply)
            arrived.set()
        return _NOTHING

    sub = await bus.serve(inbox, inbox, collect, max_concurrency=16)
    try:
        await bus.publish(subject, orjson.dumps({**message, "reply_to": inbox}))
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            if expect and len(replies) >= expect:
                break
            arrived.clear()
            try:
                limit = min(left, quiet) if replies and not expect else left
                await asyncio.wait_for(arrived.wait(), limit)
            except TimeoutError:
                if replies and not expect:
                    break
    finally:
        await sub.stop()
    return replies


def answer_control(
    bus: Bus,
    reply_prefix: str,
    handle: Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]] | Mapping[str, Any]],
) -> RawHandler:
    """The other side of :func:`gather_replies`: a ``RawHandler`` that decodes
    a control message (a JSON object; anything else is dropped), gives it to
    ``handle`` and publishes the answer to its ``reply_to``, if that is an
    inbox under ``reply_prefix`` (a control subject answers nowhere else)."""

    async def answer(data: bytes, headers: Mapping[str, str] | None) -> Outcome:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return _NOTHING
        if not isinstance(message, dict):
            return _NOTHING
        reply = handle(message)
        if inspect.isawaitable(reply):
            reply = await reply
        reply_to = message.get("reply_to")
        if isinstance(reply_to, str) and reply_to.startswith(reply_prefix):
            await bus.publish(reply_to, orjson.dumps(reply))
        return _NOTHING

    return answer
