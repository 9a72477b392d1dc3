"""Entry point ``chaos``: the ``chaos_file`` and ``chaos_control`` options,
the fault-injection middleware, the control responder and ``cbs chaos``.

Only hook implementations live here; the layers are composed once per
endpoint by the kernel, never through a hook per message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cbs.kernel import (
    ConfigError,
    StashKey,
    TransportState,
    hookimpl,
)

if TYPE_CHECKING:
    from cbs.chaos.control import Responder
    from cbs.chaos.state import ChaosState
    from cbs.kernel import (
        Body,
        ClientHandler,
        CommandRegistry,
        Config,
        MiddlewareRegistry,
        OptionRegistry,
        Served,
        ServerHandler,
        Target,
    )

STATE: StashKey[ChaosState] = StashKey()
RESPONDER: StashKey[Responder] = StashKey()
#: Set to False before a body starts to keep it off the control subjects
#: (``cbs chaos`` itself does, so that it does not answer its own messages).
LISTEN: StashKey[bool] = StashKey()

log = logging.getLogger("cbs.chaos")

#: Client side: phase observe, just inside tracing (0), outside metrics (10)
#: and the resilience layers, so spans, metrics and breakers all see faults.
CLIENT_PLACEMENT = ("observe", 5)
#: Server side: outermost, outside tracing and the deadline guard: an injected
#: fault happens before the body handles anything.
SERVER_PLACEMENT = ("outermost", -200)


@hookimpl
def cbs_add_options(options: OptionRegistry) -> None:
    options.add(
        "chaos_file",
        help="fault rules to inject from the start: a YAML or JSON file, or YAML/JSON text"
        " (see docs/chaos.md)",
        env="CBS_CHAOS_FILE",
        metavar="FILE|JSON",
    )
    options.add(
        "chaos_control",
        help="answer control messages on $CBS.CHAOS.* (on or off; default: on)",
        default="on",
        env="CBS_CHAOS_CONTROL",
        choices=("on", "off"),
        metavar="on|off",
    )


def _control_on(config: Config) -> bool:
    value = str(config.get("chaos_control") or "on").lower()
    if value not in ("on", "off"):
        raise ConfigError(f"chaos_control must be on or off, not {value!r}")
    return value == "on"


@hookimpl
def cbs_register_middleware(middleware: MiddlewareRegistry, config: Config, body: Body) -> None:
    from cbs.chaos.rules import read_rules
    from cbs.chaos.state import ChaosState

    rules = read_rules(config.get("chaos_file"))  # ConfigError if bad
    if not rules and not _control_on(config):
        return  # nothing can ever be injected: compose nothing
    hold = float(config.get("request_timeout") or 5.0)
    state = body.stash.setdefault(STATE, ChaosState(rules, hold=hold))

    def cell_of(target: Target) -> str | None:
        cell = body.cells.find_endpoint(target.service, target.verb)
        return None if cell is None else cell.id

    # The layers are imported when a chain is composed (`cbs plugins` composes none).
    def client(target: Target, call_next: ClientHandler) -> ClientHandler:
        from cbs.chaos.layers import client_layer

        return client_layer(state, cell_of)(target, call_next)

    def server(served: Served, call_next: ServerHandler) -> ServerHandler:
        from cbs.chaos.layers import server_layer

        return server_layer(state)(served, call_next)

    phase, order = CLIENT_PLACEMENT
    middleware.add_client("chaos", client, phase=phase, order=order)
    phase, order = SERVER_PLACEMENT
    middleware.add_server("chaos", server, phase=phase, order=order)


@hookimpl
async def cbs_body_started(body: Body) -> None:
    bus = body.bus
    if bus is None or not bus.shared or STATE not in body.stash:
        return
    if not body.stash.get(LISTEN, True) or not _control_on(body.config):
        return
    from cbs.chaos.control import Responder

    responder = Responder(bus, body.stash[STATE], lambda: [c.id for c in body.served_cells])
    transport = body.capabilities.get(TransportState)
    if transport is not None and not all(
        transport.may_subscribe(subject, responder.queue) for subject in responder.subjects
    ):
        # INFO where it matters (a body serving cells); one-shot commands stay quiet
        log.log(
            logging.INFO if body.served_cells else logging.DEBUG,
            "chaos: not answering $CBS.CHAOS.*: this body's identity may not subscribe",
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
def cbs_body_stopped(body: Body) -> None:
    # After a failed start cbs_body_stopping does not run; the closed bus
    # ended the subscriptions already.
    if RESPONDER in body.stash:
        del body.stash[RESPONDER]


@hookimpl
def cbs_add_commands(commands: CommandRegistry) -> None:
    from cbs.chaos.commands import configure, run

    commands.add(
        "chaos",
        help="switch fault rules at runtime (set, clear, list) or run an experiment (run)",
        run=run,
        configure=configure,
    )
