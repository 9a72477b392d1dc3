"""Cells for the tracing tests: two hops, the second showing the headers it got."""

from __future__ import annotations

from typing import Any

from cbs.kernel import Body, Cell, CellRegistry, Config, current_request, hookimpl

__all__ = ["HopPlugin"]


class HopPlugin:
    """``hop.hop`` asks ``peek.peek``, which answers with the headers it got."""

    def __init__(self) -> None:
        self.body: Body | None = None
        hop = Cell("hop", category="logic", version="1.0.0", purpose="Asks peek")
        hop.add_verb("hop", self._hop, schema="hop/v1/Any")
        peek = Cell("peek", category="logic", version="1.0.0", purpose="Shows headers")
        peek.add_verb("peek", self._peek, schema="peek/v1/Any")
        self.cells = [hop, peek]

    async def _hop(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.body is not None
        return await self.body.request("peek", "peek", {})

    async def _peek(self, payload: dict[str, Any]) -> dict[str, Any]:
        return dict(current_request().headers)

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        for cell in self.cells:
            cells.add(cell)

    @hookimpl
    def cbs_body_starting(self, body: Body) -> None:
        self.body = body
