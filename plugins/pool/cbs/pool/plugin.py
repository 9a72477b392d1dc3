"""Entry point ``pool``: ``cbs run --workers N`` (a supervisor of worker
processes and sidecars), ``cbs scale SERVICE N``, the worker side
(heartbeats) and the ``pool`` field of ``cbs cells``.

Only hook implementations live here; the supervisor is imported when used.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from cbs.kernel import (
    ConfigError,
    StashKey,
    UsageError,
    hookimpl,
    number,
)

if TYPE_CHECKING:
    import argparse

    from cbs.kernel import (
        Body,
        CellFieldRegistry,
        CommandRegistry,
        Config,
        MiddlewareRegistry,
        OptionRegistry,
    )
    from cbs.pool.heartbeat import Heartbeat
    from cbs.pool.scaler import PoolScaler
    from cbs.pool.settings import Settings
    from cbs.pool.specs import SidecarSpec

HEARTBEAT: StashKey[Heartbeat] = StashKey()
SCALER: StashKey[PoolScaler] = StashKey()
#: What the scaler is made with when the body starts (a body built only to
#: list plugins or cells never imports it).
SCALER_PLAN: StashKey[tuple[Settings, str, dict[str, str]]] = StashKey()


def _default_pool_id() -> str:
    # os.uname().nodename is what gethostname() returns, without importing socket
    host = re.sub(r"[^A-Za-z0-9_-]", "_", os.uname().nodename.split(".")[0])
    return f"{host}_{os.getpid()}"


@hookimpl
def cbs_add_options(options: OptionRegistry) -> None:
    options.add(
        "workers",
        help="cbs run: supervise N worker processes serving the cells (default: 0, serve here)",
        type=number(int, at_least=0, at_most=64),
        env="CBS_WORKERS",
        metavar="N",
    )
    options.add(
        "replicas",
        help="cbs run: give these services' cells worker processes of their own (SERVICE=N,...)",
        env="CBS_REPLICAS",
        metavar="SERVICE=N,...",
    )
    options.add(
        "pool_file",
        help="cbs run: a TOML file of replicas and sidecar processes to supervise",
        env="CBS_POOL_FILE",
        metavar="PATH",
    )
    options.add(
        "pool_id",
        help="the pool's name in $CBS.POOL.<id>.* (default: <host>_<pid>)",
        env="CBS_POOL_ID",
        metavar="ID",
    )
    options.add(
        "pool_worker_set",
        help="cbs run: options set otherwise for the workers than for the supervisor"
        " (NAME=VALUE,..., e.g. metrics_port=0)",
        env="CBS_POOL_WORKER_SET",
        metavar="NAME=VALUE,...",
    )
    options.add(
        "pool_heartbeat",
        help="seconds between worker heartbeats (default: 1); a worker silent for 10"
        " of them is killed and replaced",
        default=1.0,
        type=number(float, above=0),
        env="CBS_POOL_HEARTBEAT",
        metavar="SECONDS",
    )
    options.add(
        "pool_backoff_max",
        help="longest delay between restarts of a crashing worker (default: 30)",
        default=30.0,
        type=number(float, above=0),
        env="CBS_POOL_BACKOFF_MAX",
        metavar="SECONDS",
    )


@hookimpl
def cbs_configured(config: Config, body: Body) -> None:
    replicas: dict[str, int] = {}
    sidecars: list[SidecarSpec] = []
    if config["replicas"] or config["pool_file"]:
        from cbs.pool.specs import load_pool_file, parse_replicas

        replicas = parse_replicas(config["replicas"] or "")
        if config["pool_file"]:
            declared, sidecars = load_pool_file(config["pool_file"])
            replicas = {**declared, **replicas}
    pool_id = config["pool_id"] or _default_pool_id()
    if re.fullmatch(r"[A-Za-z0-9_-]+", pool_id) is None:
        raise ConfigError("pool_id: letters, digits, '_' and '-' only (one subject token)")
    from cbs.pool.settings import Settings

    every = float(config["pool_heartbeat"])
    settings = Settings(
        heartbeat=every,
        heartbeat_timeout=max(10 * every, 2.0),
        backoff_max=float(config["pool_backoff_max"]),
        stop_timeout=float(config["drain_timeout"] or 10.0) + 5.0,
    )
    overrides = {}
    for part in filter(None, (p.strip() for p in (config["pool_worker_set"] or "").split(","))):
        name, sep, value = part.partition("=")
        option = body.options.get(name.strip())
        if not sep or option is None or option.plugin == "pool":
            raise ConfigError(f"pool_worker_set: {part!r} is not NAME=VALUE of a loaded option")
        overrides[name.strip()] = value.strip()
    if not (config["workers"] or replicas or sidecars):
        if _heartbeat(body) is None:  # not itself a worker: worker processes beside it
            body.stash[SCALER_PLAN] = (settings, pool_id, overrides)
        return
    from cbs.pool.runner import PoolRunner

    runner = PoolRunner(
        settings,
        worker_set=overrides,
        workers=int(config["workers"] or 0),
        replicas=replicas,
        sidecars=sidecars,
        pool_id=pool_id,
    )
    body.capabilities.provide(runner, plugin="pool")


# -- the worker side -----------------------------------------------------------------------


def _heartbeat(body: Body) -> Heartbeat | None:
    """The heartbeat of a worker a supervisor started (``None`` elsewhere)."""
    found = body.stash.get(HEARTBEAT, None)
    if found is not None:
        return found
    from cbs.pool.settings import HEARTBEAT_EVERY, HEARTBEAT_FD

    environ = os.environ if body.environ is None else body.environ
    if not environ.get(HEARTBEAT_FD, "").isdigit():
        return None
    from cbs.pool.heartbeat import Heartbeat

    every = float(environ.get(HEARTBEAT_EVERY) or 1.0)
    beat = Heartbeat(int(environ[HEARTBEAT_FD]), every)
    body.stash[HEARTBEAT] = beat
    return beat


@hookimpl
def cbs_register_middleware(middleware: MiddlewareRegistry, body: Body) -> None:
    beat = _heartbeat(body)
    if beat is not None:
        middleware.add_server("pool_busy", beat.middleware, phase="outermost", order=-300)


@hookimpl
def cbs_body_starting(body: Body) -> None:
    plan = body.stash.get(SCALER_PLAN, None)
    if plan is not None and SCALER not in body.stash:
        from cbs.pool.scaler import PoolScaler

        scaler = PoolScaler(body, *plan)
        body.stash[SCALER] = scaler
        body.capabilities.provide(scaler, plugin="pool")


@hookimpl
def cbs_body_started(body: Body) -> None:
    beat = _heartbeat(body)
    if beat is not None and body.served_cells:
        beat.start()


@hookimpl
async def cbs_body_stopping(body: Body) -> None:
    beat = body.stash.get(HEARTBEAT, None)
    if beat is not None:
        beat.draining()
    scaler = body.stash.get(SCALER, None)
    if scaler is not None:
        await scaler.close()  # the workers drain while this body still serves


@hookimpl
async def cbs_body_stopped(body: Body) -> None:
    beat = body.stash.get(HEARTBEAT, None)
    if beat is not None:
        await beat.stop()


# -- cbs scale, cbs cells ------------------------------------------------------------------


def _configure_scale(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", metavar="SERVICE", help="the service whose workers to count")
    parser.add_argument(
        "count", metavar="N", type=number(int, at_least=0, at_most=64), help="workers wanted"
    )
    parser.add_argument("--pool", metavar="ID", help="ask this pool only (default: any serving it)")
    parser.add_argument("--json", action="store_true", help="print the pool's answer as JSON")


async def _scale(body: Body, args: argparse.Namespace) -> int:
    import json

    from cbs.contracts.envelope import check_name
    from cbs.nats import NatsConnection
    from cbs.pool.control import request_scale

    try:
        check_name("service", args.service)
    except Exception:
        raise UsageError(f"service {args.service!r} is not snake_case") from None
    if not body.transport_shared():
        raise UsageError("cbs scale needs the pool's bus (e.g. --nats-url URL)")
    await body.start(serve=False)
    conn = body.capabilities.require(NatsConnection, needed_by="cbs scale")
    reply = await request_scale(conn.client, args.service, args.count, pool=args.pool)
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        others = [s for s in reply.get("services", []) if s != args.service]
        also = f" (with {', '.join(others)})" if others else ""
        print(f"{args.service}: {reply['replicas']} workers in pool {reply['pool']}{also}")
    return 0


@hookimpl
def cbs_add_commands(commands: CommandRegistry) -> None:
    commands.add(
        "scale",
        help="set how many workers a running pool gives a service (shrinking drains first)",
        run=_scale,
        configure=_configure_scale,
    )


async def _pool_field(body: Body, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from cbs.pool.stats import PoolStats

    groups: list[dict[str, Any]] = []
    own = body.capabilities.get(PoolStats)
    if own is not None:
        groups = [g.to_dict() for g in own.groups()]
    else:
        from cbs.nats import NatsConnection

        conn = body.capabilities.get(NatsConnection)
        if conn is None:
            return {}
        from cbs.pool.control import pool_statuses

        for status in await pool_statuses(conn.client):
            groups.extend(g for g in status.get("groups", []) if isinstance(g, dict))
    values: dict[str, Any] = {}
    for group in groups:
        keys = ("pool", "name", "workers", "alive", "serving", "restarts", "busy", "queue", "state")
        summary = {k: group.get(k) for k in keys}
        for cell in group.get("cells", []):
            values[cell] = summary
    return {row["id"]: values[row["id"]] for row in rows if row["id"] in values}


def _pool_text(value: Any) -> str:
    return (
        f"{value['serving']}/{value['workers']} serving, restarts {value['restarts']},"
        f" busy {value['busy']}, queue {value['queue']}, {value['state']}"
    )


@hookimpl
def cbs_add_cell_fields(fields: CellFieldRegistry) -> None:
    fields.add("pool", _pool_field, text=_pool_text)
