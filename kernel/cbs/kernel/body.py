"""The body: loads plugins, connects cells to the bus, runs flows, owns the lifecycle."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import pluggy

from cbs.contracts import Bus, Cell, Envelope, Subscription, Unavailable, codec
from cbs.contracts.envelope import check_name
from cbs.kernel.config import Config, resolve
from cbs.kernel.errors import ConfigError, PluginError
from cbs.kernel.middleware import (
    ClientHandler,
    Served,
    Target,
    client_chain,
    server_endpoint,
)
from cbs.kernel.plugins import PluginInfo, Selection, load_plugins
from cbs.kernel.registries import (
    CellFieldRegistry,
    CellRegistry,
    CommandRegistry,
    MiddlewareRegistry,
    OptionRegistry,
    TransportRegistry,
)
from cbs.kernel.stash import Stash, StashKey

__all__ = ["Body", "ANY_SCHEMA", "DURABLE_SENDER", "DurableSender"]

log = logging.getLogger("cbs.body")

#: Request schema used when the caller names none and no installed cell declares one.
ANY_SCHEMA = "cbs/v1/Any"

#: Stores an envelope durably, returning once it is stored (at least once).
DurableSender = Callable[[Envelope, dict[str, str]], Awaitable[None]]
#: Where a persistence plugin (e.g. cbs-jetstream) puts its sender, in ``body.stash``.
DURABLE_SENDER: StashKey[DurableSender] = StashKey()


class Body:
    """Build with the plugins to use, ``start()`` to serve cells, ``request()``
    to run flows, ``stop()`` to drain and stop. Also an async context manager.

    ``plugins`` are registered in addition to the built-ins and the entry-point
    plugins chosen by ``selection`` (or by ``autoload`` and ``plugin_specs``,
    ``-p``-style names). ``environ`` is where ``CBS_*`` and other option
    variables are read (``None``: ``os.environ``; ``{}``: nowhere).
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        plugins: Sequence[Any] = (),
        autoload: bool | None = None,
        plugin_specs: Iterable[str] = (),
        selection: Selection | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._environ = environ  # None: os.environ
        self.selection = selection or Selection.from_specs(
            plugin_specs, autoload=autoload, environ=environ
        )
        self.plugin_manager: pluggy.PluginManager
        self.plugin_manager, self.plugins = load_plugins(self.selection, plugins)
        self.stash = Stash()
        self.options = OptionRegistry()
        self._each_plugin("cbs_add_options", self.options, options=self.options)
        self.commands = CommandRegistry()
        self._each_plugin("cbs_add_commands", self.commands, commands=self.commands)
        self.transports = TransportRegistry()
        self._each_plugin("cbs_register_transports", self.transports, transports=self.transports)
        self.cell_fields = CellFieldRegistry()
        self._each_plugin("cbs_add_cell_fields", self.cell_fields, fields=self.cell_fields)
        self.config: Config = resolve(self.options.as_dict(), config or {}, environ)
        self.bus: Bus | None = None
        self.state = "built"
        self._cells: CellRegistry | None = None
        self._middleware: MiddlewareRegistry | None = None
        self._served: list[tuple[Cell, list[Subscription]]] = []
        self._chains: dict[tuple[str, str], tuple[ClientHandler, str]] = {}
        self._timeout = float(self.config.get("request_timeout") or 5.0)

    def __repr__(self) -> str:
        return f"<Body {self.state} transport={self.bus.name if self.bus else None}>"

    # -- wiring ---------------------------------------------------------------------

    def _each_plugin(self, hook_name: str, registry: Any, **kwargs: Any) -> None:
        """Call a registration hook plugin by plugin, so the registry records who
        registered what, and a failure names its plugin."""
        pm = self.plugin_manager
        hook = getattr(pm.hook, hook_name)
        everyone = pm.get_plugins()
        for impl in hook.get_hookimpls():  # registration order: built-ins first
            registry.plugin = impl.plugin_name
            others = [p for p in everyone if p is not impl.plugin]
            try:
                pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)
            except (PluginError, ConfigError):
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                raise PluginError(
                    f"plugin '{impl.plugin_name}' failed in {hook_name}: {reason}"
                ) from exc
        registry.plugin = ""

    def configure(self, values: Mapping[str, Any]) -> None:
        """Re-resolve the configuration (the CLI does this after parsing flags).
        Only before the cells and middleware are collected."""
        if self._cells is not None or self._middleware is not None:
            raise RuntimeError("configure() must come before cells are listed or served")
        self.config = resolve(self.options.as_dict(), values, self._environ)
        self._timeout = float(self.config.get("request_timeout") or 5.0)

    @property
    def cells(self) -> CellRegistry:
        """Every installed cell (collected once, on first use)."""
        if self._cells is None:
            cells = CellRegistry()
            self._each_plugin("cbs_register_cells", cells, cells=cells, config=self.config)
            self._cells = cells
        return self._cells

    @property
    def middleware(self) -> MiddlewareRegistry:
        if self._middleware is None:
            mw = MiddlewareRegistry()
            self._each_plugin(
                "cbs_register_middleware", mw, middleware=mw, config=self.config, body=self
            )
            self._middleware = mw
        return self._middleware

    def transport_name(self) -> str:
        name: str | None = self.config.get("transport") or self.transports.default()
        if name is None:
            raise ConfigError("no transport is installed (is the 'local' plugin blocked?)")
        if name not in self.transports:
            known = ", ".join(self.transports.names())
            raise ConfigError(f"unknown transport '{name}' (installed: {known})")
        return name

    def _select(self, serve: bool | Iterable[str]) -> list[Cell]:
        if serve is True:
            return [r.item for r in self.cells]
        if serve is False:
            return []
        chosen = []
        for cell_id in serve:
            if cell_id not in self.cells:
                known = ", ".join(self.cells.names()) or "none"
                raise ConfigError(f"unknown cell '{cell_id}' (installed: {known})")
            chosen.append(self.cells.cell(cell_id))
        return chosen

    # -- lifecycle --------------------------------------------------------------------

    async def _notify(self, hook_name: str, *, swallow: bool = False, **kwargs: Any) -> None:
        """Run a lifecycle hook one implementation at a time, in pluggy's order
        (last registered first), awaiting ``async def`` ones before the next.
        With ``swallow``, a failure is logged and the others still run."""
        pm = self.plugin_manager
        everyone = pm.get_plugins()
        for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
            others = [p for p in everyone if p is not impl.plugin]
            try:
                for result in pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs):
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                if not swallow:
                    raise
                log.exception("plugin %s failed in %s", impl.plugin_name, hook_name)

    async def start(self, *, serve: bool | Iterable[str] = True) -> None:
        """Connect the transport and serve cells: all installed ones (``True``),
        none (``False``, a body that only runs flows), or those ids."""
        if self.state not in ("built", "stopped"):
            raise RuntimeError(f"cannot start a body that is {self.state}")
        selected = self._select(serve)
        factory = self.transports.get(self.transport_name())
        assert factory is not None
        _ = self.middleware  # collected before connecting, so plugin errors come first
        self._chains.clear()
        self.state = "starting"
        try:
            await self._notify("cbs_body_starting", body=self)
            bus = factory.item.factory(self.config)
            await bus.start()
            self.bus = bus
            await self._serve(selected)
            self.state = "started"
            await self._notify("cbs_body_started", body=self)
        except BaseException:
            await self._teardown()
            raise

    async def serve(self, cells: bool | Iterable[str] = True) -> None:
        """Serve more cells on a started body (``True``: every installed cell
        not served yet)."""
        if self.state != "started":
            raise RuntimeError("serve() needs a started body")
        serving = {cell.id for cell, _ in self._served}
        await self._serve([c for c in self._select(cells) if c.id not in serving])

    async def _serve(self, cells: list[Cell]) -> None:
        assert self.bus is not None
        server_mw = self.middleware.server_factories()
        for cell in cells:
            await cell.start()
            subs: list[Subscription] = []
            self._served.append((cell, subs))
            for endpoint in cell.endpoints:
                served = Served(cell, endpoint)
                handler = server_endpoint(served, server_mw)
                subs.append(
                    await self.bus.serve(
                        served.subject,
                        served.queue_group,
                        handler,
                        max_concurrency=cell.max_concurrency,
                    )
                )
            await self._notify("cbs_cell_started", body=self, cell=cell)

    @property
    def served_cells(self) -> list[Cell]:
        return [cell for cell, _ in self._served]

    async def stop(self) -> None:
        """Drain and stop: subscriptions stop taking requests, in-flight ones
        finish (up to the ``drain_timeout`` option), cells stop, the bus closes."""
        if self.state != "started":
            return
        self.state = "stopping"
        await self._notify("cbs_body_stopping", body=self, swallow=True)
        await self._teardown()

    async def _teardown(self) -> None:
        drain = float(self.config.get("drain_timeout") or 10.0)
        subs = [s for _, cell_subs in self._served for s in cell_subs]
        try:
            await asyncio.wait_for(asyncio.gather(*(s.stop() for s in subs)), drain)
        except TimeoutError:
            log.warning("drain: handlers still running after %g s; stopping anyway", drain)
        for cell, _ in reversed(self._served):
            try:
                await cell.stop()
            except Exception:
                log.exception("cell %s failed to stop", cell.id)
            await self._notify("cbs_cell_stopped", body=self, cell=cell, swallow=True)
        self._served.clear()
        if self.bus is not None:
            try:
                await self.bus.close()
            except Exception:
                log.exception("transport %s failed to close", self.bus.name)
            self.bus = None
        self.state = "stopped"
        await self._notify("cbs_body_stopped", body=self, swallow=True)

    async def __aenter__(self) -> Body:
        if self.state != "started":
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def run_until_signal(self, on_ready: Callable[[], None] | None = None) -> None:
        """Wait for SIGINT or SIGTERM, then :meth:`stop` (drain first).
        ``on_ready`` runs once the signal handlers are in place."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        sigs = (signal.SIGINT, signal.SIGTERM)
        for sig in sigs:
            loop.add_signal_handler(sig, stop.set)
        try:
            if on_ready is not None:
                on_ready()
            await stop.wait()
            log.info("signal received: draining")
        finally:
            for sig in sigs:
                loop.remove_signal_handler(sig)
        await self.stop()

    # -- flows --------------------------------------------------------------------------

    def _chain(self, service: str, verb: str) -> tuple[ClientHandler, str]:
        check_name("service", service)
        check_name("verb", verb)
        cell = self.cells.find_endpoint(service, verb)
        endpoint = next((e for e in cell.endpoints if e.verb == verb), None) if cell else None
        assert self.bus is not None
        chain = client_chain(
            self.bus, Target(service, verb, endpoint), self.middleware.client_factories()
        )
        entry = (chain, endpoint.schema if endpoint else ANY_SCHEMA)
        self._chains[(service, verb)] = entry
        return entry

    def _new_request(
        self,
        service: str,
        verb: str,
        payload: Mapping[str, Any],
        schema: str | None,
        id: str | None = None,
    ) -> tuple[ClientHandler, Envelope]:
        """The target's client chain, and a request envelope for it (with the
        schema an installed cell declares, unless one is given)."""
        chain, default_schema = self._chains.get((service, verb)) or self._chain(service, verb)
        request = Envelope.request(service, verb, payload, schema=schema or default_schema, id=id)
        return chain, request

    async def request(
        self,
        service: str,
        verb: str,
        payload: Mapping[str, Any],
        *,
        schema: str | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send a request to ``cbs.{service}.{verb}`` and return the reply payload.

        ``schema`` defaults to the one an installed cell declares for that verb.
        Raises the ``CbsError`` of an error reply, ``Timeout`` after ``timeout``
        seconds (default: the ``request_timeout`` option) and ``NotFound`` when
        nobody serves the subject.
        """
        if self.bus is None:
            raise Unavailable("Body is not started")
        chain, request = self._new_request(service, verb, payload, schema)
        reply = await chain(
            request, dict(headers) if headers else {}, self._timeout if timeout is None else timeout
        )
        assert reply.payload is not None
        return reply.payload

    async def publish(
        self,
        service: str,
        verb: str,
        payload: Mapping[str, Any],
        *,
        schema: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a request nobody answers back (fire and forget). Client
        middleware does not run: it is made for request/reply."""
        if self.bus is None:
            raise Unavailable("Body is not started")
        _, request = self._new_request(service, verb, payload, schema)
        await self.bus.publish(request.subject, codec.encode(request), headers=headers)

    async def send(
        self,
        service: str,
        verb: str,
        payload: Mapping[str, Any],
        *,
        schema: str | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
    ) -> str:
        """Store a request durably for ``cbs.{service}.{verb}`` and return its
        envelope id once stored; the cell gets it at least once, even if it is
        down now. Needs a persistence plugin (``pip install cbs-jetstream``).
        Sending again with the same ``id`` is how a caller retries safely."""
        sender = self.stash.get(DURABLE_SENDER, None)
        if sender is None or self.bus is None:
            raise Unavailable("No durable transport: install cbs-jetstream and use NATS")
        _, request = self._new_request(service, verb, payload, schema, id)
        await sender(request, dict(headers) if headers else {})
        return request.id

    def plugin_info(self) -> list[PluginInfo]:
        return list(self.plugins.values())
