"""Entry point ``breaker``: the ``breaker_config`` option, the resilience
middleware, the states responder and the ``breaker`` field of ``cbs cells``.

Only hook implementations live here; the layers are composed once per target
by the kernel, never through a hook per message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cbs.breaker import hookspecs
from cbs.kernel import (
    EndpointOption,
    StashKey,
    TransportState,
    hookimpl,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import pluggy

    from cbs.breaker.report import BreakerTable, Responder
    from cbs.breaker.settings import Settings
    from cbs.kernel import (
        Body,
        CellFieldRegistry,
        ClientHandler,
        Config,
        EndpointOptionRegistry,
        MiddlewareRegistry,
        OptionRegistry,
        Served,
        ServerHandler,
        Target,
    )

TABLE: StashKey[BreakerTable] = StashKey()
RESPONDER: StashKey[Responder] = StashKey()
SETTINGS: StashKey[Settings] = StashKey()
#: Takes the breaker gauge out of the body's metrics registry.
GAUGE: StashKey[Callable[[], None]] = StashKey()

log = logging.getLogger("cbs.breaker")

#: Where each layer sits among the client middleware: (phase, order). The
#: first four in phase ``resilience`` (outside any per-attempt middleware),
#: the per-attempt timeout in phase ``attempt`` (once per attempt).
PLACEMENT = {
    "deadline": ("resilience", 10),
    "bulkhead": ("resilience", 20),
    "retry": ("resilience", 30),
    "circuit_breaker": ("resilience", 40),
    "attempt_timeout": ("attempt", 0),
}
#: The server's deadline guard: inside tracing and metrics (a late request is
#: still traced and counted), outside everything else.
GUARD_PLACEMENT = ("resilience", 0)

#: The endpoint option a cell sets for a verb that is safe to repeat
#: (``@cell.verb("say_hello", schema=..., idempotent=True)``): retries apply.
IDEMPOTENT = EndpointOption(
    "idempotent", bool, False, help="safe to call twice: cbs-breaker may retry it"
)


@hookimpl
def cbs_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def cbs_add_endpoint_options(options: EndpointOptionRegistry) -> None:
    options.add(IDEMPOTENT)


@hookimpl
def cbs_add_options(options: OptionRegistry) -> None:
    options.add(
        "breaker_config",
        help="resilience settings per service and verb: a TOML or JSON file, or a JSON object"
        " (see docs/resilience.md)",
        env="CBS_BREAKER_CONFIG",
        metavar="FILE|JSON",
    )


def _idempotent(target: Target, declared: bool | None) -> bool:
    if declared is not None:
        return declared
    return IDEMPOTENT.of(target.endpoint)


@hookimpl
def cbs_configured(config: Config, body: Body) -> None:
    from cbs.breaker.settings import load_settings

    body.stash[SETTINGS] = load_settings(config.get("breaker_config"))  # ConfigError if bad


@hookimpl
def cbs_register_middleware(middleware: MiddlewareRegistry, config: Config, body: Body) -> None:
    from cbs.breaker.report import BreakerTable

    # The layers are imported when a chain is composed (`cbs plugins` and
    # `cbs --help` register middleware but compose none).
    settings = body.stash[SETTINGS]
    table = body.stash.setdefault(TABLE, BreakerTable())
    hook = body.plugin_manager.hook

    def announce(service: str, verb: str, old: str, new: str) -> None:
        hook.cbs_breaker_state_changed(body=body, service=service, verb=verb, old=old, new=new)

    table.listeners.append(announce)

    def deadline(target: Target, call_next: ClientHandler) -> ClientHandler:
        from cbs.breaker import layers

        policy = settings.policy(target.service, target.verb)
        return layers.deadline_layer(policy.deadline)(target, call_next)

    def bulkhead(target: Target, call_next: ClientHandler) -> ClientHandler:
        from cbs.breaker import layers

        policy = settings.policy(target.service, target.verb)
        if not policy.max_concurrent:
            return call_next
        return layers.bulkhead_layer(policy.max_concurrent, policy.max_queue)(target, call_next)

    def retry(target: Target, call_next: ClientHandler) -> ClientHandler:
        from cbs.breaker import layers

        policy = settings.policy(target.service, target.verb)
        if not policy.retries or not _idempotent(target, policy.idempotent):
            return call_next
        factory = layers.retry_layer(policy.retries, policy.backoff, policy.backoff_max)
        return factory(target, call_next)

    def circuit_breaker(target: Target, call_next: ClientHandler) -> ClientHandler:
        from cbs.breaker import layers

        policy = settings.policy(target.service, target.verb)
        if not policy.breaker:
            return call_next
        breaker = table.get(target.service, target.verb, policy.breaker_settings())
        return layers.circuit_layer(breaker)(target, call_next)

    def attempt_timeout(target: Target, call_next: ClientHandler) -> ClientHandler:
        from cbs.breaker import layers

        policy = settings.policy(target.service, target.verb)
        factory = layers.attempt_layer(policy.attempt_timeout, policy.propagate_deadline)
        return factory(target, call_next)

    for factory in (deadline, bulkhead, retry, circuit_breaker, attempt_timeout):
        phase, order = PLACEMENT[factory.__name__]
        middleware.add_client(factory.__name__, factory, phase=phase, order=order)
    phase, order = GUARD_PLACEMENT
    middleware.add_server("deadline_guard", _deadline_guard, phase=phase, order=order)


def _deadline_guard(served: Served, call_next: ServerHandler) -> ServerHandler:
    from cbs.breaker.layers import deadline_guard

    return deadline_guard(served, call_next)


def _show_gauge(body: Body) -> None:
    """With cbs-metrics in the body: the breakers' states in its registry."""
    try:
        from cbs.metrics import MetricsRegistry
    except ImportError:
        return
    metrics = body.capabilities.get(MetricsRegistry)
    if metrics is None or GAUGE in body.stash:
        return
    table = body.stash[TABLE]

    def gauge() -> Any:
        from cbs.breaker.gauge import BreakerCollector  # imports prometheus_client

        return BreakerCollector(table)

    body.stash[GAUGE] = metrics.add(gauge)


