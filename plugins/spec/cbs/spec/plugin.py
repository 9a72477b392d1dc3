"""Entry point ``spec``: the commands ``spec``, ``apply`` and ``diff``, the
``SpecServer`` that ``cbs run SPEC`` hands a spec to, and the measuring middleware the autoscaler
reads. Only hook implementations live here."""

from __future__ import annotations

from cbs.kernel import Body, CommandRegistry, Config, MiddlewareRegistry, StashKey, hookimpl
from cbs.spec.signals import PLACEMENT, Stats

#: Per-service in-flight and latency of this body.
STATS: StashKey[Stats] = StashKey()


@hookimpl
def cbs_body_built(body: Body) -> None:
    from cbs.spec.commands import FileSpecServer

    body.capabilities.provide(FileSpecServer(), plugin="spec")  # for `cbs run SPEC`


@hookimpl
def cbs_register_middleware(middleware: MiddlewareRegistry, config: Config, body: Body) -> None:
    from cbs.spec.runner import RUNNER

    if RUNNER not in body.stash:
        return  # a body that serves no spec: nothing reads the stats
    stats = body.stash.setdefault(STATS, Stats())
    phase, order = PLACEMENT
    middleware.add_server("spec_stats", stats.middleware, phase=phase, order=order)


@hookimpl
async def cbs_body_stopping(body: Body) -> None:
    from cbs.spec.runner import RUNNER

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
