"""Every hook CBS calls, in one module.

Hooks run at **wiring time** only: while a body is built, configured, started
and stopped, and when cells are added or removed at run time. Nothing here is
called per message; per-message behaviour is middleware, registered through
:func:`cbs_register_middleware` and composed once per endpoint.

Firing order for a body that serves cells (``cbs run``)::

    Body(...)                  cbs_addhooks (once, as plugins load)
                               cbs_add_options, cbs_add_commands,
                               cbs_register_transports, cbs_add_cell_fields,
                               cbs_add_endpoint_options, cbs_body_built
    first start or listing     cbs_configured          (once: settings checked)
                               cbs_register_cells, cbs_register_middleware
    body.start()               cbs_body_starting
                               -- transport connects, its capabilities are offered --
                               cbs_cell_started        (once per served cell)
                               cbs_body_started
    body.add_cell(c)           cbs_cell_started
    body.remove_cell(id)       cbs_cell_stopping -- drain -- cbs_cell_stopped
    body.replace_cell(c)       cbs_cell_started (new) ; cbs_cell_stopping (old)
                               -- old drains -- cbs_cell_stopped (old)
    body.stop()                cbs_body_stopping
                               -- subscriptions drain --
                               cbs_cell_stopped        (once per served cell)
                               -- transport closes --
                               cbs_body_stopped

Every hook is called through pluggy in pluggy's order: ``tryfirst``
implementations first, then the last registered plugin first, ``trylast``
last. No hook is ``firstresult`` and none is a wrapper: every implementation
runs and results are ignored unless a spec says otherwise. Notifications may
be ``async def``: pluggy calls every implementation (plain ones run at once),
then the body awaits the coroutines one at a time in that order. Registration
hooks must be plain functions.

If a start fails (a ``cbs_body_starting`` or ``cbs_body_started`` hook raises,
the transport cannot connect, a cell fails to start), what was started is torn
down: ``cbs_cell_stopped`` for each cell already served, then
``cbs_body_stopped``; ``cbs_body_stopping`` is not called. Exceptions in
``cbs_cell_stopping``, ``cbs_body_stopping``, ``cbs_cell_stopped`` and
``cbs_body_stopped`` are logged and the remaining implementations still run.

Plugins may add hook specs of their own with the first hook above (the
breaker announces state changes, jetstream dead letters) and call them
through ``body.plugin_manager.hook``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from cbs.contracts import Cell
    from cbs.kernel.body import Body
    from cbs.kernel.config import Config
    from cbs.kernel.registries import (
        CellFieldRegistry,
        CellRegistry,
        CommandRegistry,
        EndpointOptionRegistry,
        MiddlewareRegistry,
        OptionRegistry,
        TransportRegistry,
    )

hookspec = pluggy.HookspecMarker("cbs")

# --- registration ----------------------------------------------------------------


@hookspec(historic=True)
def cbs_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add hook specs of this plugin's own: ``pluginmanager.add_hookspecs(module)``.

    Called once per plugin manager while plugins load (historic: a plugin
    registered later is called too), before implementations are checked, so
    other plugins may implement the new hooks. Call them at wiring time or on
    rare events (a breaker opening), never per message:
    ``body.plugin_manager.hook.cbs_x(...)``. Returns nothing. Plain function only.
    """


@hookspec
def cbs_add_options(options: OptionRegistry) -> None:
    """Declare configuration options (each one also a CLI flag and an env var).

    Called once per body, while it is built, before the command line is parsed.
    ``options.add(name, help=..., default=..., env=..., flag=...)``; values are
    read back from ``body.config[name]``. Returns nothing. Plain function only.
    """


@hookspec
def cbs_add_commands(commands: CommandRegistry) -> None:
    """Add ``cbs`` subcommands.

    Called once per body, while it is built. ``commands.add(name, help=...,
    configure=..., run=...)``: ``configure(parser)`` adds arguments to an
    ``argparse`` subparser; ``run(body, args)`` returns an exit code or an
    awaitable of one. Either may be a ``"package.module:function"``
    reference, imported when the command is used. Returns nothing. Plain
    function only.
    """


@hookspec
def cbs_add_endpoint_options(options: EndpointOptionRegistry) -> None:
    """Declare per-endpoint options that cells set and this plugin reads.

    Called once per body, while it is built. ``options.add(OPTION)`` with a
    module-level ``OPTION = EndpointOption("durable", bool, False, help=...)``;
    a cell sets it with ``@cell.verb("write", schema=..., durable=True)`` and
    the plugin reads ``OPTION.of(endpoint)``. When a cell is added, an option
    of the wrong type is a ``PluginError``; one no plugin declares is ignored
    (logged at DEBUG: the plugin that reads it may not be installed).
    Returns nothing. Plain function only.
    """


@hookspec
def cbs_body_built(body: Body) -> None:
    """The body is built; its configuration is not final yet.

    Called once per body, at the end of ``Body(...)``, before the command
    line is parsed. Offer here the capabilities that depend on no option
    (``body.capabilities.provide(...)``): those a command looks for before
    the settings are final, such as a :class:`~cbs.kernel.SpecServer`.
    Returns nothing. Plain function only.
    """