def _hide_gauge(body: Body) -> None:
    if GAUGE in body.stash:
        remove = body.stash[GAUGE]
        del body.stash[GAUGE]
        remove()


@hookimpl
async def cbs_body_started(body: Body) -> None:
    if TABLE not in body.stash:
        return
    _show_gauge(body)  # every cbs_body_starting (cbs-metrics' included) has run
    bus = body.bus
    if bus is None or not bus.shared:
        return
    from cbs.breaker.report import QUERY_SUBJECT, Responder

    responder = Responder(bus, body.stash[TABLE])
    transport = body.capabilities.get(TransportState)
    if transport is not None and not transport.may_subscribe(QUERY_SUBJECT, responder.queue):
        # INFO where it matters (a body serving cells); one-shot commands stay quiet
        log.log(
            logging.INFO if body.served_cells else logging.DEBUG,
            "breaker: not answering %s: this body's identity may not subscribe",
            QUERY_SUBJECT,
        )
        return
    await responder.start()
    body.stash[RESPONDER] = responder


@hookimpl
async def cbs_body_stopping(body: Body) -> None:
    if RESPONDER in body.stash:
        responder = body.stash[RESPONDER]
        del body.stash[RESPONDER]
        await responder.stop()


@hookimpl
def cbs_add_cell_fields(fields: CellFieldRegistry) -> None:
    fields.add("breaker", _cells_field, text=_format_field)


# The report (and the request path it needs) is imported when `cbs cells`
# shows the field, not whenever a body is built.
async def _cells_field(body: Body, cells: list[dict[str, Any]]) -> dict[str, Any]:
    from cbs.breaker.report import cells_field

    return await cells_field(body, cells)


def _format_field(value: Any) -> str:
    from cbs.breaker.report import format_field

    return format_field(value)


@hookimpl
def cbs_body_stopped(body: Body) -> None:
    _hide_gauge(body)
    # After a failed start cbs_body_stopping does not run; the closed bus
    # ended the subscription already.
    if RESPONDER in body.stash:
        del body.stash[RESPONDER]
