"""Entry point ``greeter``: registers the three demo cells and ``cbs demo``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cbs.greeter.cells import make_greet, make_print_greeting, make_prompt_name
from cbs.kernel import hookimpl

if TYPE_CHECKING:
    import argparse

    from cbs.kernel import Body, CellRegistry, CommandRegistry, Config


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
        run=_run_demo,
        configure=_configure_demo,
    )


# The demo (and asyncio) is imported when `cbs demo` runs, not for every command.
def _configure_demo(parser: argparse.ArgumentParser) -> None:
    from cbs.greeter.demo import configure_demo

    configure_demo(parser)


def _run_demo(body: Body, args: argparse.Namespace) -> Any:
    from cbs.greeter.demo import run_demo

    return run_demo(body, args)
