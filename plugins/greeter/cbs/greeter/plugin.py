"""Entry point ``greeter``: registers the three demo cells and ``cbs demo``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.greeter.cells import make_greet, make_print_greeting, make_prompt_name
from cbs.kernel import hookimpl

if TYPE_CHECKING:
    from cbs.kernel import CellRegistry, CommandRegistry, Config


@hookimpl
def cbs_register_cells(cells: CellRegistry, config: Config) -> None:
    cells.add(make_prompt_name())
    cells.add(make_greet())
    cells.add(make_print_greeting())


@hookimpl
def cbs_add_commands(commands: CommandRegistry) -> None:
    commands.add(
        "demo",
        help="run the greeting flow: prompt_name -> greet -> print_greeting",
        # Imported when `cbs demo` runs (with asyncio), not for every command.
        run="cbs.greeter.demo:run_demo",
        configure="cbs.greeter.demo:configure_demo",
    )
