"""Entry point ``nats``: options, the ``nats`` transport, discovery and ``cbs server``.

Only hook implementations live here; nats-py is imported when a body connects,
so ``cbs plugins`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cbs.kernel import (
    ConfigError,
    Directory,
    StashKey,
    hookimpl,
    number,
)
from cbs.nats.capability import NatsConnection

if TYPE_CHECKING:
    import argparse

    from cbs.kernel import (
        Body,
        Cell,
        CommandRegistry,
        Config,
        OptionRegistry,
        TransportRegistry,
    )
    from cbs.nats.auth import NatsAuth
    from cbs.nats.discovery import Discovery
    from cbs.nats.transport import NatsBus

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
    options.add(
        "nats_secure",
        help="run the embedded nats-server (no --nats-url) with TLS and operator-mode"
        " identities, the body connecting as its admin (docs/security.md)",
        type=bool,
        default=False,
        env="CBS_NATS_SECURE",
    )
    _add_auth_options(options)


def _add_auth_options(options: OptionRegistry) -> None:
    """The nats CLI's connection options (docs/security.md has the table)."""
    for name, env, metavar, text in (
        ("nats_context", "NATS_CONTEXT", "NAME", "a nats CLI context (its url, credentials, TLS)"),
        ("nats_creds", "NATS_CREDS", "FILE", "user credentials file (JWT and nkey seed)"),
        ("nats_nkey", "NATS_NKEY", "SEEDFILE", "nkey seed file"),
        ("nats_user", "NATS_USER", "USER", "user name"),
        ("nats_password", "NATS_PASSWORD", "PASSWORD", "password (prefer the env var)"),
        ("nats_token", "NATS_TOKEN", "TOKEN", "auth token (prefer the env var)"),
        ("tls_ca", "NATS_CA", "FILE", "CA certificate(s) that sign the server's certificate"),
        ("tls_cert", "NATS_CERT", "FILE", "client certificate, for mutual TLS"),
        ("tls_key", "NATS_KEY", "FILE", "the client certificate's private key"),
        (
            "nats_inbox_prefix",
            "NATS_INBOX_PREFIX",
            "PREFIX",
            "reply inbox prefix (default: the private one a creds file allows, else _INBOX)",
        ),
    ):
        options.add(name, help=text, env=env, metavar=metavar)
    options.add(
        "tls_first",
        help="TLS handshake before the server's INFO (handshake_first servers)",
        type=bool,
        default=False,
        env="NATS_TLS_FIRST",
    )


def auth_from(config: Config) -> NatsAuth:
    from cbs.nats.auth import NatsAuth

    return NatsAuth.from_config(config.get)


