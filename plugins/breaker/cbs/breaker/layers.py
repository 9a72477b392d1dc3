"""The resilience layers, as client middleware factories, and the server's
deadline guard. Outermost first, each wrapping the next::

    deadline -> bulkhead -> retry -> circuit_breaker -> attempt_timeout -> transport

* ``deadline`` sets the call's overall budget: the caller's timeout, capped by
  the configured ``deadline``, by a ``cbs-deadline`` header the caller gave,
  and by the deadline of the request being handled when a handler calls out.
  Every inner layer receives what is left of it as its ``timeout``.
* ``bulkhead`` bounds the calls in flight; waiting for a slot uses the budget.
* ``retry`` repeats failed attempts of idempotent verbs with backoff, within
  the budget.
* ``circuit_breaker`` sees every attempt, retried or not, and fails fast when
  open.
* ``attempt_timeout`` bounds one attempt and writes its deadline in the
  ``cbs-deadline`` header, so the callee can give up when the caller does.

A layer a target does not need (no bulkhead, a verb that is not idempotent,
breaker off) is not composed at all: it costs nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import math
import random
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from cbs.breaker.circuit import CircuitBreaker
from cbs.contracts import (
    BadRequest,
    Envelope,
    Internal,
    NoResponders,
    NotFound,
    Timeout,
    Unavailable,
)
from cbs.kernel import (
    DEADLINE_HEADER,
    ClientHandler,
    Served,
    ServerHandler,
    Target,
    current_request,
    deadline_left,
)

__all__ = [
    "HEADER",
    "CircuitOpen",
    "BulkheadFull",
    "Bulkhead",
    "remaining",
    "deadline_layer",
    "bulkhead_layer",
    "retry_layer",
    "circuit_layer",
    "attempt_layer",
    "deadline_guard",
]

log = logging.getLogger("cbs.breaker")

#: Header carrying the absolute deadline of an attempt: Unix time in seconds,
#: as a decimal number with millisecond precision, e.g. ``1767225600.250``.
#: The kernel's :data:`cbs.kernel.DEADLINE_HEADER` (transports do not start a
#: queued request once it has passed).
HEADER = DEADLINE_HEADER

ClientFactory = Callable[[Target, ClientHandler], ClientHandler]


class CircuitOpen(Unavailable):
    """The circuit breaker of the target is open (or half-open with every
    probe slot taken): the call failed fast, nothing was sent. Code
    ``Unavailable``; never retried."""


class BulkheadFull(Unavailable):
    """The target has ``max_concurrent`` calls in flight and ``max_queue``
    waiting: the call failed fast. Code ``Unavailable``; never retried."""


#: The deadline (Unix time) of the request being handled, set by the deadline
#: guard while it runs the handler: nested calls inherit it.
_handling: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "cbs_breaker_deadline", default=None
)


def remaining(default: float | None = None) -> float | None:
    """Seconds left before the deadline of the request being handled (its
    ``cbs-deadline`` header), for handlers that can give up early; ``default``
    outside a handler or when the request carries no deadline."""
    deadline = _handling.get()
    if deadline is not None:
        return deadline - time.time()
    try:
        headers = current_request().headers
    except LookupError:
        return default
    left = deadline_left(headers.get(HEADER), time.time())
    return default if left is None else left


# -- deadline ---------------------------------------------------------------------------------


def deadline_layer(limit: float) -> ClientFactory:
    """The overall budget of a call (``limit`` 0: no configured cap)."""

    def factory(target: Target, call_next: ClientHandler) -> ClientHandler:
        wall = time.time
        handling = _handling.get

        # A plain function returning the next layer's awaitable: no frame of its own.
        def handler(
            request: Envelope, headers: dict[str, str], timeout: float
        ) -> Awaitable[Envelope]:
            if limit and limit < timeout:
                timeout = limit
            upstream = handling()
            given = headers.get(HEADER) if headers else None
            if upstream is not None or given is not None:
                now = wall()
                if upstream is not None and upstream - now < timeout:
                    timeout = upstream - now
                left = deadline_left(given, now)
                if left is not None and left < timeout:
                    timeout = left
                if timeout <= 0:
                    return _fail(Timeout(f"Deadline passed before calling {target.subject}"))
            return call_next(request, headers, timeout)

        return handler

    return factory


# -- bulkhead ---------------------------------------------------------------------------------


class Bulkhead:
    """At most ``limit`` holders at once; up to ``queue`` more wait in line
    (first come, first served); anyone else is refused at once."""

    def __init__(self, limit: int, queue: int) -> None:
        self.limit = limit
        self.queue = queue
        self.active = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> bool:
        if self.active < self.limit and not self.waiters:
            self.active += 1
            return True
        return False

    async def wait(self, timeout: float, label: str) -> None:
        """Wait in line for a slot, at most ``timeout`` seconds (then
        ``Timeout``); ``BulkheadFull`` when the line is full."""
        if len(self.waiters) >= self.queue:
            raise BulkheadFull(f"Too many calls in flight to {label}")
        loop = asyncio.get_running_loop()
        slot: asyncio.Future[None] = loop.create_future()
        self.waiters.append(slot)

        def expire() -> None:
            if not slot.done():
                slot.set_exception(Timeout(f"No free slot for {label} before the deadline"))

        timer = loop.call_later(max(timeout, 0.0), expire)
        try:
            await slot
        except BaseException:
            if slot.done() and not slot.cancelled() and slot.exception() is None:
                self.release()  # handed a slot just as we were cancelled: pass it on
            else:
                try:
                    self.waiters.remove(slot)
                except ValueError:
                    pass
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        """Hand the slot to the first live waiter, or free it."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1


