"""A small plugin that implements every CBS hook.

docs/writing-plugins.md quotes the sections marked ``# --- docs: <hook> ---``;
tests/test_example_plugin.py runs this module in a real body and
tests/test_docs.py checks that the quotes match this file.

Published on its own, it would be the module ``cbs_example`` of a distribution
``cbs-example``, with ``example = cbs_example`` in the entry-point group ``cbs``.
"""

from __future__ import annotations

import argparse
import collections
import logging
from collections.abc import Mapping
from typing import Any

import pluggy

from cbs import contracts
from cbs.contracts import BadRequest, Envelope
from cbs.kernel import (
    Body,
    Capability,
    Cell,
    CellFieldRegistry,
    CellRegistry,
    ClientHandler,
    ClientMiddleware,
    CommandRegistry,
    Config,
    ConfigError,
    EndpointOption,
    EndpointOptionRegistry,
    MiddlewareRegistry,
    OptionRegistry,
    Served,
    ServerHandler,
    ServerMiddleware,
    StashKey,
    Target,
    TransportRegistry,
    current_request,
    hookimpl,
)
from cbs.kernel.local_bus import LocalBus

log = logging.getLogger("cbs.example")


# --- docs: cbs_addhooks ---
class ExampleSpecs:
    """Hook specs of this plugin's own (a module works as well as a class)."""

    @pluggy.HookspecMarker("cbs")
    def cbs_example_echoed(self, body: Body, text: str) -> None:
        """Notification: the example cell echoed ``text``. Plain function only."""


@hookimpl
def cbs_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    # Other plugins may now implement cbs_example_echoed; call it on rare events only.
    pluginmanager.add_hookspecs(ExampleSpecs)


# --- end ---


# --- docs: cbs_add_endpoint_options ---
#: Set by cells per verb (@cell.verb(..., audited=True)); read with AUDITED.of(endpoint).
AUDITED = EndpointOption(
    "audited",
    bool,
    False,
    help="log every request of this verb",
    # What discovery ($SRV.INFO, cbs cells --json) advertises for a verb that sets it.
    metadata=lambda on: {"example.audited": "true" if on else "false"},
)


@hookimpl
def cbs_add_endpoint_options(options: EndpointOptionRegistry) -> None:
    options.add(AUDITED)


# --- end ---


# --- docs: cbs_body_built ---
class ExampleGreeting(Capability):
    """What this plugin offers others: body.capabilities.get(ExampleGreeting)."""

    provided_by = "the example plugin"

    def greeting(self) -> str:
        return "hello"


@hookimpl
def cbs_body_built(body: Body) -> None:
    # No option is read here: the configuration is not final yet.
    body.capabilities.provide(ExampleGreeting(), plugin="example")


# --- end ---


# --- docs: cbs_configured ---
@hookimpl
def cbs_configured(config: Config, body: Body) -> None:
    # Settings are final now: check them once, with one line for the user.
    if not config["example_tag"].isprintable() or not config["example_tag"]:
        raise ConfigError("--example-tag must be printable text")


# --- end ---


# --- docs: cbs_add_options ---
@hookimpl
def cbs_add_options(options: OptionRegistry) -> None:
    # Read back as body.config["example_tag"]; also --example-tag and $CBS_EXAMPLE_TAG.
    options.add(
        "example_tag",
        help="value of the x-example-tag header on every request (default: example)",
        default="example",
        env="CBS_EXAMPLE_TAG",
        metavar="TEXT",
    )


# --- end ---


# --- docs: cbs_add_commands ---
def _configure_echo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the text to send")


async def _run_echo(body: Body, args: argparse.Namespace) -> int:
    await body.start(serve=["example_echo"])
    try:
        reply = await body.request("example", "echo", {"text": args.text})
    finally:
        await body.stop()
    print(reply["text"])
    return 0


@hookimpl
def cbs_add_commands(commands: CommandRegistry) -> None:
    # `cbs example-echo hello` starts a body, sends one request and prints the reply.
    commands.add(
        "example-echo",
        help="send TEXT to the example cell and print the reply",
        run=_run_echo,
        configure=_configure_echo,
    )


# --- end ---


# --- docs: cbs_add_cell_fields ---
async def _tag_field(body: Body, cells: list[dict[str, Any]]) -> dict[str, Any]:
    # Runs in `cbs cells` only, once for all rows: a value per cell id.
    return {c["id"]: body.config["example_tag"] for c in cells if c["service"] == "example"}


@hookimpl
def cbs_add_cell_fields(fields: CellFieldRegistry) -> None:
    # `cbs cells` ends the rows of this plugin's cells with "example_tag=example";
    # `cbs cells --json` adds "example_tag": "example" to them.
    fields.add("example_tag", _tag_field)


# --- end ---


# --- docs: cbs_register_transports ---
class ExampleBus(LocalBus):
    """The in-process bus under another name; a real transport implements
    cbs.contracts.Bus: start, request, publish, serve, close."""

    name = "example_local"


