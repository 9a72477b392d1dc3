"""Entry point ``greeter``: registers the three demo cells and ``cbs demo``."""

from __future__ import annotations

from cbs.greeter.cells import make_greet, make_print_greeting, make_prompt_name
from cbs.greeter.demo import configure_demo, run_demo
from cbs.kernel import CellRegistry, CommandRegistry, Config, hookimpl


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
        run=run_demo,
        configure=configure_demo,
    )
