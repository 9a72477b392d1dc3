"""The cell-independence scenario: two flows on one bus.

Greeting flow: prompt_name -> greet -> print_greeting.
Data flow: input_data -> process_data -> output_result.
Removing a cell of one flow leaves the other working; adding a ``format_data``
cell needs no change to the existing cells.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from cbs.contracts import NotFound
from cbs.greeter import make_greet, make_print_greeting, make_prompt_name
from cbs.kernel import Body, Cell
from cbs.testing import CellsPlugin

SCHEMA = "data/v1/Numbers"


def make_input_data() -> Cell:
    cell = Cell("input_data", category="io", version="1.0.0", purpose="Provides numbers")

    @cell.verb("read", schema="data/v1/Query", reply_schema=SCHEMA)
    async def read(payload: dict[str, Any]) -> dict[str, Any]:
        return {"values": list(range(1, payload.get("count", 5) + 1))}

    return cell


def make_process_data() -> Cell:
    cell = Cell("process_data", category="logic", version="1.0.0", purpose="Sums numbers")

    @cell.verb("sum", schema=SCHEMA, reply_schema="data/v1/Total")
    async def total(payload: dict[str, Any]) -> dict[str, Any]:
        return {"total": sum(payload["values"])}

    return cell


def make_output_result(out: io.StringIO) -> Cell:
    cell = Cell("output_result", category="io", version="1.0.0", purpose="Writes a result")

    @cell.verb("write", schema="data/v1/Text")
    async def write(payload: dict[str, Any]) -> dict[str, Any]:
        out.write(payload["text"] + "\n")
        return {"ok": True}

    return cell


def make_format_data() -> Cell:
    cell = Cell("format_data", category="logic", version="1.0.0", purpose="Formats a total")

    @cell.verb("format", schema="data/v1/Total", reply_schema="data/v1/Text")
    async def fmt(payload: dict[str, Any]) -> dict[str, Any]:
        return {"text": f"total = {payload['total']:,}"}

    return cell


async def greeting_flow(body: Body, name_input: str) -> None:
    name = (await body.request("prompt_name", "read", {}))["name"]
    assert name == name_input
    message = (await body.request("greeter", "say_hello", {"name": name}))["message"]
    await body.request("printer", "write", {"message": message})


async def data_flow(body: Body, *, formatted: bool = False) -> None:
    numbers = await body.request("input_data", "read", {"count": 100})
    total = await body.request("process_data", "sum", numbers)
    if formatted:
        text = (await body.request("format_data", "format", total))["text"]
    else:
        text = str(total["total"])
    await body.request("output_result", "write", {"text": text})


def all_cells(greetings: io.StringIO, results: io.StringIO) -> dict[str, Cell]:
    cells = [
        make_prompt_name(lambda prompt: "Ada"),
        make_greet(),
        make_print_greeting(greetings),
        make_input_data(),
        make_process_data(),
        make_output_result(results),
    ]
    return {c.id: c for c in cells}


async def test_both_flows_run_side_by_side(make_body: Any) -> None:
    greetings, results = io.StringIO(), io.StringIO()
    body = make_body(CellsPlugin(*all_cells(greetings, results).values()))
    await body.start()
    await greeting_flow(body, "Ada")
    await data_flow(body)
    assert greetings.getvalue() == "Hello Ada!\n"
    assert results.getvalue() == "5050\n"


@pytest.mark.parametrize("removed", ["prompt_name", "greet", "print_greeting"])
async def test_removing_a_greeting_cell_leaves_the_data_flow_working(
    make_body: Any, removed: str
) -> None:
    greetings, results = io.StringIO(), io.StringIO()
    cells = all_cells(greetings, results)
    del cells[removed]
    body = make_body(CellsPlugin(*cells.values()))
    await body.start()
    with pytest.raises(NotFound):
        await greeting_flow(body, "Ada")
    await data_flow(body)
    assert results.getvalue() == "5050\n"


@pytest.mark.parametrize("removed", ["input_data", "process_data", "output_result"])
async def test_removing_a_data_cell_leaves_the_greeting_flow_working(
    make_body: Any, removed: str
) -> None:
    greetings, results = io.StringIO(), io.StringIO()
    cells = all_cells(greetings, results)
    del cells[removed]
    body = make_body(CellsPlugin(*cells.values()))
    await body.start()
    with pytest.raises(NotFound):
        await data_flow(body)
    await greeting_flow(body, "Ada")
    assert greetings.getvalue() == "Hello Ada!\n"


async def test_adding_format_data_needs_no_change_to_existing_cells(make_body: Any) -> None:
    greetings, results = io.StringIO(), io.StringIO()
    existing = all_cells(greetings, results)
    manifests_before = {cid: c.manifest() for cid, c in existing.items()}
    # A new plugin adds the new cell; the existing cells are the very same objects.
    body = make_body(CellsPlugin(*existing.values()), CellsPlugin(make_format_data()))
    await body.start()
    await data_flow(body, formatted=True)
    await greeting_flow(body, "Ada")
    assert results.getvalue() == "total = 5,050\n"
    assert {cid: c.manifest() for cid, c in existing.items()} == manifests_before
