"""Testing kit for CBS plugin and cell authors: an opt-in pytest plugin.

Enable it in a ``conftest.py``::

    pytest_plugins = ["cbs.testing"]

Fixtures:

* ``make_body(*plugins, config=None, autoload=False)``: a body with exactly the
  given plugins (plus the built-ins); bodies started through it are stopped at
  teardown.
* ``hook_recorder``: ``hook_recorder(body)`` starts recording every pluggy hook
  call on that body from then on (hooks that ran while the body was built are
  not seen; record those with a plugin of your own); ``.calls`` lists names.
* ``nats_server``: a real ``nats-server`` (JetStream on) on a free 127.0.0.1
  port, stopped by pid at teardown; ``.url``, ``.pid``, ``.kill()``,
  ``.start()`` (restart on the same port and store). Needs ``cbs-nats``.

Helpers usable without pytest:

* :class:`CellsPlugin`: a plugin registering the cells you give it, for
  ``make_body(CellsPlugin(cell_a, cell_b))``.
* :func:`call_cell`: one request to one cell, through the same server path as
  a bus delivery (codec, schema check, error replies), without any bus.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
import pytest_asyncio

from cbs.contracts import CbsError, Cell, Envelope, codec
from cbs.kernel.body import Body
from cbs.kernel.config import Config
from cbs.kernel.middleware import Served, ServerMiddleware
from cbs.kernel.plugins import hookimpl
from cbs.kernel.registries import CellRegistry
from cbs.kernel.transport import endpoint_handler

__all__ = [
    "call_cell",
    "call_cell_envelope",
    "HookRecorder",
    "make_body",
    "hook_recorder",
    "nats_server",
    "CellsPlugin",
]


async def call_cell_envelope(
    cell: Cell,
    verb: str,
    payload: Mapping[str, Any],
    *,
    schema: str | None = None,
    headers: Mapping[str, str] | None = None,
    middleware: Sequence[ServerMiddleware] = (),
) -> Envelope:
    """Send one request to ``cell`` without a bus and return the reply envelope
    (an error reply too)."""
    endpoint = next((e for e in cell.endpoints if e.verb == verb), None)
    if endpoint is None:
        raise KeyError(f"cell {cell.id} has no verb {verb!r}")
    handle = endpoint_handler(Served(cell, endpoint), middleware)
    request = Envelope.request(cell.service, verb, payload, schema=schema or endpoint.schema)
    outcome = await handle(codec.encode(request), headers)
    return codec.decode(outcome.data)


async def call_cell(
    cell: Cell,
    verb: str,
    payload: Mapping[str, Any],
    *,
    schema: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Like :func:`call_cell_envelope`, but returns the reply payload and
    raises the ``CbsError`` of an error reply."""
    reply = await call_cell_envelope(cell, verb, payload, schema=schema, headers=headers)
    if reply.error is not None:
        raise CbsError.from_wire(reply.error)
    assert reply.payload is not None
    return reply.payload


class CellsPlugin:
    """A plugin that registers the given cells (named after their ids)."""

    def __init__(self, *cells: Cell) -> None:
        self._cells = cells
        self.name = "cells_" + "_".join(c.id for c in cells)

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        for cell in self._cells:
            cells.add(cell)


class HookRecorder:
    """Records the name of every hook called on a body's plugin manager."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._undo: list[Callable[[], None]] = []

    def __call__(self, body: Body) -> HookRecorder:
        def before(hook_name: str, hook_impls: Any, kwargs: Any) -> None:
            self.calls.append(hook_name)

        def after(outcome: Any, hook_name: str, hook_impls: Any, kwargs: Any) -> None:
            pass

        self._undo.append(body.plugin_manager.add_hookcall_monitoring(before, after))
        return self

    def clear(self) -> None:
        self.calls.clear()

    def close(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()


@pytest.fixture
def nats_server() -> Iterator[Any]:
    try:
        from cbs.nats.server import NatsServer
    except ImportError:
        pytest.skip("the nats_server fixture needs cbs-nats (pip install cbs-nats)")
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hook_recorder() -> Iterator[HookRecorder]:
    recorder = HookRecorder()
    yield recorder
    recorder.close()


@pytest_asyncio.fixture
async def make_body() -> AsyncIterator[Callable[..., Body]]:
    bodies: list[Body] = []

    def factory(
        *plugins: Any, config: Mapping[str, Any] | None = None, autoload: bool = False
    ) -> Body:
        body = Body(config, plugins=plugins, autoload=autoload)
        bodies.append(body)
        return body

    yield factory
    for body in reversed(bodies):
        await body.stop()