def _make_example_bus(config: Config) -> ExampleBus:
    # Called at body.start(), only when this transport is chosen: import a heavy
    # client library (nats, ...) here, not at the top of the module.
    return ExampleBus()


@hookimpl
def cbs_register_transports(transports: TransportRegistry) -> None:
    # Priority -1: never the default over "local" (0); pick it with
    # transport = "example_local" (--transport, $CBS_TRANSPORT).
    transports.add("example_local", _make_example_bus, priority=-1)


# --- end ---


# --- docs: cbs_register_cells ---
def make_echo_cell() -> Cell:
    cell = Cell(
        "example_echo",
        service="example",
        category="logic",
        version="1.0.0",
        purpose="Echoes text back",
        max_concurrency=10,
    )

    @cell.verb("echo", schema="example/v1/Text", reply_schema="example/v1/Text", audited=True)
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        text = payload.get("text")
        if not isinstance(text, str):
            raise BadRequest("Field 'text' must be a string", details={"field": "text"})
        tag = current_request().headers.get("x-example-tag")
        return {"text": text, "tag": tag}

    @cell.verb("shout", schema="example/v1/Text", reply_schema="example/v1/Text")
    def shout(payload: dict[str, Any]) -> dict[str, Any]:
        # A plain function runs in a worker thread: it may block.
        return {"text": str(payload.get("text", "")).upper()}

    return cell


@hookimpl
def cbs_register_cells(cells: CellRegistry, config: Config) -> None:
    cells.add(make_echo_cell())


# --- end ---


# --- docs: cbs_register_middleware ---
#: Requests received per served subject, kept per body in its stash.
REQUESTS: StashKey[collections.Counter[str]] = StashKey()


def _tag_factory(tag: str) -> ClientMiddleware:
    def tag_requests(target: Target, call_next: ClientHandler) -> ClientHandler:
        # Runs once per target; the inner function runs once per request.
        async def handler(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
            headers["x-example-tag"] = tag
            return await call_next(request, headers, timeout)

        return handler

    return tag_requests


def _count_factory(counts: collections.Counter[str]) -> ServerMiddleware:
    def count_requests(served: Served, call_next: ServerHandler) -> ServerHandler:
        subject = served.subject  # computed once per endpoint, not per request
        audited = AUDITED.of(served.endpoint)  # an endpoint option, read once too

        async def handler(request: Envelope, headers: Mapping[str, str]) -> Envelope:
            counts[subject] += 1
            if audited:
                log.info("example: %s envelope %s", subject, request.id)
            return await call_next(request, headers)

        return handler

    return count_requests


@hookimpl
def cbs_register_middleware(middleware: MiddlewareRegistry, config: Config, body: Body) -> None:
    counts = body.stash.setdefault(REQUESTS, collections.Counter())
    middleware.add_client("example_tag", _tag_factory(config["example_tag"]), phase="outermost")
    middleware.add_server("example_count", _count_factory(counts), phase="observe", order=-10)


# --- end ---


# --- docs: cbs_body_starting ---
#: What this plugin saw, kept per body in its stash.
EVENTS: StashKey[list[str]] = StashKey()


def _record(body: Body, event: str) -> None:
    body.stash.setdefault(EVENTS, []).append(event)


@hookimpl
def cbs_body_starting(body: Body) -> None:
    # The transport is not connected yet (body.bus is None); raising aborts the start.
    _record(body, "body_starting")


# --- end ---


# --- docs: cbs_cell_started ---
@hookimpl
def cbs_cell_started(body: Body, cell: contracts.Cell) -> None:
    # Once per served cell, from every plugin's cells, not only this plugin's.
    _record(body, f"cell_started {cell.id}")


# --- end ---


# --- docs: cbs_body_started ---
@hookimpl
async def cbs_body_started(body: Body) -> None:
    # Async hooks are awaited in turn. Every cell is served: requests work now.
    if any(cell.id == "example_echo" for cell in body.served_cells):
        reply = await body.request("example", "echo", {"text": "self-check"})
        log.debug("example: self-check replied %s", reply)
    _record(body, "body_started")


# --- end ---


# --- docs: cbs_body_stopping ---
@hookimpl
def cbs_body_stopping(body: Body) -> None:
    # Requests are still served; subscriptions drain after every plugin returns.
    _record(body, "body_stopping")


# --- end ---


# --- docs: cbs_cell_stopping ---
@hookimpl
def cbs_cell_stopping(body: Body, cell: contracts.Cell) -> None:
    # A running body removes or replaces the cell; it still serves while this runs.
    _record(body, f"cell_stopping {cell.id}")


# --- end ---


# --- docs: cbs_cell_stopped ---
@hookimpl
def cbs_cell_stopped(body: Body, cell: contracts.Cell) -> None:
    # The cell gets no more requests and its stop() has returned.
    _record(body, f"cell_stopped {cell.id}")


# --- end ---


# --- docs: cbs_body_stopped ---
@hookimpl
def cbs_body_stopped(body: Body) -> None:
    # The transport is closed. Exceptions here are logged, not raised.
    _record(body, "body_stopped")


# --- end ---
