"""start_eagerly / resume: run a coroutine at once, a task only if it waits."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from cbs.kernel.transport import drive as resume
from cbs.kernel.transport import start_eagerly

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outer")


async def test_a_coroutine_that_never_waits_makes_no_task() -> None:
    ran = []

    async def quick() -> None:
        ran.append(1)

    assert start_eagerly(quick(), asyncio.get_running_loop()) is None
    assert ran == [1]


async def test_a_coroutine_that_waits_continues_in_a_task() -> None:
    steps = []

    async def slow() -> str:
        steps.append("before")
        await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # a bare yield too
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, fut.set_result, "value")
        got = await fut
        steps.append("after")
        return got

    task = start_eagerly(slow(), asyncio.get_running_loop())
    assert steps == ["before"] and task is not None
    assert await task == "value"
    assert steps == ["before", "after"]


async def test_exceptions_reach_the_coroutine_and_the_task() -> None:
    async def failing_future() -> str:
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, fut.set_exception, KeyError("k"))
        try:
            await fut
        except KeyError:
            return "caught inside"
        return "not reached"

    task = start_eagerly(failing_future(), asyncio.get_running_loop())
    assert task is not None and await task == "caught inside"

    async def raising() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    task = start_eagerly(raising(), asyncio.get_running_loop())
    assert task is not None
    with pytest.raises(ValueError, match="boom"):
        await task

    async def raising_at_once() -> None:
        raise ValueError("now")

    with pytest.raises(ValueError, match="now"):
        start_eagerly(raising_at_once(), asyncio.get_running_loop())


async def test_cancelling_the_task_cancels_the_coroutine() -> None:
    cleaned = asyncio.Event()

    async def waits_forever() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.set()

    task = start_eagerly(waits_forever(), asyncio.get_running_loop())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()


async def test_context_changes_stay_inside() -> None:
    async def sets_var() -> None:
        token = var.set("inner")
        await asyncio.sleep(0.01)
        assert var.get() == "inner"
        var.reset(token)  # a token from the same context: no ValueError

    task = start_eagerly(sets_var(), asyncio.get_running_loop())
    assert var.get() == "outer"
    assert task is not None
    await task
    assert var.get() == "outer"


async def test_resume_in_the_calling_task_under_a_timeout() -> None:
    async def slow() -> int:
        await asyncio.sleep(0.01)
        return 7

    coro = slow()
    waiting = coro.send(None)
    async with asyncio.timeout(5):
        assert await resume(coro, waiting) == 7

    coro = asyncio.sleep(5, result=1)
    waiting = coro.send(None)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await resume(coro, waiting)
