"""``cbs demo``: the greeting flow prompt_name -> greet -> print_greeting."""

from __future__ import annotations

import argparse

from cbs.kernel import Body, UsageError

__all__ = ["DEMO_CELLS", "configure_demo", "run_demo"]

#: The cells of the demo flow, in the order the flow calls them.
DEMO_CELLS = ("prompt_name", "greet", "print_greeting")


def configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="the name to greet (default: ask for it)")
    parser.add_argument(
        "--no-serve",
        action="store_true",
        help="only run the flow; the cells are served by other processes",
    )


async def run_demo(body: Body, args: argparse.Namespace) -> int:
    if not args.no_serve:
        missing = [c for c in DEMO_CELLS if c not in body.cells]
        if missing:  # e.g. blocked with -p or replaced by another plugin's cell
            raise UsageError(f"the demo needs cell '{missing[0]}' (is it blocked?)")
    await body.start(serve=False if args.no_serve else DEMO_CELLS)
    try:
        name = args.name
        if name is None:
            asked = await body.request("prompt_name", "read", {"prompt": "What is your name? "})
            name = asked["name"]
        greeting = await body.request("greeter", "say_hello", {"name": name})
        await body.request("printer", "write", {"message": greeting["message"]})
        if args.no_serve:
            # The printer wrote to its own process's stdout: show it here too.
            print(greeting["message"], flush=True)
    finally:
        await body.stop()
    return 0
