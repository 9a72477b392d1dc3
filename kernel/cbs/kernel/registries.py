"""Typed registries handed to the ``cbs_register_*`` and ``cbs_add_*`` hooks.

Each validates what it is given and records which plugin gave it, so that
``cbs plugins`` can tell who registered what. The hooks are called through
pluggy, all implementations in one call; a registry learns which plugin is
registering by finding that plugin's hook implementation on the call stack
(see ``cbs.kernel.hooks``). What is added outside a hook (``Body.add_cell``
at run time) is recorded as added by ``runtime``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from cbs.contracts import Bus, Cell, Endpoint, subject_for
from cbs.contracts.envelope import NAME_RE
from cbs.kernel.config import Config, Option
from cbs.kernel.errors import PluginError
from cbs.kernel.hooks import current_plugin

if TYPE_CHECKING:
    from cbs.kernel.body import Body
    from cbs.kernel.middleware import ClientMiddleware, ServerMiddleware

__all__ = [
    "Registered",
    "CellRegistry",
    "TransportRegistry",
    "MiddlewareRegistry",
    "OptionRegistry",
    "CommandRegistry",
    "CellFieldRegistry",
    "EndpointOption",
    "EndpointOptionRegistry",
    "Transport",
    "Command",
    "Reference",
    "CellField",
]

#: Middleware phases, outermost first. Client side: ``outermost`` (sees the
#: whole call, e.g. fault injection), ``observe`` (tracing, metrics: one span
#: and one count per call), ``resilience`` (deadlines, bulkheads, retries,
#: breakers: may call what is inside more than once), ``attempt`` (once per
#: attempt: per-attempt timeouts), ``transport`` (next to the wire). The
#: server side uses the same names: ``outermost`` (discovery counters, deadline
#: guards), ``observe``, ``resilience``, ``attempt``, ``transport`` (next to the
#: cell's handler).
PHASES = ("outermost", "observe", "resilience", "attempt", "transport")

T = TypeVar("T")

TransportFactory = Callable[[Config], Bus]
#: Lists the cells reachable on a shared bus (``None``: nothing to discover).
Discover = Callable[["Body"], Awaitable["list[dict[str, Any]] | None"]]
CommandRun = Callable[["Body", argparse.Namespace], "int | Awaitable[int]"]
#: Values of a ``cbs cells`` field for the given rows, by cell id.
CellFieldProvider = Callable[["Body", "list[dict[str, Any]]"], Awaitable["Mapping[str, Any]"]]


@attrs.frozen
class Registered(Generic[T]):
    """Something a plugin registered, and which plugin."""

    name: str
    item: T
    plugin: str


class _Registry(Generic[T]):
    kind = "thing"

    def __init__(self) -> None:
        self._items: dict[str, Registered[T]] = {}

    @property
    def plugin(self) -> str:
        """The plugin registering right now (``runtime`` outside a hook)."""
        return current_plugin() or "runtime"

    def _add(self, name: str, item: T) -> None:
        plugin = self.plugin
        if name in self._items:
            other = self._items[name].plugin
            raise PluginError(
                f"plugin '{plugin}' registers {self.kind} '{name}',"
                f" already registered by plugin '{other}'"
            )
        self._items[name] = Registered(name, item, plugin)

    def __iter__(self) -> Iterator[Registered[T]]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def get(self, name: str) -> Registered[T] | None:
        return self._items.get(name)

    def names(self) -> list[str]:
        return list(self._items)

    def by_plugin(self, plugin: str) -> list[str]:
        return [r.name for r in self._items.values() if r.plugin == plugin]


class CellRegistry(_Registry[Cell]):
    """Cells by id. Two cells may not serve the same subject."""

    kind = "cell"

    def __init__(self) -> None:
        super().__init__()
        self._subjects: dict[str, str] = {}

    def add(self, cell: Cell) -> None:
        if not isinstance(cell, Cell):
            raise PluginError(f"plugin '{self.plugin}' registers a cell that is not a Cell")
        if NAME_RE.fullmatch(cell.id) is None:
            raise PluginError(f"plugin '{self.plugin}': cell id '{cell.id}' is not snake_case")
        subjects = [subject_for(cell.service, e.verb) for e in cell.endpoints]
        for subject in subjects:
            if subject in self._subjects:
                raise PluginError(
                    f"plugin '{self.plugin}': cell '{cell.id}' serves {subject},"
                    f" already served by cell '{self._subjects[subject]}'"
                )
        self._add(cell.id, cell)
        self._subjects.update(dict.fromkeys(subjects, cell.id))

    def remove(self, cell_id: str) -> Cell:
        """Forget a cell (``KeyError`` if unknown); returns it."""
        cell = self._items.pop(cell_id).item
        for subject in [s for s, owner in self._subjects.items() if owner == cell_id]:
            del self._subjects[subject]
        return cell

    def replace(self, cell: Cell) -> Cell:
        """Put ``cell`` in the place of the cell with its id; returns the old one."""
        old = self.remove(cell.id)
        try:
            self.add(cell)
        except PluginError:
            self.add(old)
            raise
        return old

    def cell(self, cell_id: str) -> Cell:
        entry = self.get(cell_id)
        if entry is None:
            raise KeyError(cell_id)
        return entry.item

    def find_endpoint(self, service: str, verb: str) -> Cell | None:
        """The installed cell serving ``cbs.{service}.{verb}``, if any."""
        entry = self.get(self._subjects.get(subject_for(service, verb), ""))
        return None if entry is None else entry.item


@attrs.frozen
class Transport:
    factory: TransportFactory
    priority: int = 0
    discover: Discover | None = None
    shared: Callable[[Config], bool] | None = None


class TransportRegistry(_Registry[Transport]):
    """Transports by name; ``priority`` picks the default."""

    kind = "transport"

    def add(
        self,
        name: str,
        factory: TransportFactory,
        *,
        priority: int = 0,
        discover: Discover | None = None,
        shared: Callable[[Config], bool] | None = None,
    ) -> None:
        """``factory(config)`` makes the bus; ``await discover(body)``, if
        given, lists the cells served by every process on that bus, for
        ``cbs cells`` (rows like ``cbs cells --json`` prints; keys beyond
        those become extra columns), or returns ``None`` when there is no
        shared bus to look at. It may start ``body`` (serving nothing) to
        use its connection. ``shared(config)`` tells, before connecting,
        whether other processes can reach this bus with that configuration
        (default: they cannot)."""
        self._add(name, Transport(factory, priority, discover, shared))

    def default(self) -> str | None:
        best = max(self, key=lambda r: r.item.priority, default=None)
        return None if best is None else best.name


@attrs.frozen
class Middleware(Generic[T]):
    factory: T
    phase: str = "observe"
    order: int = 0

    def sort_key(self) -> tuple[int, int]:
        return PHASES.index(self.phase), self.order


class _MiddlewareSide(_Registry[Middleware[T]]):
    def add(self, name: str, factory: T, phase: str, order: int) -> None:
        if phase not in PHASES:
            raise PluginError(
                f"plugin '{self.plugin}': {self.kind} '{name}' names phase '{phase}'"
                f" (phases: {', '.join(PHASES)})"
            )
        self._add(name, Middleware(factory, phase, order))

    def factories(self) -> list[T]:
        # sorted() is stable: ties keep registration order.
        return [r.item.factory for r in sorted(self, key=lambda r: r.item.sort_key())]


def _placements(side: str, registry: _MiddlewareSide[Any]) -> list[dict[str, Any]]:
    return [
        {
            "side": side,
            "name": r.name,
            "phase": r.item.phase,
            "order": r.item.order,
            "plugin": r.plugin,
        }
        for r in sorted(registry, key=lambda r: r.item.sort_key())
    ]


class MiddlewareRegistry:
    """Client-side and server-side middleware factories, ordered by phase
    (see ``cbs.kernel.middleware.PHASES``, outermost first), then ``order``
    within the phase (lower wraps outside), then registration order."""

    def __init__(self) -> None:
        self.client: _MiddlewareSide[ClientMiddleware] = _MiddlewareSide()
        self.server: _MiddlewareSide[ServerMiddleware] = _MiddlewareSide()
        self.client.kind = "client middleware"
        self.server.kind = "server middleware"

    def add_client(
        self, name: str, factory: ClientMiddleware, *, phase: str = "observe", order: int = 0
    ) -> None:
        self.client.add(name, factory, phase, order)

    def add_server(
        self, name: str, factory: ServerMiddleware, *, phase: str = "observe", order: int = 0
    ) -> None:
        self.server.add(name, factory, phase, order)

    def client_factories(self) -> list[ClientMiddleware]:
        return self.client.factories()

    def server_factories(self) -> list[ServerMiddleware]:
        return self.server.factories()

    def placements(self) -> list[dict[str, Any]]:
        """Every middleware with its side, phase, order and plugin, in wrapping order."""
        return [*_placements("client", self.client), *_placements("server", self.server)]

    def by_plugin(self, plugin: str) -> list[str]:
        return self.client.by_plugin(plugin) + self.server.by_plugin(plugin)


class OptionRegistry(_Registry[Option]):
    """Configuration options; each is also a CLI flag and maybe an env var."""

    kind = "option"

    def add(
        self,
        name: str,
        *,
        help: str,
        default: Any = None,
        type: Callable[[str], Any] = str,
        env: str | None = None,
        flag: str | None = None,
        choices: tuple[Any, ...] | None = None,
        metavar: str | None = None,
    ) -> None:
        if NAME_RE.fullmatch(name) is None:
            raise PluginError(f"plugin '{self.plugin}': option name '{name}' is not snake_case")
        self._add(name, Option(name, help, default, type, env, flag, choices, metavar, self.plugin))

    def as_dict(self) -> dict[str, Option]:
        return {r.name: r.item for r in self}


#: ``"package.module:function"``: what a command's ``run`` or ``configure``
#: may be instead of a function (imported when the command is used).
_REFERENCE_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@attrs.frozen
class Reference:
    """A function named ``"package.module:function"``, imported when first
    called, so that a command's module (and what it imports) is loaded only
    when that command runs: `cbs plugins` and `cbs --help` never load it."""

    target: str
    plugin: str

    def __call__(self, *args: Any) -> Any:
        return self.resolve()(*args)

    def resolve(self) -> Callable[..., Any]:
        from cbs.kernel.entry_points import load_object  # as an entry point is loaded

        try:
            found = load_object(self.target)
        except (ImportError, AttributeError) as exc:
            raise PluginError(
                f"plugin '{self.plugin}': '{self.target}' cannot be loaded"
                f" ({type(exc).__name__}: {exc})"
            ) from None
        if not callable(found):
            raise PluginError(f"plugin '{self.plugin}': '{self.target}' is not callable")
        return found  # type: ignore[no-any-return]


@attrs.frozen
class Command:
    help: str
    run: CommandRun
    configure: Callable[[argparse.ArgumentParser], None] | None = None


class CommandRegistry(_Registry[Command]):
    """``cbs`` subcommands."""

    kind = "command"

    def add(
        self,
        name: str,
        *,
        help: str,
        run: CommandRun | str,
        configure: Callable[[argparse.ArgumentParser], None] | str | None = None,
    ) -> None:
        """``run`` and ``configure`` are functions or ``"module:function"``
        references, imported only when the command is used."""
        self._add(name, Command(help, self._function(run), self._function(configure)))

    def _function(self, given: Any) -> Any:
        if not isinstance(given, str):
            return given
        if _REFERENCE_RE.fullmatch(given) is None:
            raise PluginError(
                f"plugin '{self.plugin}': '{given}' is not a 'package.module:function' reference"
            )
        return Reference(given, self.plugin)


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


@attrs.frozen
class CellField:
    provider: CellFieldProvider
    text: Callable[[Any], str] = _compact


class CellFieldRegistry(_Registry[CellField]):
    """Fields that plugins add to the rows of ``cbs cells``."""

    kind = "cells field"

    def add(
        self,
        name: str,
        provider: CellFieldProvider,
        *,
        text: Callable[[Any], str] | None = None,
    ) -> None:
        """``await provider(body, cells)`` returns ``{cell id: value}`` for the
        rows about to be printed; ``text(value)`` renders one value for the
        text listing (default: compact JSON, text as it is)."""
        if NAME_RE.fullmatch(name) is None:
            raise PluginError(
                f"plugin '{self.plugin}': cells field name '{name}' is not snake_case"
            )
        self._add(name, CellField(provider, text or _compact))


@attrs.frozen(eq=False)
class EndpointOption(Generic[T]):
    """An option that cells set per verb (``cell.verb("x", ..., durable=True)``)
    and that the declaring plugin reads with ``DURABLE.of(endpoint)``.
    Create one per option at module level and declare it in
    ``cbs_add_endpoint_options``."""

    name: str
    type: type[T]
    default: T
    help: str = ""
    #: What a value of this option advertises in discovery (``$SRV.INFO``
    #: endpoint metadata, ``cbs cells --json``): string keys and values.
    #: ``None``: nothing.
    metadata: Callable[[Any], Mapping[str, str]] | None = None

    def of(self, endpoint: Endpoint | None) -> T:
        """The value an endpoint sets (the default if it sets none)."""
        if endpoint is None:
            return self.default
        value: T = endpoint.options.get(self.name, self.default)
        return value


class EndpointOptionRegistry(_Registry[EndpointOption[Any]]):
    """Per-endpoint options that plugins read; the kernel checks each cell's
    options against them when the cell is added."""

    kind = "endpoint option"

    def add(self, option: EndpointOption[Any]) -> None:
        if NAME_RE.fullmatch(option.name) is None:
            raise PluginError(
                f"plugin '{self.plugin}': endpoint option '{option.name}' is not snake_case"
            )
        self._add(option.name, option)

    def metadata(self, endpoint: Endpoint) -> dict[str, str]:
        """The metadata the declared options an endpoint sets advertise,
        merged (transports with discovery publish it; wiring time only)."""
        merged: dict[str, str] = {}
        for name, value in endpoint.options.items():
            entry = self.get(name)
            if entry is not None and entry.item.metadata is not None:
                merged.update(entry.item.metadata(value))
        return merged

    def check(self, cell: Cell) -> list[str]:
        """Raise ``PluginError`` for a declared option of the wrong type;
        return the names of options no loaded plugin declares (ignored)."""
        unknown = []
        for endpoint in cell.endpoints:
            for name, value in endpoint.options.items():
                entry = self.get(name)
                if entry is None:
                    unknown.append(name)
                elif not isinstance(value, entry.item.type):
                    raise PluginError(
                        f"cell '{cell.id}' verb '{endpoint.verb}': endpoint option '{name}'"
                        f" must be {entry.item.type.__name__}, not {type(value).__name__}"
                    )
        return sorted(set(unknown))
