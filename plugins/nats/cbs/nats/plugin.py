"""Entry point ``nats``: options, the ``nats`` transport, discovery and ``cbs server``.

Only hook implementations live here; nats-py is imported when a body connects,
so ``cbs plugins`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from cbs.kernel import (
    Body,
    Cell,
    CommandRegistry,
    Config,
    MiddlewareRegistry,
    OptionRegistry,
    StashKey,
    TransportRegistry,
    hookimpl,
    number,
)

if TYPE_CHECKING:
    from cbs.nats.discovery import Discovery
    from cbs.nats.stats import StatsTable
    from cbs.nats.transport import NatsBus

STATS: StashKey[StatsTable] = StashKey()
DISCOVERY: StashKey[Discovery] = StashKey()


@hookimpl
def cbs_add_options(options: OptionRegistry) -> None:
    options.add(
        "nats_url",
        help="NATS server URL(s), comma-separated (default: start an embedded nats-server)",
        env="NATS_URL",
        metavar="URL",
    )
    options.add(
        "nats_connect_timeout",
        help="seconds to wait for the first NATS connection (default: 5)",
        default=5.0,
        type=number(float, above=0),
        env="CBS_NATS_CONNECT_TIMEOUT",
        metavar="SECONDS",
    )
    options.add(
        "nats_name",
        help="client name shown by the NATS server (default: cbs-<pid>)",
        env="CBS_NATS_NAME",
        metavar="NAME",
    )


def make_bus(config: Config) -> NatsBus:
    from cbs.nats.transport import NatsBus

    return NatsBus(
        config.get("nats_url"),
        client_name=config.get("nats_name"),
        connect_timeout=float(config.get("nats_connect_timeout") or 5.0),
    )


async def discover_cells(config: Config) -> list[dict[str, Any]] | None:
    """For ``cbs cells``: the cells every process on ``--nats-url`` serves."""
    if not config.get("nats_url"):
        return None  # an embedded server would be empty: list installed cells
    from cbs.nats.discovery import discover, summarize

    bus = make_bus(config)
    await bus.start()
    try:
        infos = await discover(bus.client, "INFO")
        stats = await discover(bus.client, "STATS")
    finally:
        await bus.close()
    return summarize(infos, stats)


@hookimpl
def cbs_register_transports(transports: TransportRegistry) -> None:
    transports.add("nats", make_bus, priority=10, discover=discover_cells)


def _uses_nats(body: Body) -> bool:
    return body.bus is not None and body.bus.name == "nats"


@hookimpl
def cbs_register_middleware(middleware: MiddlewareRegistry, body: Body) -> None:
    if body.transport_name() != "nats":
        return
    from cbs.nats.stats import stats_middleware

    table = body.stash.setdefault(STATS, {})
    middleware.add_server("nats_stats", stats_middleware(table), order=-1000)


@hookimpl
async def cbs_cell_started(body: Body, cell: Cell) -> None:
    if not _uses_nats(body):
        return
    from cbs.nats.discovery import Discovery

    if DISCOVERY not in body.stash:
        bus: Any = body.bus
        body.stash[DISCOVERY] = Discovery(bus.client, body.stash.get(STATS, {}))
    await body.stash[DISCOVERY].add(cell)


@hookimpl
async def cbs_body_stopping(body: Body) -> None:
    if DISCOVERY in body.stash:
        await body.stash[DISCOVERY].stop()
        del body.stash[DISCOVERY]


# -- cbs server ---------------------------------------------------------------------------


def _configure_server(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=number(int, at_least=1, at_most=65535),
        default=4222,
        help="port on 127.0.0.1 (4222)",
    )
    parser.add_argument("--store", help="JetStream store folder (default: a temporary one)")


async def _server(body: Body, args: argparse.Namespace) -> int:
    from cbs.nats.server import NatsServer

    server = NatsServer(args.port, args.store)
    await asyncio.to_thread(server.start)

    def ready() -> None:
        print(f"nats-server ready at {server.url} (pid {server.pid})", flush=True)
        print(
            f"use: cbs run --nats-url {server.url}   (or export NATS_URL={server.url})", flush=True
        )

    try:
        await body.run_until_signal(on_ready=ready)  # the body itself is never started
    finally:
        await asyncio.to_thread(server.stop)
    return 0


@hookimpl
def cbs_add_commands(commands: CommandRegistry) -> None:
    commands.add(
        "server",
        help="run a nats-server (JetStream on) in the foreground for multi-process use",
        run=_server,
        configure=_configure_server,
    )