def bulkhead_layer(limit: int, queue: int) -> ClientFactory:
    def factory(target: Target, call_next: ClientHandler) -> ClientHandler:
        bulkhead = Bulkhead(limit, queue)
        label = f"{target.service}.{target.verb}"

        async def handler(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
            if not bulkhead.try_acquire():
                loop = asyncio.get_running_loop()
                began = loop.time()
                await bulkhead.wait(timeout, label)
                timeout -= loop.time() - began
            try:
                return await call_next(request, headers, timeout)
            finally:
                bulkhead.release()

        return handler

    return factory


# -- retry ------------------------------------------------------------------------------------

Sleep = Callable[[float], Coroutine[Any, Any, None]]


def retry_layer(
    retries: int,
    backoff: float,
    backoff_max: float,
    *,
    rng: Callable[[], float] = random.random,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ClientFactory:
    """Up to ``retries`` more attempts after a retryable failure. Before retry
    ``n`` (from 0) it sleeps ``rng() * min(backoff_max, backoff * 2**n)``
    (exponential backoff with full jitter), and only when that sleep ends
    before the call's deadline."""

    def factory(target: Target, call_next: ClientHandler) -> ClientHandler:
        label = f"{target.service}.{target.verb}"

        async def handler(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
            deadline = clock() + timeout
            original = dict(headers)
            attempt = 0
            while True:
                try:
                    return await call_next(request, headers, timeout)
                except (BadRequest, CircuitOpen, BulkheadFull):
                    raise
                except (TimeoutError, Unavailable, NoResponders) as exc:
                    if attempt >= retries:
                        raise
                    delay = rng() * min(backoff_max, backoff * 2**attempt)
                    if clock() + delay >= deadline:
                        raise  # no time left for another attempt
                    log.debug("retry %d of %s after %s in %.3f s", attempt + 1, label, exc, delay)
                    await sleep(delay)
                    attempt += 1
                    timeout = deadline - clock()
                    if timeout <= 0:
                        raise
                    headers = dict(original)

        return handler

    return factory


# -- circuit breaker --------------------------------------------------------------------------


def circuit_layer(breaker: CircuitBreaker) -> ClientFactory:
    def factory(target: Target, call_next: ClientHandler) -> ClientHandler:
        label = f"{target.service}.{target.verb}"
        acquire = breaker.try_acquire
        success = breaker.on_success
        failure = breaker.on_failure
        neutral = breaker.on_neutral

        async def handler(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
            permit = acquire()
            if permit is None:
                state = breaker.state
                raise CircuitOpen(
                    f"Circuit {state} for {label}",
                    details={"state": state, "retry_after": round(breaker.retry_after(), 3)},
                )
            try:
                reply = await call_next(request, headers, timeout)
            except (TimeoutError, Internal, NoResponders):
                failure(permit)
                raise
            except (BadRequest, NotFound):
                success(permit)  # the target answered: it is up
                raise
            except BaseException:
                neutral(permit)
                raise
            success(permit)
            return reply

        return handler

    return factory


# -- attempt timeout --------------------------------------------------------------------------


def attempt_layer(limit: float, propagate: bool = True) -> ClientFactory:
    """Caps one attempt at ``limit`` seconds (0: no cap) and, with
    ``propagate``, sends its deadline in the ``cbs-deadline`` header."""

    def factory(target: Target, call_next: ClientHandler) -> ClientHandler:
        wall = time.time
        if not propagate:

            def capped(
                request: Envelope, headers: dict[str, str], timeout: float
            ) -> Awaitable[Envelope]:
                return call_next(request, headers, limit if limit < timeout else timeout)

            return capped if limit else call_next

        def handler(
            request: Envelope, headers: dict[str, str], timeout: float
        ) -> Awaitable[Envelope]:
            if limit and limit < timeout:
                timeout = limit
            headers[HEADER] = f"{wall() + timeout:.3f}"
            return call_next(request, headers, timeout)

        return handler

    return factory


# -- server side ------------------------------------------------------------------------------


def deadline_guard(served: Served, call_next: ServerHandler) -> ServerHandler:
    """Server middleware: a request whose ``cbs-deadline`` has passed is
    answered ``Timeout`` without running the handler; a handler still running
    at the deadline is cancelled and answered ``Timeout``."""
    wall = time.time

    def handler(request: Envelope, headers: Mapping[str, str]) -> Awaitable[Envelope]:
        raw = headers.get(HEADER) if headers else None
        if raw is None:
            return call_next(request, headers)
        try:
            deadline = float(raw)
        except ValueError:
            deadline = math.nan
        if not math.isfinite(deadline):
            return call_next(request, headers)  # not a deadline: ignored
        return guarded(request, headers, deadline)

    async def guarded(request: Envelope, headers: Mapping[str, str], deadline: float) -> Envelope:
        left = deadline - wall()
        if left <= 0:
            raise Timeout("Deadline passed before the work started")
        token = _handling.set(deadline)
        try:
            started = call_next(request, headers)
            work = (
                started
                if type(started) is _NATIVE or isinstance(started, Coroutine)
                else _awaiting(started)
            )
            # Most handlers answer without waiting: no timer for them.
            try:
                waiting = work.send(None)
            except StopIteration as done:
                reply: Envelope = done.value
                return reply
            return await _finish_within(work, waiting, left)
        finally:
            _handling.reset(token)

    return handler


#: A native coroutine's type: checked first, it spares the ABC's instance check.
_NATIVE = types.CoroutineType


async def _awaiting(awaitable: Awaitable[Envelope]) -> Envelope:
    return await awaitable


async def _fail(error: Exception) -> Envelope:
    raise error


async def _finish_within(
    work: Coroutine[Any, Any, Envelope], waiting: Any, left: float
) -> Envelope:
    """Drive ``work`` on from where it yielded ``waiting`` (as a task would),
    and cancel it once, as ``Task.cancel`` does, when ``left`` seconds have
    passed; then answer ``Timeout``.

    Not ``asyncio.timeout``: a transport may start handlers eagerly (in the
    task that reads messages, moving them to their own task only once they
    wait), so the task current here may not be the one to cancel. Cancelling
    the future the handler waits on reaches it wherever it runs."""
    loop = asyncio.get_running_loop()
    expired = False
    cancel_now = False
    blocked_on: asyncio.Future[Any] | None = None

    def expire() -> None:
        nonlocal expired, cancel_now
        expired = True
        if blocked_on is None or not blocked_on.cancel():
            cancel_now = True  # not waiting on a future: cancel at the next step

    timer = loop.call_later(left, expire)
    try:
        while True:
            throw: BaseException | None = None
            try:
                if waiting is None:  # a bare yield (asyncio.sleep(0))
                    await asyncio.sleep(0)
                else:
                    waiting._asyncio_future_blocking = False
                    blocked_on = waiting
                    try:
                        await waiting
                    except asyncio.CancelledError:
                        if not waiting.cancelled():
                            raise  # our own task was cancelled
                    except BaseException:
                        pass  # the handler sees the future's exception when resumed
                    finally:
                        blocked_on = None
            except asyncio.CancelledError as exc:
                throw = exc  # pass our own cancellation on to the handler
            if cancel_now and throw is None:
                cancel_now = False
                throw = asyncio.CancelledError()
            try:
                waiting = work.throw(throw) if throw is not None else work.send(None)
            except StopIteration as done:
                if expired:
                    raise Timeout("Deadline passed while the work ran") from None
                reply: Envelope = done.value
                return reply
            except asyncio.CancelledError:
                if expired:
                    raise Timeout("Deadline passed while the work ran") from None
                raise
    finally:
        timer.cancel()
        work.close()
