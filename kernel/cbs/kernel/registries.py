"""Typed registries handed to the ``cbs_register_*`` and ``cbs_add_*`` hooks.

Each validates what it is given and records which plugin gave it, so that
``cbs plugins`` can tell who registered what.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from cbs.contracts import Bus, Cell, subject_for
from cbs.contracts.envelope import NAME_RE
from cbs.kernel.config import Config, Option
from cbs.kernel.errors import PluginError
from cbs.kernel.middleware import ClientMiddleware, ServerMiddleware

if TYPE_CHECKING:
    from cbs.kernel.body import Body

__all__ = [
    "Registered",
    "CellRegistry",
    "TransportRegistry",
    "MiddlewareRegistry",
    "OptionRegistry",
    "CommandRegistry",
    "CellFieldRegistry",
    "Transport",
    "Command",
    "CellField",
]

T = TypeVar("T")

TransportFactory = Callable[[Config], Bus]
#: Lists the cells reachable on a shared bus (``None``: nothing to discover).
Discover = Callable[[Config], Awaitable["list[dict[str, Any]] | None"]]
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
        #: The plugin whose hook implementation is running; set by the loader.
        self.plugin = ""

    def _add(self, name: str, item: T) -> None:
        if name in self._items:
            other = self._items[name].plugin
            raise PluginError(
                f"plugin '{self.plugin}' registers {self.kind} '{name}',"
                f" already registered by plugin '{other}'"
            )
        self._items[name] = Registered(name, item, self.plugin)

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
    ) -> None:
        """``factory(config)`` makes the bus; ``discover(config)``, if given,
        lists the cells served by every process on that bus, for ``cbs cells``
        (each a dict like ``cbs cells --json`` prints, plus ``instances``,
        ``requests`` and ``errors``), or returns ``None`` when there is no
        shared bus to look at."""
        self._add(name, Transport(factory, priority, discover))

    def default(self) -> str | None:
        best = max(self, key=lambda r: r.item.priority, default=None)
        return None if best is None else best.name


@attrs.frozen
class Middleware(Generic[T]):
    factory: T
    order: int = 0


class MiddlewareRegistry:
    """Client-side and server-side middleware factories, ordered by ``order``
    (lower wraps outside; ties keep registration order)."""

    def __init__(self) -> None:
        self.client: _Registry[Middleware[ClientMiddleware]] = _Registry()
        self.server: _Registry[Middleware[ServerMiddleware]] = _Registry()
        self.client.kind = "client middleware"
        self.server.kind = "server middleware"

    @property
    def plugin(self) -> str:
        return self.client.plugin

    @plugin.setter
    def plugin(self, name: str) -> None:
        self.client.plugin = self.server.plugin = name

    def add_client(self, name: str, factory: ClientMiddleware, *, order: int = 0) -> None:
        self.client._add(name, Middleware(factory, order))

    def add_server(self, name: str, factory: ServerMiddleware, *, order: int = 0) -> None:
        self.server._add(name, Middleware(factory, order))

    def client_factories(self) -> list[ClientMiddleware]:
        return [r.item.factory for r in sorted(self.client, key=lambda r: r.item.order)]

    def server_factories(self) -> list[ServerMiddleware]:
        return [r.item.factory for r in sorted(self.server, key=lambda r: r.item.order)]

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
        run: CommandRun,
        configure: Callable[[argparse.ArgumentParser], None] | None = None,
    ) -> None:
        self._add(name, Command(help, run, configure))


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
