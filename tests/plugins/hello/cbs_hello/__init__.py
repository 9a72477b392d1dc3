"""A third-party plugin: one cell, ``hello`` on ``cbs.hello.hi``."""

from typing import Any

from cbs.kernel import Cell, CellRegistry, Config, hookimpl

hello = Cell("hello", category="logic", version="0.0.1", purpose="Says hi")


@hello.verb("hi", schema="hello/v1/Hi")
async def hi(payload: dict[str, Any]) -> dict[str, Any]:
    return {"text": f"hi {payload.get('who', 'there')}"}


@hookimpl
def cbs_register_cells(cells: CellRegistry, config: Config) -> None:
    cells.add(hello)
