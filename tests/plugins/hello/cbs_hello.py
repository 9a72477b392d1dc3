from typing import Any

from cbs.contracts import BadRequest
from cbs.kernel import Cell, CellRegistry, Config, hookimpl

hello = Cell("hello", category="logic", version="1.0.0", purpose="Says hi")


@hello.verb("hi", schema="hello/v1/Hi", reply_schema="hello/v1/Text")
async def hi(payload: dict[str, Any]) -> dict[str, Any]:
    who = payload.get("who")
    if not isinstance(who, str):
        raise BadRequest("Field 'who' must be a string", details={"field": "who"})
    return {"text": f"hi {who}"}


@hookimpl
def cbs_register_cells(cells: CellRegistry, config: Config) -> None:
    cells.add(hello)
