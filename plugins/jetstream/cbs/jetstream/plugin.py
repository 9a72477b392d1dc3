"""Entry point ``jetstream``: options, the durable sender, durable inboxes and
the ``send``, ``replay`` and ``dlq`` commands.

Only hook implementations live here; nats-py is imported when a body on the
NATS transport starts, so ``cbs plugins`` stays fast. Nothing happens on
other transports: ``Body.send`` then raises ``Unavailable``. The connection
comes from the nats transport's typed capability ``NatsConnection``; the
durable sender is offered as the kernel's ``DurableSender`` capability.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cbs.jetstream import hookspecs
from cbs.jetstream.commands import (
    configure_dlq,
    configure_replay,
    configure_send,
    run_dlq,
    run_replay,
    run_send,
)
from cbs.jetstream.settings import DURABLE, Settings, durable_verbs, parse_duration
from cbs.kernel import (
    StashKey,
    hookimpl,
)
from cbs.nats import NatsConnection

if TYPE_CHECKING:
    from collections.abc import Callable

    import pluggy

    from cbs.contracts import Cell
    from cbs.jetstream.runtime import JetStreamRuntime
    from cbs.kernel import (
        Body,
        CommandRegistry,
        Config,
        EndpointOptionRegistry,
        OptionRegistry,
    )

log = logging.getLogger("cbs.jetstream")

SETTINGS: StashKey[Settings] = StashKey()
RUNTIME: StashKey[JetStreamRuntime] = StashKey()
#: Takes the inboxes' metrics out of the body's metrics registry.
GAUGE: StashKey[Callable[[], None]] = StashKey()


@hookimpl
def cbs_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def cbs_add_endpoint_options(options: EndpointOptionRegistry) -> None:
    options.add(DURABLE)


@hookimpl
def cbs_add_options(options: OptionRegistry) -> None:
    options.add(
        "durable",
        help="verbs of existing cells to serve from a durable inbox too:"
        " SERVICE.VERB or SERVICE.*, comma-separated (e.g. printer.write)",
        env="CBS_DURABLE",
        metavar="LIST",
    )
    add = options.add
    add(
        "jetstream_max_deliveries",
        help="deliveries of a durable request before it goes to the dead letters (default: 5)",
        default=5,
        type=int,
        env="CBS_JETSTREAM_MAX_DELIVERIES",
        metavar="N",
    )
    add(
        "jetstream_backoff",
        help="delay before the first redelivery, doubled each time (default: 1s)",
        default=1.0,
        type=parse_duration,
        env="CBS_JETSTREAM_BACKOFF",
        metavar="DURATION",
    )
    add(
        "jetstream_backoff_max",
        help="longest delay between two deliveries (default: 60s)",
        default=60.0,
        type=parse_duration,
        env="CBS_JETSTREAM_BACKOFF_MAX",
        metavar="DURATION",
    )
    add(
        "jetstream_ack_wait",
        help="redeliver a message whose handler gave no sign for this long (default: 30s)",
        default=30.0,
        type=parse_duration,
        env="CBS_JETSTREAM_ACK_WAIT",
        metavar="DURATION",
    )
    add(
        "jetstream_max_age",
        help="how long streams keep requests and dead letters (default: 7d)",
        default=7 * 86400.0,
        type=parse_duration,
        env="CBS_JETSTREAM_MAX_AGE",
        metavar="DURATION",
    )
    add(
        "jetstream_duplicate_window",
        help="a resend with the same envelope id within this is stored once (default: 2m)",
        default=120.0,
        type=parse_duration,
        env="CBS_JETSTREAM_DUPLICATE_WINDOW",
        metavar="DURATION",
    )
    add(
        "jetstream_replicas",
        help="replicas of streams and consumers (default: 3 on a cluster of 3+ servers, else 1)",
        type=int,
        env="CBS_JETSTREAM_REPLICAS",
        metavar="N",
    )
    add(
        "jetstream_batch",
        help="most messages one pull asks for (default: 256)",
        default=256,
        type=int,
        env="CBS_JETSTREAM_BATCH",
        metavar="N",
    )
    add(
        "jetstream_concurrency",
        help="durable handlers per verb and instance (default: the cell's max_concurrency)",
        type=int,
        env="CBS_JETSTREAM_CONCURRENCY",
        metavar="N",
    )
    add(
        "jetstream_publish_timeout",
        help="how long a durable send retries before it fails (default: 10s)",
        default=10.0,
        type=parse_duration,
        env="CBS_JETSTREAM_PUBLISH_TIMEOUT",
        metavar="DURATION",
    )
    add(
        "jetstream_dedup_window",
        help="a durable handler runs at most once per envelope id within this;"
        " 0 turns it off (default: the duplicate window)",
        type=parse_duration,
        env="CBS_JETSTREAM_DEDUP_WINDOW",
        metavar="DURATION",
    )


@hookimpl
def cbs_add_commands(commands: CommandRegistry) -> None:
    commands.add(
        "send",
        help="store one request durably (JetStream) and print its envelope id",
        run=run_send,
        configure=configure_send,
    )
    commands.add(
        "replay",
        help="re-deliver stored requests of a service (by time or sequence)",
        run=run_replay,
        configure=configure_replay,
    )
    commands.add(
        "dlq",
        help="dead letters of a service: list, show, retry, purge",
        run=run_dlq,
        configure=configure_dlq,
    )


@hookimpl
def cbs_configured(config: Config, body: Body) -> None:
    # Bad option values fail with one line, before anything connects.
    body.stash[SETTINGS] = Settings.from_config(config)


def _runtime(body: Body) -> JetStreamRuntime | None:
    """The plugin's state on a body connected to NATS (``None`` on other buses)."""
    runtime = body.stash.get(RUNTIME, None)
    if runtime is None:
        conn = body.capabilities.get(NatsConnection)
        if conn is None:
            return None
        from cbs.jetstream.runtime import JetStreamRuntime

        runtime = JetStreamRuntime(body, conn, body.stash[SETTINGS])
        body.stash[RUNTIME] = runtime
    return runtime