@hookspec
def cbs_configured(config: Config, body: Body) -> None:
    """Check and digest the resolved options, in one place.

    Called once per body, when the configuration is final: at its first
    start or listing of cells (the CLI parses flags before that). Raise
    ``ConfigError`` with one line for a bad value; keep parsed settings in
    ``body.stash``. Returns nothing. Plain function only.
    """


@hookspec
def cbs_add_cell_fields(fields: CellFieldRegistry) -> None:
    """Add fields to the rows of ``cbs cells`` (a column of text, a key of
    ``--json``).

    Called once per body, while it is built. ``fields.add(name, provider,
    text=...)``: ``await provider(body, cells)`` gets the rows about to be
    printed (installed or discovered cells, as ``cbs cells --json`` shows
    them) and returns a mapping of cell id to a JSON value; rows of other
    cells get no such field. ``text(value)`` renders a value for the text
    listing (default: the value, compact JSON unless it is text). Called only
    by ``cbs cells``, never per message; a provider that raises is logged and
    skipped. Returns nothing. Plain function only.
    """


# --- bus -----------------------------------------------------------------------------


@hookspec
def cbs_register_transports(transports: TransportRegistry) -> None:
    """Offer transports (implementations of ``cbs.contracts.Bus``) by name.

    Called once per body, while it is built. ``transports.add(name, factory,
    priority=...)`` where ``factory(config)`` returns a ``Bus``. The body uses
    the transport named by the ``transport`` option, or else the registered
    one with the highest priority. Returns nothing. Plain function only.
    """


@hookspec
def cbs_register_middleware(middleware: MiddlewareRegistry, config: Config, body: Body) -> None:
    """Add client-side and server-side middleware factories.

    Called once per body, at its first start. ``middleware.add_client(name,
    factory, phase=..., order=...)`` where ``factory(target, next)`` returns a
    handler wrapping ``next`` for requests sent to ``target``;
    ``middleware.add_server(name, factory, phase=..., order=...)`` likewise
    for requests a served endpoint receives. The kernel composes each chain
    once per endpoint: by phase, outermost first (``outermost``, ``observe``,
    ``resilience``, ``attempt``, ``transport``; default ``observe``), then by
    ``order`` within the phase (lower wraps outside). ``config`` holds the
    resolved options; ``body`` is the body being wired (e.g. for
    ``body.stash`` or ``body.transport_name()``). Returns nothing. Plain
    function only.
    """


# --- cells ---------------------------------------------------------------------------


@hookspec
def cbs_register_cells(cells: CellRegistry, config: Config) -> None:
    """Offer cells this plugin provides.

    Called once per body, at its first start or listing of cells.
    ``cells.add(cell)``; the body serves all of them or those selected by id.
    Cells added later with ``body.add_cell`` do not go through this hook.
    ``config`` holds the resolved options. Returns nothing. Plain function only.
    """


@hookspec
def cbs_cell_started(body: Body, cell: Cell) -> None:
    """Notification: ``cell`` has started and its endpoints are served.

    Called once per served cell at each start, after the transport connected,
    and when a running body adds or replaces a cell (the new cell serves
    before the old one drains). May be ``async def``. Returns nothing.
    """


@hookspec
def cbs_cell_stopping(body: Body, cell: Cell) -> None:
    """Notification: ``cell`` is about to drain on a running body (removed or
    replaced); its endpoints still serve.

    Called once per removed or replaced cell, not at ``body.stop()`` (see
    ``cbs_body_stopping``). May be ``async def``. Returns nothing; exceptions
    are logged.
    """


@hookspec
def cbs_cell_stopped(body: Body, cell: Cell) -> None:
    """Notification: ``cell`` no longer receives requests and has stopped.

    Called once per served cell at each stop, before the transport closes,
    and when a running body has removed or replaced a cell. May be ``async
    def``. Returns nothing; exceptions are logged.
    """


# --- lifecycle -----------------------------------------------------------------------


@hookspec
def cbs_body_starting(body: Body) -> None:
    """Notification: ``body.start()`` began; the transport is not connected yet.

    Called once per start. May be ``async def``. Returns nothing. An exception
    aborts the start.
    """


@hookspec
def cbs_body_started(body: Body) -> None:
    """Notification: the transport is connected and every cell is served.

    Called once per start. May be ``async def``. Returns nothing. An exception
    aborts the start (what was started is stopped again).
    """


@hookspec
def cbs_body_stopping(body: Body) -> None:
    """Notification: ``body.stop()`` began; requests are still served.

    Called once per stop, before subscriptions drain. May be ``async def``.
    Returns nothing.
    """


@hookspec
def cbs_body_stopped(body: Body) -> None:
    """Notification: the body has stopped and its transport is closed.

    Called once per stop. May be ``async def``. Returns nothing. Exceptions are
    logged, not raised, so that every plugin gets to clean up.
    """
