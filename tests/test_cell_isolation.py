"""Isolation per cell: a CPU-bound cell does not delay an async cell of the
same body when it runs in processes of its own; run on the loop, it does
(the same measurement, so the test can fail)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pool_kit import burn

import cbs.nats.plugin
from cbs.kernel import Cell
from cbs.testing import CellsPlugin, MakeBody


def cells(isolation: str) -> tuple[Cell, Cell]:
    busy = Cell(
        "busy",
        category="logic",
        version="1.0.0",
        purpose="burns CPU",
        isolation=isolation,
        processes=2,
        threads=2,
    )
    busy.add_verb("burn", burn, schema="test/v1/Burn")
    quick = Cell("quick", category="logic", version="1.0.0", purpose="answers at once")

    @quick.verb("ping", schema="test/v1/Ping")
    async def ping(payload: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True}

    return busy, quick


async def ping_p99(make_body: MakeBody, url: str, isolation: str) -> float:
    """The 99th percentile of the ping cell's latency, on NATS, while two
    callers keep the busy cell burning CPU."""
    config = {"transport": "nats", "nats_url": url}
    body = make_body(cbs.nats.plugin, CellsPlugin(*cells(isolation)), config=config)
    await body.start()
    await body.request("busy", "burn", {"seconds": 0.01}, timeout=60)  # the pool is up
    stop = asyncio.Event()

    async def burner() -> None:
        while not stop.is_set():
            await body.request("busy", "burn", {"seconds": 0.2}, timeout=60)

    burners = [asyncio.ensure_future(burner()) for _ in range(2)]
    await asyncio.sleep(0.05)  # the burners hold their pool
    latencies = []
    for _ in range(60):
        started = time.perf_counter()
        await body.request("quick", "ping", {}, timeout=10)
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.002)
    stop.set()
    await asyncio.gather(*burners)
    await body.stop()
    return sorted(latencies)[int(len(latencies) * 0.99) - 1]


async def test_an_async_cell_stays_fast_beside_a_cpu_bound_cell_in_processes(
    make_body: MakeBody, nats_server: Any
) -> None:
    assert await ping_p99(make_body, nats_server.url, "process") < 0.05


async def test_the_same_measurement_fails_with_the_cpu_bound_cell_on_the_loop(
    make_body: MakeBody, nats_server: Any
) -> None:
    assert await ping_p99(make_body, nats_server.url, "none") > 0.1


async def test_plain_handlers_run_in_the_cells_own_bounded_thread_pool(
    make_body: MakeBody,
) -> None:
    seen: list[str] = []
    gate = threading.Event()
    cell = Cell("blocking", category="io", version="1.0.0", purpose="blocks", threads=2)

    @cell.verb("wait", schema="test/v1/Wait")
    def wait(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(threading.current_thread().name)
        gate.wait(10)
        return {}

    body = make_body(CellsPlugin(cell))
    await body.start()
    calls = [
        asyncio.ensure_future(body.request("blocking", "wait", {}, timeout=20)) for _ in range(5)
    ]
    deadline = time.monotonic() + 10
    while len(seen) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # a third would start now if the pool were unbounded
    assert len(seen) == 2
    gate.set()
    await asyncio.gather(*calls)
    assert len(seen) == 5
    assert all(name.startswith("cbs-blocking") for name in seen), seen
    assert len(set(seen)) <= 2


def test_isolation_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="isolation must be one of"):
        Cell("x", category="logic", version="1.0.0", purpose="x", isolation="fork")
    cell = Cell("y", category="logic", version="1.0.0", purpose="y", isolation="process")
    with pytest.raises(ValueError, match="needs a plain def"):

        @cell.verb("v", schema="test/v1/V")
        async def v(payload: dict[str, Any]) -> dict[str, Any]:
            return {}


async def test_a_plain_handler_in_its_thread_sees_the_current_request(
    make_body: MakeBody,
) -> None:
    from cbs.kernel import current_request

    cell = Cell("who", category="logic", version="1.0.0", purpose="tells its envelope id")

    @cell.verb("ask", schema="test/v1/Ask")
    def ask(payload: dict[str, Any]) -> dict[str, Any]:
        return {"id": current_request().envelope.id}

    body = make_body(CellsPlugin(cell))
    await body.start()
    reply = await body.request("who", "ask", {})
    assert isinstance(reply["id"], str) and len(reply["id"]) == 36
