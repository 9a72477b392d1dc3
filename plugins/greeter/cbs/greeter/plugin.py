"""Entry point ``greeter``: registers the three demo cells."""

from __future__ import annotations

from cbs.greeter.cells import make_greet, make_print_greeting, make_prompt_name
from cbs.kernel import CellRegistry, Config, hookimpl


@hookimpl
def cbs_register_cells(cells: CellRegistry, config: Config) -> None:
    cells.add(make_prompt_name())
    cells.add(make_greet())
    cells.add(make_print_greeting())