@hookimpl
async def cbs_cell_started(body: Body, cell: Cell) -> None:
    endpoints = durable_verbs(cell, body.stash[SETTINGS].durable)
    if not endpoints:
        return
    runtime = _runtime(body)
    if runtime is None:
        log.warning(
            "cell %s: durable verbs (%s) served by request/reply only: this transport"
            " keeps nothing (durable inboxes need the nats transport)",
            cell.id,
            ", ".join(e.verb for e in endpoints),
        )
        return
    await runtime.serve(cell, endpoints)


def _show_gauge(body: Body, runtime: JetStreamRuntime) -> None:
    """With cbs-metrics in the body: the inboxes' metrics in its registry."""
    try:
        from cbs.metrics import MetricsRegistry
    except ImportError:
        return
    metrics = body.capabilities.get(MetricsRegistry)
    if metrics is None or GAUGE in body.stash:
        return

    def gauge() -> Any:
        from cbs.jetstream.gauge import JetStreamCollector  # imports prometheus_client

        return JetStreamCollector(runtime)

    body.stash[GAUGE] = metrics.add(gauge)
    runtime.watch_consumers()


def _hide_gauge(body: Body) -> None:
    if GAUGE in body.stash:
        remove = body.stash[GAUGE]
        del body.stash[GAUGE]
        remove()
    runtime = body.stash.get(RUNTIME, None)
    if runtime is not None:
        runtime.unwatch()  # also after a failed start, when stop() did not run


@hookimpl
def cbs_body_started(body: Body) -> None:
    runtime = _runtime(body)
    if runtime is not None:
        body.capabilities.provide(runtime.sender, plugin="jetstream")
        _show_gauge(body, runtime)  # every cbs_body_starting (cbs-metrics' included) has run


def _drain_timeout(body: Body) -> float:
    return float(body.config.get("drain_timeout") or 10.0)


@hookimpl
async def cbs_body_stopping(body: Body) -> None:
    runtime = body.stash.get(RUNTIME, None)
    if runtime is not None:
        body.capabilities.withdraw(runtime.sender)
        await runtime.stop(_drain_timeout(body))


@hookimpl
async def cbs_cell_stopped(body: Body, cell: Cell) -> None:
    # Also after a failed start (cbs_body_stopping does not run then), and
    # for a cell removed or replaced at run time: stop that cell's inboxes.
    runtime = body.stash.get(RUNTIME, None)
    if runtime is not None:
        await runtime.stop_cell(cell, _drain_timeout(body))


@hookimpl
def cbs_body_stopped(body: Body) -> None:
    _hide_gauge(body)
    runtime = body.stash.get(RUNTIME, None)
    if runtime is not None:
        body.capabilities.withdraw(runtime.sender)
        del body.stash[RUNTIME]
