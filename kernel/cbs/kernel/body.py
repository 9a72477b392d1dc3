"""The body: loads plugins, connects cells to the bus, runs flows, owns the lifecycle.

Cells come and go while a body runs: :meth:`Body.add_cell`,
:meth:`Body.remove_cell` (stop taking requests, finish those in flight, then
unsubscribe) and :meth:`Body.replace_cell` (the new version serves before the
old one drains, so no request finds nobody). Only the affected endpoints'
chains are composed again.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from cbs.contracts import (
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_PENDING_BYTES,
    Bus,
    Cell,
    Envelope,
    Subscription,
    Unavailable,
    codec,
)
from cbs.contracts.envelope import check_name
from cbs.kernel.capabilities import Capabilities, DurableSender
from cbs.kernel.cell import Cell as KernelCell
from cbs.kernel.config import Config, resolve
from cbs.kernel.errors import ConfigError
from cbs.kernel.hooks import call_registration, notify
from cbs.kernel.plugins import PluginInfo, Selection, load_plugins
from cbs.kernel.registries import (
    CellFieldRegistry,
    CellRegistry,
    CommandRegistry,
    EndpointOptionRegistry,
    MiddlewareRegistry,
    OptionRegistry,
    TransportRegistry,
)
from cbs.kernel.stash import Stash

if TYPE_CHECKING:
    import asyncio

    from cbs.kernel.middleware import ClientHandler

# asyncio and the middleware (the request path) are imported where a body
# starts, serves or drains: building one to list plugins or commands, as
# every `cbs` command does first, needs neither.

__all__ = ["Body", "ANY_SCHEMA"]

log = logging.getLogger("cbs.body")

#: Request schema used when the caller names none and no installed cell declares one.
ANY_SCHEMA = "cbs/v1/Any"


@attrs.define(eq=False)
class _Serving:
    """A cell this body serves, and its subscriptions."""

    cell: Cell
    subscriptions: list[Subscription] = attrs.Factory(list)


class Body:
    """Build with the plugins to use, ``start()`` to serve cells, ``request()``
    to run flows, ``stop()`` to drain and stop. Also an async context manager.

    ``plugins`` are registered in addition to the built-ins and the entry-point
    plugins chosen by ``selection`` (or by ``autoload`` and ``plugin_specs``,
    ``-p``-style names). ``environ`` is where ``CBS_*`` and other option
    variables are read (default ``os.environ``; ``{}`` ignores them).
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
        self.environ = environ
        self.selection = selection or Selection.from_specs(
            plugin_specs, autoload=autoload, environ=environ
        )
        self.plugin_manager: pluggy.PluginManager
        self.plugin_manager, self.plugins = load_plugins(self.selection, plugins)
        self.stash = Stash()
        #: Typed capabilities plugins offer each other (see ``cbs.kernel.capabilities``).
        self.capabilities = Capabilities()
        pm = self.plugin_manager
        self.options = OptionRegistry()
        call_registration(pm, "cbs_add_options", options=self.options)
        self.commands = CommandRegistry()
        call_registration(pm, "cbs_add_commands", commands=self.commands)
        self.transports = TransportRegistry()
        call_registration(pm, "cbs_register_transports", transports=self.transports)
        self.cell_fields = CellFieldRegistry()
        call_registration(pm, "cbs_add_cell_fields", fields=self.cell_fields)
        self.endpoint_options = EndpointOptionRegistry()
        call_registration(pm, "cbs_add_endpoint_options", options=self.endpoint_options)
        self.config: Config = resolve(self.options.as_dict(), config or {}, environ)
        self.bus: Bus | None = None
        self.state = "built"
        #: Why the body is not ready although started (see :meth:`not_ready`).
        self.readiness_holds: list[str] = []
        self._configured = False
        self._cells: CellRegistry | None = None
        self._middleware: MiddlewareRegistry | None = None
        self._serving: list[_Serving] = []
        self._stepping_out: set[asyncio.Future[None]] = set()
        self._chains: dict[tuple[str, str], tuple[ClientHandler, str]] = {}
        self._timeout = float(self.config.get("request_timeout") or 5.0)
        call_registration(pm, "cbs_body_built", body=self)

    def __repr__(self) -> str:
        return f"<Body {self.state} transport={self.bus.name if self.bus else None}>"

    # -- wiring ---------------------------------------------------------------------

    def configure(self, values: Mapping[str, Any]) -> None:
        """Re-resolve the configuration (the CLI does this after parsing flags).
        Only before the configuration is final (first start or listing)."""
        if self._configured:
            raise RuntimeError("configure() must come before cells are listed or served")
        self.config = resolve(self.options.as_dict(), values, self.environ)
        self._timeout = float(self.config.get("request_timeout") or 5.0)

    def _ensure_configured(self) -> None:
        if not self._configured:
            self._configured = True
            call_registration(self.plugin_manager, "cbs_configured", config=self.config, body=self)

    @property
    def cells(self) -> CellRegistry:
        """Every installed cell (collected once, on first use), plus those
        added at run time."""
        if self._cells is None:
            self._ensure_configured()
            cells = CellRegistry()
            call_registration(
                self.plugin_manager, "cbs_register_cells", cells=cells, config=self.config
            )
            for entry in cells:
                self._check_options(entry.item)
            self._cells = cells
        return self._cells

    def _check_options(self, cell: Cell) -> None:
        unknown = self.endpoint_options.check(cell)
        if unknown:  # e.g. idempotent=True without cbs-breaker: nothing reads it
            log.debug(
                "cell %s: endpoint option(s) %s declared by no loaded plugin: ignored",
                cell.id,
                ", ".join(unknown),
            )

    @property
    def middleware(self) -> MiddlewareRegistry:
        if self._middleware is None:
            self._ensure_configured()
            mw = MiddlewareRegistry()
            call_registration(
                self.plugin_manager,
                "cbs_register_middleware",
                middleware=mw,
                config=self.config,
                body=self,
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

    def transport_shared(self) -> bool:
        """Whether the configured transport would reach other processes
        (known before connecting; ``Bus.shared`` tells once started)."""
        transport = self.transports.get(self.transport_name())
        shared = None if transport is None else transport.item.shared
        return shared is not None and shared(self.config)

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
        await notify(self.plugin_manager, hook_name, swallow=swallow, **kwargs)

    async def start(self, *, serve: bool | Iterable[str] = True) -> None:
        """Connect the transport and serve cells: all installed ones (``True``),
        none (``False``, a body that only runs flows), or those ids."""
        if self.state not in ("built", "stopped"):
            raise RuntimeError(f"cannot start a body that is {self.state}")
        selected = self._select(serve)
        name = self.transport_name()
        transport = self.transports.get(name)
        assert transport is not None
        _ = self.middleware  # collected before connecting, so plugin errors come first
        self._chains.clear()
        self.state = "starting"
        try:
            await self._notify("cbs_body_starting", body=self)
            bus = transport.item.factory(self.config)
            await bus.start()
            self.bus = bus
            for capability in bus.capabilities():
                self.capabilities.provide(capability, plugin=transport.plugin)  # type: ignore[arg-type]
            for cell in selected:
                await self._serve_cell(cell)
            self.state = "started"
            await self._notify("cbs_body_started", body=self)
        except BaseException:
            await self._teardown()
            raise

    async def serve(self, cells: bool | Iterable[str] = True) -> None:
        """Serve more installed cells on a started body (``True``: every
        installed cell not served yet)."""
        self._require_started("serve()")
        serving = {s.cell.id for s in self._serving}
        for cell in self._select(cells):
            if cell.id not in serving:
                await self._serve_cell(cell)

    def _require_started(self, what: str) -> None:
        if self.state != "started":
            raise RuntimeError(f"{what} needs a started body (it is {self.state})")

    async def _serve_cell(self, cell: Cell) -> _Serving:
        """Start ``cell`` and subscribe its endpoints (each chain composed now)."""
        await cell.start()
        serving = _Serving(cell)
        self._serving.append(serving)
        await self._subscribe(serving)
        await self._notify("cbs_cell_started", body=self, cell=cell)
        return serving

    async def _subscribe(self, serving: _Serving) -> None:
        from cbs.kernel.middleware import Served, server_path

        assert self.bus is not None
        cell = serving.cell
        server_mw = self.middleware.server_factories()
        max_pending, max_pending_bytes = self._pending_limits(cell)
        for endpoint in cell.endpoints:
            served = Served(cell, endpoint)
            serving.subscriptions.append(
                await self.bus.serve(
                    served.subject,
                    served.queue_group,
                    server_path(served, server_mw),
                    max_concurrency=cell.max_concurrency,
                    max_pending=max_pending,
                    max_pending_bytes=max_pending_bytes,
                )
            )

    async def step_out(self, cell_id: str) -> bool:
        """Take a served cell out of its queue groups for a while: its
        subscriptions stop taking requests (those in flight and waiting
        finish in the background, up to ``drain_timeout``); it stays
        installed and started. False if it is not served or already out.
        Load balancers use it to route around a saturated instance."""
        import asyncio

        serving = self._serving_of(cell_id)
        if serving is None or not serving.subscriptions or self.state != "started":
            return False
        subscriptions, serving.subscriptions = serving.subscriptions, []
        task = asyncio.ensure_future(self._drain(subscriptions, self._drain_timeout()))
        self._stepping_out.add(task)
        task.add_done_callback(self._stepping_out.discard)
        return True

    async def step_in(self, cell_id: str) -> bool:
        """Subscribe a cell that stepped out again (its chains composed
        anew). False if it is not served or not out."""
        serving = self._serving_of(cell_id)
        if serving is None or serving.subscriptions or self.state != "started":
            return False
        await self._subscribe(serving)
        return True

    def _pending_limits(self, cell: Cell) -> tuple[int, int]:
        """How many requests (and bytes) of each verb of ``cell`` may wait for
        a handler: the cell's own limits (``cbs.kernel.Cell``), else the
        ``max_pending`` and ``max_pending_bytes`` options."""
        count = int(self.config.get("max_pending", DEFAULT_MAX_PENDING))
        size = int(self.config.get("max_pending_bytes", DEFAULT_MAX_PENDING_BYTES))
        if isinstance(cell, KernelCell):
            count = count if cell.max_pending is None else cell.max_pending
            size = size if cell.max_pending_bytes is None else cell.max_pending_bytes
        return count, size

    async def _retire(self, serving: _Serving, *, drain: bool) -> None:
        """Stop a served cell of a running body: no new requests, those in
        flight finish (up to ``drain_timeout``; without ``drain``, those not
        done at once are answered ``Unavailable`` and cancelled), then the
        cell stops."""
        await self._notify("cbs_cell_stopping", body=self, cell=serving.cell, swallow=True)
        self._serving.remove(serving)
        await self._drain(serving.subscriptions, self._drain_timeout() if drain else 0.0)
        await self._stop_cell(serving.cell)

    def _drain_timeout(self) -> float:
        return float(self.config.get("drain_timeout") or 10.0)

    async def _drain(self, subscriptions: list[Subscription], timeout: float) -> None:
        """Stop subscriptions, waiting up to ``timeout`` for their in-flight
        handlers; past it their ``stop()`` is cancelled: the transport answers
        what still runs or waits with ``Unavailable`` and cancels it."""
        import asyncio

        if not subscriptions:
            return
        stopping = asyncio.gather(*(s.stop() for s in subscriptions), return_exceptions=True)
        try:
            await asyncio.wait_for(stopping, max(timeout, 0.05))
        except TimeoutError:
            if timeout:
                log.warning(
                    "drain: handlers still running after %g s; answered Unavailable", timeout
                )

    async def _stop_cell(self, cell: Cell) -> None:
        try:
            await cell.stop()
        except Exception:
            log.exception("cell %s failed to stop", cell.id)
        await self._notify("cbs_cell_stopped", body=self, cell=cell, swallow=True)

    def _forget_chains(self, service: str) -> None:
        for key in [k for k in self._chains if k[0] == service]:
            del self._chains[key]

    def _serving_of(self, cell_id: str) -> _Serving | None:
        return next((s for s in reversed(self._serving) if s.cell.id == cell_id), None)

    async def add_cell(self, cell: Cell) -> None:
        """Install ``cell`` and, on a started body, serve it now. Its id and
        subjects must be new (``PluginError`` otherwise; see :meth:`replace_cell`)."""
        self.cells.add(cell)
        self._check_options(cell)
        self._forget_chains(cell.service)
        if self.state == "started":
            try:
                await self._serve_cell(cell)
            except BaseException:
                self.cells.remove(cell.id)
                raise

    async def remove_cell(self, cell_id: str, *, drain: bool = True) -> Cell:
        """Stop serving the cell and uninstall it: it takes no new request,
        those in flight finish (``drain``; else they are answered
        ``Unavailable`` and cancelled), then it is unsubscribed and
        stopped. ``KeyError`` for an unknown id. Returns the cell."""
        if cell_id not in self.cells:
            raise KeyError(cell_id)
        cell = self.cells.remove(cell_id)
        self._forget_chains(cell.service)
        serving = self._serving_of(cell_id)
        if serving is not None:
            await self._retire(serving, drain=drain)
        return cell

    async def replace_cell(self, cell: Cell, *, drain: bool = True) -> Cell:
        """Put ``cell`` in the place of the installed cell with its id (a new
        version): on a started body the new cell serves first, then the old
        one drains, so every request finds one of them. Returns the old cell."""
        old_serving = self._serving_of(cell.id)
        old = self.cells.replace(cell)
        self._check_options(cell)
        self._forget_chains(old.service)
        self._forget_chains(cell.service)
        if self.state == "started" and old_serving is not None:
            try:
                await self._serve_cell(cell)
            except BaseException:
                self.cells.replace(old)
                raise
            await self._retire(old_serving, drain=drain)
        return old

    @property
    def served_cells(self) -> list[Cell]:
        return [s.cell for s in self._serving]

    async def stop(self) -> None:
        """Drain and stop: subscriptions stop taking requests, in-flight ones
        finish (up to the ``drain_timeout`` option), cells stop, the bus closes."""
        if self.state != "started":
            return
        self.state = "stopping"
        await self._notify("cbs_body_stopping", body=self, swallow=True)
        await self._teardown()

    async def _teardown(self) -> None:
        import asyncio

        if self._stepping_out:
            await asyncio.gather(*self._stepping_out, return_exceptions=True)
        serving, self._serving = self._serving, []
        await self._drain(
            [s for entry in serving for s in entry.subscriptions], self._drain_timeout()
        )
        for entry in reversed(serving):
            await self._stop_cell(entry.cell)
        if self.bus is not None:
            for capability in self.bus.capabilities():
                self.capabilities.withdraw(capability)  # type: ignore[arg-type]
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

    @contextlib.contextmanager
    def not_ready(self, reason: str) -> Iterator[None]:
        """While the block runs, the body is not ready even once started: a
        readiness probe (cbs-metrics' ``/readyz``) answers 503 with ``reason``
        in :attr:`readiness_holds`. For a start that goes on after
        :meth:`start` (cbs-spec adds the spec's cells to a started body)."""
        self.readiness_holds.append(reason)
        try:
            yield
        finally:
            self.readiness_holds.remove(reason)

    async def run_until_signal(
        self,
        on_ready: Callable[[], None] | None = None,
        *,
        starting: Awaitable[object] | None = None,
    ) -> None:
        """Wait for SIGINT or SIGTERM, then :meth:`stop` (drain first).
        ``starting`` (the start, say) is awaited with the signal handlers
        already in place, so a signal during it drains once it is done
        rather than killing the process; ``on_ready`` runs after it, unless a
        signal came meanwhile."""
        import asyncio

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        sigs = (signal.SIGINT, signal.SIGTERM)
        for sig in sigs:
            loop.add_signal_handler(sig, stop.set)
        try:
            if starting is not None:
                await starting
            if on_ready is not None and not stop.is_set():
                on_ready()
            await stop.wait()
            log.info("signal received: draining")
        finally:
            for sig in sigs:
                loop.remove_signal_handler(sig)
        await self.stop()

    # -- flows --------------------------------------------------------------------------

    def _chain(self, service: str, verb: str) -> tuple[ClientHandler, str]:
        from cbs.kernel.middleware import Target, client_chain

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
        sender = self.capabilities.get(DurableSender)
        if sender is None or self.bus is None:
            raise Unavailable("No durable transport: install cbs-jetstream and use NATS")
        _, request = self._new_request(service, verb, payload, schema, id)
        await sender.send(request, dict(headers) if headers else {})
        return request.id

    async def send_many(
        self,
        service: str,
        verb: str,
        payloads: Iterable[Mapping[str, Any]],
        *,
        schema: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[str]:
        """:meth:`send` for many payloads at once: all are published before
        their acknowledgements are awaited (with cbs-jetstream). Returns the
        envelope ids, in order, once every request is stored; on an error some
        may be stored already: send again with the same ids to retry safely."""
        sender = self.capabilities.get(DurableSender)
        if sender is None or self.bus is None:
            raise Unavailable("No durable transport: install cbs-jetstream and use NATS")
        requests = [self._new_request(service, verb, p, schema)[1] for p in payloads]
        await sender.send_many(requests, dict(headers) if headers else {})
        return [request.id for request in requests]

    def plugin_info(self) -> list[PluginInfo]:
        return list(self.plugins.values())
