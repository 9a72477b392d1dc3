"""Testing kit for CBS plugin and cell authors.

Installing ``cell-body-system`` registers the kit's pytest plugin
(:mod:`cbs.testing.pytest_plugin`, entry point ``pytest11``/``cbs``), so its
fixtures are there in every test suite, opt-in by name, none autouse
(``pytest -p no:cbs`` turns it off):

* ``make_body(*plugins, config=None, autoload=False, environ=None)``: a body
  with exactly the given plugins (plus the built-ins); bodies built through it
  are stopped at teardown. It ignores the user's ``CBS_*``/``NATS_*``
  variables unless given ``environ=os.environ`` (or a mapping of its own).
  Needs pytest-asyncio (``pip install 'cell-body-system[testing]'``).
* ``hook_recorder``: ``hook_recorder(body)`` starts recording every pluggy hook
  call on that body from then on (hooks that ran while the body was built are
  not seen; record those with a plugin of your own); ``.calls`` lists names.
* ``nats_server``: a real ``nats-server`` (JetStream on) on a free 127.0.0.1
  port, stopped by pid at teardown; ``.url``, ``.pid``, ``.kill()``,
  ``.start()`` (restart on the same port and store). Needs ``cbs-nats``.
* ``nats_cluster``: three such servers forming the JetStream cluster ``cbs``
  (routes on free ports); ``.seed_url`` (every node, comma-separated),
  ``.nodes`` (each a ``nats_server``), ``.node_at(url)``. Needs ``cbs-nats``.

Helpers usable without pytest (this module does not import it):

* :class:`CellsPlugin`: a plugin registering the cells you give it, for
  ``make_body(CellsPlugin(cell_a, cell_b))``.
* :func:`call_cell`: one request to one cell, through the same server path as
  a bus delivery (codec, schema check, error replies), without any bus.
* :class:`MakeBody`, :class:`HookRecorder`: the types of two fixtures, for
  annotations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

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
    "CellsPlugin",
    "HookRecorder",
    "MakeBody",
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


class MakeBody(Protocol):
    """The ``make_body`` fixture: ``make_body(*plugins, config=..., environ=...)``."""

    def __call__(
        self,
        *plugins: Any,
        config: Mapping[str, Any] | None = None,
        autoload: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Body: ...
