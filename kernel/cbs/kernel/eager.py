"""Start a coroutine eagerly: run it at once, and make a task only if it waits.

Most cell handlers answer without ever waiting, so a task per message (the
usual way to serve messages concurrently) costs more than the handler itself.
This is Python 3.12's ``eager_task_factory`` idea, for one coroutine, on 3.11+:
the coroutine runs now in its own copy of the context; if it finishes, no task
is made; if it waits on a future, a task takes over from exactly that point.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["start_eagerly", "resume"]

T = TypeVar("T")


async def resume(coro: Coroutine[Any, Any, T], waiting: Any) -> T:
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
    return loop.create_task(resume(coro, waiting), context=context)
