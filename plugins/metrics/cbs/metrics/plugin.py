"""Entry point ``metrics``: Prometheus metrics as middleware, and an HTTP
endpoint (``--metrics-port``; off by default) with ``/metrics``, ``/healthz``,
``/readyz`` and a status page.

Only hook implementations live here. Counting needs no import at all;
prometheus_client is imported when the body's registry is first read.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cbs.kernel import (
    ConfigError,
    StashKey,
    TransportState,
    hookimpl,
    number,
)
from cbs.metrics import METRICS, MetricsRegistry

if TYPE_CHECKING:
    from collections.abc import Callable

    from cbs.kernel import (
        Body,
        Cell,
        ClientHandler,
        MiddlewareRegistry,
        OptionRegistry,
        Served,
        ServerHandler,
        Target,
    )
    from cbs.metrics.health import Health
    from cbs.metrics.http import MetricsServer
    from cbs.metrics.stats import BodyStats

log = logging.getLogger("cbs.metrics")

#: Phase "observe", order 10: inside tracing (order 0), outside resilience and attempts.
ORDER = 10

STATS: StashKey[BodyStats] = StashKey()
HEALTH: StashKey[Health] = StashKey()
SERVER: StashKey[MetricsServer] = StashKey()
#: Takes the body's own collector out of its registry.
COLLECTOR: StashKey[Callable[[], None]] = StashKey()


@hookimpl
def cbs_add_options(options: OptionRegistry) -> None:
    options.add(
        "metrics_port",
        help="serve /metrics, /healthz, /readyz and a status page on this port (0: any free"
        " port; default: off)",
        type=number(int, at_least=0, at_most=65535),
        env="CBS_METRICS_PORT",
        metavar="PORT",
    )
    options.add(
        "metrics_host",
        help="address the metrics endpoint binds (default: 127.0.0.1)",
        default="127.0.0.1",
        env="CBS_METRICS_HOST",
        metavar="HOST",
    )


def body_stats(body: Body) -> BodyStats:
    """The counters of ``body`` (created at its first start)."""
    from cbs.metrics.stats import BodyStats

    return body.stash.setdefault(STATS, BodyStats())


def server_url(body: Body) -> str | None:
    """The URL of the body's metrics endpoint while it is served, else ``None``."""
    server = body.stash.get(SERVER, None)
    return None if server is None else server.url


def pool_groups(body: Body) -> list[Any]:
    """The groups of the pool ``body`` supervises (cbs-pool's ``PoolStats``
    capability; none without cbs-pool or outside ``cbs run --workers``)."""
    try:
        from cbs.pool import PoolStats
    except ImportError:
        return []
    pool = body.capabilities.get(PoolStats)
    return [] if pool is None else list(pool.groups())


@hookimpl
def cbs_register_middleware(middleware: MiddlewareRegistry, body: Body) -> None:
    # The counters (and the request path they import) are made when a chain
    # is composed: `cbs plugins` registers middleware but composes none.
    def client(target: Target, call_next: ClientHandler) -> ClientHandler:
        from cbs.metrics.stats import client_middleware

        return client_middleware(body_stats(body))(target, call_next)

    def server(served: Served, call_next: ServerHandler) -> ServerHandler:
        from cbs.metrics.stats import server_middleware

        return server_middleware(body_stats(body))(served, call_next)

    middleware.add_client("metrics", client, phase="observe", order=ORDER)
    middleware.add_server("metrics", server, phase="observe", order=ORDER)


def _forget(body: Body) -> None:
    """Take the body's collector out of its registry (idempotent)."""
    remove = body.stash.get(COLLECTOR, None)
    if remove is not None:
        del body.stash[COLLECTOR]
        remove()


@hookimpl
async def cbs_body_starting(body: Body) -> None:
    import asyncio

    from cbs.metrics.health import Health, readiness

    stats = body_stats(body)
    metrics = body.stash.setdefault(METRICS, MetricsRegistry())
    body.capabilities.provide(metrics, plugin="metrics")
    _forget(body)  # normally done when it stopped
    health = body.stash.setdefault(HEALTH, Health())
    health.reset(asyncio.get_running_loop())

    def collector() -> Any:
        from cbs.metrics.collector import CbsCollector

        return CbsCollector(
            stats,
            lambda: body.capabilities.get(TransportState),
            lambda: pool_groups(body),
            lambda: readiness(body, health)[0],
        )

    body.stash[COLLECTOR] = metrics.add(collector)
    port = body.config.get("metrics_port")
    if port is None:
        return
    from cbs.metrics.http import MetricsServer

    host = body.config.get("metrics_host") or "127.0.0.1"
    server = MetricsServer(body, health, stats, metrics.registry, host, int(port))
    try:
        server.start()
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    body.stash[SERVER] = server
    log.info("serving %s (/metrics /healthz /readyz)", server.url)


@hookimpl
def cbs_cell_started(body: Body, cell: Cell) -> None:
    body_stats(body).cell_started(cell.id, cell.service, cell.version)
    if HEALTH in body.stash:
        body.stash[HEALTH].started.add(cell.id)


@hookimpl
def cbs_cell_stopped(body: Body, cell: Cell) -> None:
    body_stats(body).cell_stopped(cell.id)
    if HEALTH in body.stash:
        body.stash[HEALTH].started.discard(cell.id)


@hookimpl
def cbs_body_stopping(body: Body) -> None:
    if HEALTH in body.stash:
        body.stash[HEALTH].stopping = True  # not ready while draining


@hookimpl
async def cbs_body_stopped(body: Body) -> None:
    server = body.stash.get(SERVER, None)
    if server is not None:
        import asyncio

        del body.stash[SERVER]
        await asyncio.to_thread(server.stop)
    _forget(body)
