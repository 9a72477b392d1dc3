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
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from cbs.contracts import RawHandler
from cbs.kernel.middleware import Served, ServerMiddleware, server_path

__all__ = ["start_eagerly", "drive", "endpoint_handler", "Served"]

T = TypeVar("T")


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
