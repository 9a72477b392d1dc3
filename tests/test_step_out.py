"""Body.step_out / step_in: a served cell leaves its queue groups (in-flight
requests finish) and comes back, on the local bus and on NATS."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cbs.contracts import NoResponders
from cbs.kernel import Body
from cbs.kernel import Cell as KernelCell
from cbs.testing import CellsPlugin


def slow_cell() -> KernelCell:
    cell = KernelCell("worker", category="logic", version="1.0.0", purpose="sleeps")

    @cell.verb("work", schema="test/v1/Job")
    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(payload.get("sleep", 0))
        return {"n": payload["n"]}

    return cell


async def check_step_out_and_in(body: Body) -> None:
    await body.start()
    in_flight = [
        asyncio.ensure_future(body.request("worker", "work", {"n": i, "sleep": 0.2}))
        for i in range(5)
    ]
    await asyncio.sleep(0.05)
    assert await body.step_out("worker")
    assert not await body.step_out("worker")  # out already
    assert [r["n"] for r in await asyncio.gather(*in_flight)] == list(range(5))
    with pytest.raises(NoResponders):
        await body.request("worker", "work", {"n": 9}, timeout=2)
    assert [c.id for c in body.served_cells] == ["worker"]  # still installed and started
    assert await body.step_in("worker")
    assert not await body.step_in("worker")  # in already
    assert (await body.request("worker", "work", {"n": 7}))["n"] == 7
    assert not await body.step_out("nobody")


async def test_step_out_and_in_on_the_local_bus(make_body: Any) -> None:
    await check_step_out_and_in(make_body(CellsPlugin(slow_cell())))


async def test_step_out_and_in_on_nats(nats_server: Any, make_body: Any) -> None:
    import cbs.nats.plugin

    config = {"transport": "nats", "nats_url": nats_server.url}
    await check_step_out_and_in(make_body(cbs.nats.plugin, CellsPlugin(slow_cell()), config=config))
