"""Entry point ``spec``: the commands ``spec``, ``apply`` and ``diff``, the
``SpecServer`` that ``cbs run SPEC`` hands a spec to, and the measuring middleware the autoscaler
reads. Only hook implementations live here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel import (
    ConfigError,
    StashKey,
    hookimpl,
)
from cbs.spec.signals import PLACEMENT, Stats

if TYPE_CHECKING:
    from cbs.contracts import Cell
    from cbs.kernel import (
        Body,
        CommandRegistry,
        Config,
        MiddlewareRegistry,
        OptionRegistry,
    )
    from cbs.spec.p2c import P2C
    from cbs.spec.runner import SpecRunner

#: Per-service in-flight and latency of this body.
STATS: StashKey[Stats] = StashKey()
#: The runner of the spec this body serves (absent: it serves none).
RUNNER: StashKey[SpecRunner] = StashKey()
#: Caller-side balancing (option ``balancing = p2c``).
BALANCER: StashKey[P2C] = StashKey()
STRATEGIES = ("queue", "p2c")


@hookimpl
def cbs_add_options(options: OptionRegistry) -> None:
    options.add(
        "balancing",
        help="how this body's requests choose an instance: queue (the NATS queue group, the"
        " default) or p2c (power of two choices on observed latency and in-flight requests;"
        " also serves instance subjects)",
        env="CBS_BALANCING",
        metavar="STRATEGY",
    )


@hookimpl
def cbs_configured(config: Config, body: Body) -> None:
    strategy = config["balancing"] or "queue"
    if strategy not in STRATEGIES:
        raise ConfigError(f"balancing: {strategy!r} is not one of: {', '.join(STRATEGIES)}")
    if strategy == "p2c":
        from cbs.spec.p2c import P2C

        body.stash[BALANCER] = P2C(body)


@hookimpl
def cbs_body_built(body: Body) -> None:
    from cbs.spec.commands import FileSpecServer

    body.capabilities.provide(FileSpecServer(), plugin="spec")  # for `cbs run SPEC`


@hookimpl
def cbs_register_middleware(middleware: MiddlewareRegistry, config: Config, body: Body) -> None:
    p2c = body.stash.get(BALANCER, None)
    if p2c is not None:  # innermost: once per attempt, no hook per message
        middleware.add_client("p2c", p2c.middleware, phase="transport", order=100)
    if RUNNER not in body.stash:
        return  # a body that serves no spec: nothing reads the stats
    stats = body.stash.setdefault(STATS, Stats())
    phase, order = PLACEMENT
    middleware.add_server("spec_stats", stats.middleware, phase=phase, order=order)


@hookimpl
async def cbs_cell_started(body: Body, cell: Cell) -> None:
    p2c = body.stash.get(BALANCER, None)
    if p2c is not None:
        await p2c.cell_started(cell)


@hookimpl
async def cbs_cell_stopping(body: Body, cell: Cell) -> None:
    p2c = body.stash.get(BALANCER, None)
    if p2c is not None:
        await p2c.cell_stopping(cell)


@hookimpl
async def cbs_body_started(body: Body) -> None:
    p2c = body.stash.get(BALANCER, None)
    if p2c is not None:
        await p2c.start()


@hookimpl
async def cbs_body_stopping(body: Body) -> None:
    p2c = body.stash.get(BALANCER, None)
    if p2c is not None:
        await p2c.stop()
    runner = body.stash.get(RUNNER, None)
    if runner is not None:
        await runner.stop()


@hookimpl
def cbs_add_commands(commands: CommandRegistry) -> None:
    from cbs.spec import commands as spec_commands

    commands.add(
        "spec",
        help="serve a body spec (body.yaml) and reconcile every change of the file;"
        " `cbs run SPEC` does the same",
        run=spec_commands.run_spec,
        configure=spec_commands.configure_spec,
    )
    commands.add(
        "apply",
        help="send a body spec to running bodies over $CBS.SPEC.<body-id>.apply",
        run=spec_commands.apply,
        configure=spec_commands.configure_apply,
    )
    commands.add(
        "diff",
        help="show what a body spec would change (on running bodies with --nats-url)",
        run=spec_commands.diff,
        configure=spec_commands.configure_apply,
    )
