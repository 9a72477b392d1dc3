"""The ``cbs`` command line: plugins first, then options and commands they add.

Every user error is one line on stderr and a non-zero exit (2 for usage, 1 for
an error reply or failure); ``--debug`` shows the traceback instead.
``python -m cbs`` (``cbs/__main__.py``) runs the same :func:`main`.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from cbs.contracts import CbsError
from cbs.kernel.errors import UsageError

if TYPE_CHECKING:
    import asyncio

__all__ = ["build_parser", "main", "version_line"]


def version_line() -> str:
    """What ``cbs --version`` prints: ``cbs 0.2.0 (cell-body-system)``."""
    from cbs.kernel.plugins import core_distribution

    found = core_distribution()
    return "cbs unknown (not installed)" if found is None else f"cbs {found[1]} ({found[0]})"


class _Version(argparse.Action):
    """``--version``, looked up only when given."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(version_line())
        parser.exit(0)


def _asks_version(argv: Sequence[str]) -> bool:
    """``--version`` among the options before the command: answered before any
    plugin loads, so it works even when one is broken. (Elsewhere, e.g. after
    ``-p NAME``, the full parser answers it.)"""
    for arg in argv:
        if arg == "--version":
            return True
        if not arg.startswith("-"):
            return False
    return False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_global(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default or False,
        help="show tracebacks and debug logs",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default or False,
        help="log only warnings and errors",
    )
    parser.add_argument(
        "-p",
        dest="plugin_specs",
        action="append",
        metavar="NAME",
        default=default or [],
        help="load only the named plugins (repeat); 'no:NAME' blocks one",
    )
    parser.add_argument(
        "--loop",
        metavar="NAME",
        default=default or "asyncio",
        help="event loop: asyncio (default) or uvloop (pip install 'cell-body-system[uvloop]')",
    )
    parser.add_argument(
        "--disable-plugin-autoload",
        action="store_true",
        default=default or False,
        help="load no entry-point plugin unless named with -p",
    )


#: Event loops ``--loop`` offers.
LOOPS = ("asyncio", "uvloop")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event-loop factory of ``--loop NAME`` (``None``: asyncio's own).
    Raises ``UsageError`` when uvloop is asked for and not installed."""
    if name == "asyncio":
        return None
    if name != "uvloop":
        raise UsageError(f"unknown event loop {name!r}; choose from {', '.join(LOOPS)}")
    try:
        import uvloop
    except ImportError:
        raise UsageError(
            "--loop uvloop needs uvloop: pip install 'cell-body-system[uvloop]'"
        ) from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _pre_parse(argv: Sequence[str]) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    _add_global(pre, suppress=False)
    pre.add_argument("command", nargs="?", default=None)  # the first word after the globals
    known, _ = pre.parse_known_args(argv)
    return known


def build_parser(body: Any, only: str | None = None) -> argparse.ArgumentParser:
    """The ``cbs`` parser with the commands and options of ``body``'s plugins.
    With ``only``, the other commands get their name and help but neither the
    plugins' options nor their own (about 25 commands times 60 options: most
    of the parser's cost, and what a command line that names one command
    never reads)."""
    parser = _Parser(prog="cbs", description="CBS: cells on a message bus, run by a body.")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    _add_global(parser, suppress=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in body.commands:
        sub = subparsers.add_parser(entry.name, help=entry.item.help, description=entry.item.help)
        sub.error = parser.error  # type: ignore[method-assign]
        if only is not None and entry.name != only:
            continue
        _add_global(sub, suppress=True)
        group = sub.add_argument_group("options from plugins")
        for option in body.options.as_dict().values():
            kwargs: dict[str, Any] = {"dest": option.name, "default": None, "help": option.help}
            if option.type is bool:
                kwargs["action"] = "store_const"
                kwargs["const"] = True
            else:
                kwargs["metavar"] = option.metavar or option.name.upper()
            if option.env:
                kwargs["help"] += f" [env {option.env}]"
            group.add_argument(option.cli_flag, **kwargs)
        if entry.item.configure is not None:
            entry.item.configure(sub)
    return parser


async def _run_async(body: Any, awaitable: Any) -> int:
    try:
        return int(await awaitable or 0)
    finally:
        await body.stop()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _asks_version(argv):
        print(version_line())
        return 0
    pre = _pre_parse(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if pre.debug else logging.WARNING if pre.quiet else logging.INFO,
        format="%(name)s: %(message)s",
    )
    try:
        from cbs.kernel.body import Body

        body = Body(
            plugin_specs=pre.plugin_specs,
            autoload=False if pre.disable_plugin_autoload else None,
        )
        parser = build_parser(body, only=pre.command)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        body.configure({name: getattr(args, name, None) for name in body.options.names()})
        command = body.commands.get(args.command)
        assert command is not None
        new_loop = loop_factory(pre.loop)
        result = command.item.run(body, args)
        if inspect.isawaitable(result):
            import asyncio  # here: listing commands (cbs plugins, --help) never need it

            with asyncio.Runner(loop_factory=new_loop) as runner:
                result = runner.run(_run_async(body, result))
        sys.stdout.flush()  # here, so a closed pipe is handled below, not at exit
        return int(result or 0)
    except BrokenPipeError:
        # The reader went away (cbs plugins | head -1): nothing to report, and
        # nothing more to write (Python's own flush at exit would fail again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except UsageError as exc:
        if pre.debug:
            raise
        print(f"cbs: error: {exc}", file=sys.stderr)
        return 2
    except CbsError as exc:
        if pre.debug:
            raise
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if pre.debug:
            raise
        print(
            f"cbs: error: {type(exc).__name__}: {exc} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