@hookimpl
def cbs_configured(config: Config, body: Body) -> None:
    # Files that cannot be read and half pairs are one line now, not at connect.
    from cbs.nats.auth import AuthError

    try:
        auth_from(config).check()
    except (AuthError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if config.get("nats_secure") and _shared(config):
        raise ConfigError(
            "nats_secure is for the embedded nats-server: with nats_url or nats_context,"
            " give that server's credentials (nats_creds, tls_ca, ...)"
        )


def _shared(config: Config) -> bool:
    return bool(config.get("nats_url") or config.get("nats_context"))


def make_bus(config: Config) -> NatsBus:
    from cbs.nats.transport import NatsBus

    return NatsBus(
        config.get("nats_url"),
        client_name=config.get("nats_name"),
        connect_timeout=float(config.get("nats_connect_timeout") or 5.0),
        auth=auth_from(config),
        secure=bool(config.get("nats_secure")),
    )


async def discover_cells(body: Body) -> list[dict[str, Any]] | None:
    """For ``cbs cells``: the cells every process on ``--nats-url`` serves."""
    if not body.transport_shared():
        return None  # an embedded server would be empty: list installed cells
    await body.start(serve=False)  # the listing's fields may use the connection too
    return await body.capabilities.require(Directory, needed_by="cbs cells").list_cells()


@hookimpl
def cbs_register_transports(transports: TransportRegistry) -> None:
    transports.add(
        "nats",
        make_bus,
        priority=10,
        discover=discover_cells,
        shared=_shared,  # else an embedded server
    )


def _discovery(body: Body) -> Discovery | None:
    """This body's discovery responder (made at the first served cell)."""
    conn = body.capabilities.get(NatsConnection)
    if conn is None:
        return None
    if DISCOVERY not in body.stash:
        from cbs.nats.discovery import Discovery

        body.stash[DISCOVERY] = Discovery(conn, body.endpoint_options.metadata)
    return body.stash[DISCOVERY]


@hookimpl
async def cbs_cell_started(body: Body, cell: Cell) -> None:
    discovery = _discovery(body)
    if discovery is not None:
        await discovery.add(cell)


@hookimpl
async def cbs_cell_stopping(body: Body, cell: Cell) -> None:
    # Out of discovery as soon as it drains: listings show who takes requests.
    if DISCOVERY in body.stash:
        await body.stash[DISCOVERY].remove(cell)


@hookimpl
async def cbs_body_stopping(body: Body) -> None:
    if DISCOVERY in body.stash:
        await body.stash[DISCOVERY].stop()
        del body.stash[DISCOVERY]


@hookimpl
def cbs_body_stopped(body: Body) -> None:
    if DISCOVERY in body.stash:  # after a failed start cbs_body_stopping does not run
        del body.stash[DISCOVERY]


# -- cbs server ---------------------------------------------------------------------------


def _configure_server(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=number(int, at_least=1, at_most=65535),
        help="port on 127.0.0.1 (4222; a cluster uses free ports)",
    )
    parser.add_argument("--store", help="JetStream store folder (default: a temporary one)")
    parser.add_argument(
        "--secure",
        metavar="DIR",
        help="operator mode and TLS: create (once) the operator, accounts, CA and"
        " creds files in DIR, 0600 (docs/security.md)",
    )
    parser.add_argument(
        "--cluster",
        type=number(int, at_least=1, at_most=9),
        metavar="N",
        help="an N-node cluster on free ports (docs/cluster.md)",
    )
    parser.add_argument(
        "--supercluster",
        action="store_true",
        help="two clusters A and B (N nodes each, default 3) joined by gateways",
    )


async def _server(body: Body, args: argparse.Namespace) -> int:
    import asyncio

    from cbs.contracts import Unavailable
    from cbs.nats.server import NatsServer

    if args.cluster or args.supercluster:
        from cbs.nats.cluster import serve_cluster

        return await serve_cluster(body, args)
    extra, hint = "", ""
    if args.secure:
        from cbs.nats.secure import SecureSetup

        setup = await asyncio.to_thread(SecureSetup.create, args.secure)
        extra = setup.server_config()
        hint = (
            f" NATS_CA={setup.ca.cert} NATS_CREDS={setup.creds_path('admin')}"
            f"   (cbs auth add-cell|add-caller --dir {setup.folder} for the others)"
        )
    server = NatsServer(args.port or 4222, args.store, extra_config=extra)
    await asyncio.to_thread(server.start)
    url = server.url.replace("nats://", "tls://") if args.secure else server.url

    def ready() -> None:
        print(f"nats-server ready at {url} (pid {server.pid})", flush=True)
        print(f"use: export NATS_URL={url}{hint}", flush=True)

    # the body itself is never started
    serving = asyncio.ensure_future(body.run_until_signal(on_ready=ready))
    died = asyncio.ensure_future(server.wait_exit())
    try:
        await asyncio.wait({serving, died}, return_when=asyncio.FIRST_COMPLETED)
        if died.done():
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            raise Unavailable(died.result())
        await serving
    finally:
        died.cancel()
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
    from cbs.nats.auth_commands import configure_auth, run_auth

    commands.add(
        "auth",
        help="identities of a cbs server --secure folder: add-cell, add-caller, ls",
        run=run_auth,
        configure=configure_auth,
    )
