"""Cells that come and go while a body runs: add, remove (drain) and replace
(the new version serves before the old one drains), under load, on the local
bus and on NATS; discovery follows within a second."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from load_kit import WorkLoad

from cbs.contracts import Cell, NoResponders
from cbs.kernel import Body, Directory, MiddlewareRegistry, Served, ServerHandler, hookimpl
from cbs.kernel import Cell as KernelCell
from cbs.testing import CellsPlugin

MakeBody = Callable[..., Body]


def versioned(version: str, *, delay: float = 0.002) -> Cell:
    cell = KernelCell(
        "worker", category="logic", version=version, purpose="answers with its version"
    )

    @cell.verb("work", schema="test/v1/Job")
    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(delay)  # so that requests are in flight during a swap
        return {"version": version, "n": payload["n"]}

    return cell


def config_for(transport: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if transport == "nats":
        server: Any = request.getfixturevalue("nats_server")
        return {"transport": "nats", "nats_url": server.url}
    return {"transport": "local"}


def plugins_for(transport: str) -> list[Any]:
    if transport == "nats":
        import cbs.nats.plugin

        return [cbs.nats.plugin]
    return []


async def poll(condition: Callable[[], Any], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("transport", ["local", "nats"])
async def test_500_concurrent_requests_while_a_cell_is_replaced_ten_times(
    make_body: MakeBody, request: pytest.FixtureRequest, transport: str
) -> None:
    config = config_for(transport, request)
    server = make_body(*plugins_for(transport), CellsPlugin(versioned("1.0.0")), config=config)
    await server.start()
    caller = server
    if transport == "nats":  # a caller in another body, as across processes
        caller = make_body(*plugins_for(transport), config=config)
        await caller.start(serve=False)

    load = WorkLoad(caller)
    for round_ in range(1, 11):
        burst = await load.burst(500)
        await server.replace_cell(versioned(f"1.0.{round_}"))
        await asyncio.gather(*burst)

    assert load.failures == []
    assert len(load.versions) > 2  # old and new versions both answered across the swaps
    assert [c.version for c in server.served_cells] == ["1.0.10"]
    assert server.cells.cell("worker").version == "1.0.10"
    final = {
        (await caller.request("worker", "work", {"n": 0}, schema="test/v1/Job"))["version"]
        for _ in range(20)
    }
    assert final == {"1.0.10"}


async def test_remove_drains_in_flight_requests_then_nobody_serves(make_body: MakeBody) -> None:
    body = make_body(CellsPlugin(versioned("1.0.0", delay=0.2)))
    await body.start()
    in_flight = [asyncio.ensure_future(body.request("worker", "work", {"n": i})) for i in range(5)]
    await asyncio.sleep(0.05)
    removed = await body.remove_cell("worker")
    assert removed.version == "1.0.0"
    assert [r["n"] for r in await asyncio.gather(*in_flight)] == list(range(5))
    with pytest.raises(NoResponders):
        await body.request("worker", "work", {"n": 9})
    assert "worker" not in body.cells
    with pytest.raises(KeyError):
        await body.remove_cell("worker")


async def test_add_serves_at_once_and_rejects_a_taken_id(make_body: MakeBody) -> None:
    body = make_body()
    await body.start(serve=False)
    await body.add_cell(versioned("2.0.0"))
    assert (await body.request("worker", "work", {"n": 1}))["version"] == "2.0.0"
    assert body.cells.get("worker") is not None
    assert body.cells.get("worker").plugin == "runtime"  # type: ignore[union-attr]
    from cbs.kernel import PluginError

    with pytest.raises(PluginError, match="already"):
        await body.add_cell(versioned("3.0.0"))


async def test_only_the_affected_endpoints_are_composed_again(make_body: MakeBody) -> None:
    composed: list[str] = []

    class Counting:
        name = "counting"

        @hookimpl
        def cbs_register_middleware(self, middleware: MiddlewareRegistry) -> None:
            def factory(served: Served, call_next: ServerHandler) -> ServerHandler:
                composed.append(served.subject)
                return call_next

            middleware.add_server("counting", factory)

    other = KernelCell("other", category="logic", version="1.0.0", purpose="stays")

    @other.verb("ping", schema="test/v1/Any")
    async def ping(payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    body = make_body(Counting(), CellsPlugin(versioned("1.0.0"), other))
    await body.start()
    assert sorted(composed) == ["cbs.other.ping", "cbs.worker.work"]
    composed.clear()
    await body.replace_cell(versioned("1.1.0"))
    assert composed == ["cbs.worker.work"]


async def test_lifecycle_hooks_fire_for_each_change(make_body: MakeBody) -> None:
    events: list[str] = []

    class Watcher:
        name = "watcher"

        @hookimpl
        def cbs_cell_started(self, body: Body, cell: Cell) -> None:
            events.append(f"started {cell.version}")

        @hookimpl
        async def cbs_cell_stopping(self, body: Body, cell: Cell) -> None:
            events.append(f"stopping {cell.version}")

        @hookimpl
        def cbs_cell_stopped(self, body: Body, cell: Cell) -> None:
            events.append(f"stopped {cell.version}")

    body = make_body(Watcher(), CellsPlugin(versioned("1.0.0")))
    await body.start()
    await body.replace_cell(versioned("1.1.0"))
    await body.remove_cell("worker")
    await body.add_cell(versioned("2.0.0"))
    await body.stop()
    assert events == [
        "started 1.0.0",
        "started 1.1.0",
        "stopping 1.0.0",
        "stopped 1.0.0",
        "stopping 1.1.0",
        "stopped 1.1.0",
        "started 2.0.0",
        "stopped 2.0.0",
    ]


async def test_discovery_follows_replace_and_remove_within_a_second(
    nats_server: Any, make_body: MakeBody
) -> None:
    import cbs.nats.plugin

    config = {"transport": "nats", "nats_url": nats_server.url}
    body = make_body(cbs.nats.plugin, CellsPlugin(versioned("1.0.0")), config=config)
    await body.start()
    observer = make_body(cbs.nats.plugin, config=config)
    await observer.start(serve=False)
    directory = observer.capabilities.require(Directory, needed_by="this test")

    async def listed() -> dict[str, Any]:
        return {row["id"]: row for row in await directory.list_cells()}

    async def shows(version: str | None) -> bool:
        rows = await listed()
        if version is None:
            return "worker" not in rows
        return (
            "worker" in rows
            and rows["worker"]["version"] == version
            and (rows["worker"]["instances"] == 1)
        )

    assert await shows("1.0.0")
    await body.replace_cell(versioned("1.5.0"))
    await poll(lambda: shows("1.5.0"), timeout=1.0)
    await body.remove_cell("worker")
    await poll(lambda: shows(None), timeout=1.0)
    assert await directory.endpoint_schema("worker", "work") is None
    await body.add_cell(versioned("2.0.0"))
    await poll(lambda: shows("2.0.0"), timeout=1.0)
    assert await directory.endpoint_schema("worker", "work") == "test/v1/Job"
