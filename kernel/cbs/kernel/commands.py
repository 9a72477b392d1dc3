"""Built-in plugin ``core``: the core options and the built-in ``cbs`` commands
(``run``, ``call``, ``plugins``, ``cells``, ``completion``). Plugins add the
others (the greeter plugin adds ``demo``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from cbs.contracts import DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES
from cbs.kernel.arguments import PAYLOAD_HELP, parse_target, read_payload
from cbs.kernel.capabilities import Directory, Runner, SpecServer
from cbs.kernel.config import number
from cbs.kernel.errors import UsageError
from cbs.kernel.plugins import hookimpl

if TYPE_CHECKING:
    from cbs.kernel.body import Body
    from cbs.kernel.registries import CellField, CommandRegistry, OptionRegistry, Registered

log = logging.getLogger("cbs")


@hookimpl
def cbs_add_options(options: OptionRegistry) -> None:
    options.add(
        "transport",
        help="bus transport to use (default: the installed one with the highest priority)",
        env="CBS_TRANSPORT",
        metavar="NAME",
    )
    options.add(
        "request_timeout",
        help="default request timeout in seconds (default: 5)",
        default=5.0,
        type=number(float, above=0),
        env="CBS_REQUEST_TIMEOUT",
        metavar="SECONDS",
    )
    options.add(
        "max_pending",
        help="requests of one verb that may wait for a free handler before callers get"
        f" Unavailable (default: {DEFAULT_MAX_PENDING})",
        default=DEFAULT_MAX_PENDING,
        type=number(int, at_least=0),
        env="CBS_MAX_PENDING",
        metavar="N",
    )
    options.add(
        "max_pending_bytes",
        help="bytes of requests of one verb that may wait so"
        f" (default: {DEFAULT_MAX_PENDING_BYTES}, 16 MiB)",
        default=DEFAULT_MAX_PENDING_BYTES,
        type=number(int, at_least=0),
        env="CBS_MAX_PENDING_BYTES",
        metavar="BYTES",
    )
    options.add(
        "drain_timeout",
        help="how long a stopping body waits for in-flight requests (default: 10)",
        default=10.0,
        type=number(float, at_least=0),
        env="CBS_DRAIN_TIMEOUT",
        metavar="SECONDS",
    )


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


# -- cbs run ------------------------------------------------------------------------------


def _configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec",
        nargs="?",
        metavar="SPEC",
        help="a body spec (body.yaml) to serve and reconcile live; the same as `cbs spec SPEC`"
        " (needs cbs-spec)",
    )
    parser.add_argument(
        "--cells", nargs="+", metavar="ID", help="serve only these cells (default: all)"
    )


async def _run(body: Body, args: argparse.Namespace) -> int:
    if getattr(args, "spec", None):
        # A spec is served by the SpecServer a deployment plugin offers when
        # the body is built (the spec's settings are not in the configuration yet).
        server = body.capabilities.get(SpecServer)
        if server is None:
            raise UsageError("cbs run SPEC needs a deployment plugin (pip install cbs-spec)")
        if args.cells:
            raise UsageError("cbs run SPEC takes its cells from the spec, not --cells")
        return await server.serve(body, args.spec)
    _ = body.cells  # the configuration is final: plugins may offer a Runner now
    runner = body.capabilities.get(Runner)
    if runner is not None:
        return await runner.run(body, args)

    def ready() -> None:
        bus = body.bus
        assert bus is not None
        ids = ", ".join(c.id for c in body.served_cells) or "none"
        log.info("serving cells %s on the %s transport; Ctrl-C to stop", ids, bus.name)
        if not bus.shared:
            log.warning(
                "the %s bus is private to this process: nothing else can call these cells", bus.name
            )

    # The handlers first: a SIGTERM while the cells start drains them.
    await body.run_until_signal(on_ready=ready, starting=body.start(serve=args.cells or True))
    return 0


# -- cbs call ---------------------------------------------------------------------------


def _configure_call(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="SERVICE.VERB", help="e.g. greeter.say_hello")
    parser.add_argument(
        "payload", nargs="?", default="{}", metavar="PAYLOAD", help=PAYLOAD_HELP + " (default: {})"
    )
    parser.add_argument("--schema", help="request schema (default: the cell's, if installed)")
    parser.add_argument(
        "--timeout", type=number(float, above=0), metavar="SECONDS", help="reply deadline"
    )


async def _call(body: Body, args: argparse.Namespace) -> int:
    service, verb = parse_target(args.target)
    payload = read_payload(args.payload)
    await body.start(serve=False)
    try:
        assert body.bus is not None
        if not body.bus.shared:
            await body.serve(True)  # nothing else can reach this bus: serve here
        schema = args.schema or await _advertised_schema(body, service, verb)
        reply = await body.request(service, verb, payload, schema=schema, timeout=args.timeout)
    finally:
        await body.stop()
    print(json.dumps(reply, ensure_ascii=False))
    return 0


async def _advertised_schema(body: Body, service: str, verb: str) -> str | None:
    """The schema that the serving cell advertises, when no installed cell
    declares one (``None``: let the body choose)."""
    if body.cells.find_endpoint(service, verb) is not None:
        return None
    directory = body.capabilities.get(Directory)
    return None if directory is None else await directory.endpoint_schema(service, verb)


# -- cbs plugins / cbs cells -------------------------------------------------------------


def _configure_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def plugins_report(body: Body) -> list[dict[str, Any]]:
    """What ``cbs plugins --json`` prints: one entry per loaded plugin."""
    pm = body.plugin_manager
    report = []
    for info in body.plugin_info():
        plugin = pm.get_plugin(info.name)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        registered = {
            "transports": body.transports.by_plugin(info.name),
            "cells": body.cells.by_plugin(info.name),
            "middleware": body.middleware.by_plugin(info.name),
            "options": body.options.by_plugin(info.name),
            "commands": body.commands.by_plugin(info.name),
            "cell_fields": body.cell_fields.by_plugin(info.name),
            "endpoint_options": body.endpoint_options.by_plugin(info.name),
        }
        report.append(
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "module": info.module,
                "builtin": info.builtin,
                "hooks": hooks,
                "registered": {k: v for k, v in registered.items() if v},
            }
        )
    return report


def _plugins(body: Body, args: argparse.Namespace) -> int:
    report = plugins_report(body)
    if args.json:
        _print_json(report)
        return 0
    for entry in report:
        origin = "built-in" if entry["builtin"] else entry["distribution"]
        print(f"{entry['name']:<12} {origin} {entry['version']}")
        for kind, names in entry["registered"].items():
            print(f"    {kind}: {', '.join(names)}")
    return 0


def cells_report(body: Body) -> list[dict[str, Any]]:
    """What ``cbs cells --json`` prints: one entry per installed cell."""
    report = []
    for entry in body.cells:
        cell = entry.item
        manifest = cell.manifest()
        report.append(
            {
                "id": cell.id,
                "name": manifest["name"],
                "category": cell.category,
                "version": cell.version,
                "service": cell.service,
                "subjects": [s["subject"] for s in manifest["interface"]["serves"]],
                "schemas": [s["schema"] for s in manifest["interface"]["serves"]],
                "plugin": entry.plugin,
                "purpose": manifest["purpose"],
                "endpoints": [
                    {
                        "verb": e.verb,
                        "subject": f"cbs.{cell.service}.{e.verb}",
                        "schema": e.schema,
                        "reply_schema": e.reply_schema,
                        "metadata": body.endpoint_options.metadata(e),
                    }
                    for e in cell.endpoints
                ],
            }
        )
    return report


async def add_cell_fields(body: Body, report: list[dict[str, Any]]) -> list[Registered[CellField]]:
    """Add the fields plugins registered (``cbs_add_cell_fields``) to the rows
    of ``cbs cells``; returns the fields that gave values."""
    given = []
    for field in body.cell_fields:
        try:
            values = await field.item.provider(body, report)
        except Exception as exc:
            log.warning("cbs cells: field %s failed: %s: %s", field.name, type(exc).__name__, exc)
            continue
        for row in report:
            if row["id"] in values:
                row[field.name] = values[row["id"]]
        given.append(field)
    return given


#: Keys every row of ``cbs cells`` has; any other key is printed as ``key=value``.
_CELL_KEYS = (
    "id",
    "name",
    "category",
    "version",
    "service",
    "subjects",
    "schemas",
    "purpose",
    "plugin",
    "endpoints",
)


async def _cells(body: Body, args: argparse.Namespace) -> int:
    transport = body.transports.get(body.transport_name())
    found = None
    if transport is not None and transport.item.discover is not None:
        found = await transport.item.discover(body)
    report = cells_report(body) if found is None else found
    await add_cell_fields(body, report)
    if args.json:
        _print_json(report)
        return 0
    if not report:
        print("no cells found (try: pip install cbs-greeter)", file=sys.stderr)
    texts = {f.name: f.item.text for f in body.cell_fields}
    for c in report:
        subjects = " ".join(c["subjects"])
        where = f"  [{c['plugin']}]" if "plugin" in c else ""
        extra = "".join(
            f"  {key}={texts[key](value) if key in texts else _text(value)}"
            for key, value in c.items()
            if key not in _CELL_KEYS and (key in texts or not isinstance(value, dict))
        )
        print(f"{c['id']:<16} {c['category']:<6} {c['version']:<8} {subjects}{where}{extra}")
    return 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


# -- cbs completion ------------------------------------------------------------------------

#: The shells ``cbs completion`` writes scripts for (those shtab supports).
SHELLS = ("bash", "zsh", "tcsh")

#: Arguments whose values are paths, by metavar: completed as file names.
_FILE_METAVARS = frozenset({"PATH", "FILE", "FILE|JSON"})


def _configure_completion(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=SHELLS, help="the shell to write the script for")


def completion_script(body: Body, shell: str) -> str:
    """The ``cbs completion SHELL`` script, made by shtab from the parser of
    ``body`` (so it knows every plugin's commands and options)."""
    import shtab

    from cbs.kernel.cli import build_parser

    parser = build_parser(body)
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.extend(action.choices.values())
    for sub in parsers:
        for action in sub._actions:
            if action.metavar in _FILE_METAVARS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
    script: str = shtab.complete(parser, shell=shell)
    return script


def _completion(body: Body, args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(body, args.shell))
    return 0


@hookimpl
def cbs_add_commands(commands: CommandRegistry) -> None:
    commands.add(
        "run", help="serve installed cells until SIGINT/SIGTERM", run=_run, configure=_configure_run
    )
    commands.add(
        "call",
        help="send one request and print the reply payload",
        run=_call,
        configure=_configure_call,
    )
    commands.add(
        "plugins",
        help="list installed plugins and what they register",
        run=_plugins,
        configure=_configure_json,
    )
    commands.add(
        "cells",
        help="list installed cells, or those served on a shared bus (e.g. --nats-url)",
        run=_cells,
        configure=_configure_json,
    )
    commands.add(
        "completion",
        help="print a shell completion script for bash, zsh or tcsh",
        run=_completion,
        configure=_configure_completion,
    )
