"""Entry points of one group, read from the metadata directories on ``sys.path``.

Every ``cbs`` command starts by finding its plugins. importlib_metadata costs
about 40 ms there, most of it spent importing what this does not need
(``importlib.abc`` brings ``importlib.resources``, ``tempfile``, ``shutil``,
``bz2`` and ``lzma``) and parsing every distribution's entry points. When
``sys.path`` holds only plain directories and no finder offers distributions
of its own, :func:`scan` gives the same answer as
``importlib_metadata.entry_points(group=...)`` for a few directory listings
and small reads: the same distributions (one per normalised name, the first
with metadata on the path, as importlib_metadata's ``_unique`` and
``_prefer_valid`` choose), the same entry points in the same order. Anything
else (a zip or egg on the path, a custom finder, a line it would not parse)
returns ``None`` and the caller asks importlib_metadata. A test compares the
two on this environment and on made-up ones.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "FoundDistribution",
    "FoundEntryPoint",
    "distributions",
    "entry_points_of",
    "load_object",
    "normalize",
    "scan",
]

_RUNS = re.compile(r"[-_.]+")
#: importlib_metadata's ``EntryPoint.pattern``.
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


class FoundDistribution:
    """A distribution's metadata directory, read as importlib_metadata's
    ``PathDistribution`` reads it."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def read_text(self, filename: str) -> str | None:
        try:
            with open(os.path.join(self.path, filename), encoding="utf-8") as file:
                return file.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            return None

    def has_metadata(self) -> bool:
        """As importlib_metadata's ``PathDistribution._has_metadata``: a
        ``METADATA`` or ``PKG-INFO`` is there, or the path is an ``.egg-info`` file."""
        return (
            os.path.exists(os.path.join(self.path, "METADATA"))
            or os.path.exists(os.path.join(self.path, "PKG-INFO"))
            or os.path.isfile(self.path)
        )


class FoundEntryPoint:
    """``name = value`` in section ``group`` of ``dist``'s ``entry_points.txt``."""

    __slots__ = ("dist", "group", "name", "value")

    def __init__(self, name: str, value: str, group: str, dist: FoundDistribution) -> None:
        self.name = name
        self.value = value
        self.group = group
        self.dist = dist

    def load(self) -> Any:
        """The object named, imported as importlib_metadata's ``EntryPoint.load``."""
        return load_object(self.value)


def load_object(value: str) -> Any:
    """The object ``"module:attr.attr"`` names, imported as importlib_metadata's
    ``EntryPoint.load`` imports an entry point's value (``ImportError`` or
    ``AttributeError`` when it is not there)."""
    match = _VALUE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not module:attr")
    module = importlib.import_module(match["module"])
    return functools.reduce(getattr, filter(None, (match["attr"] or "").split(".")), module)


def _normalized(stem: str) -> str:
    """The normalised name of ``name-1.0.dist-info``, as importlib_metadata's ``Lookup``."""
    return normalize(stem.lower().rpartition(".")[0].partition("-")[0])


def _distributions(path: Sequence[str]) -> list[FoundDistribution] | None:
    found: list[FoundDistribution] = []
    for entry in path:
        root = entry or "."
        try:
            children = os.listdir(root)
        except NotADirectoryError:
            return None  # a file (a zip?): importlib_metadata looks inside
        except OSError:
            continue  # missing or unreadable: importlib_metadata finds nothing there either
        if os.path.basename(root).lower().endswith(".egg"):
            return None
        by_name: dict[str, list[FoundDistribution]] = {}
        for child in children:
            if child.lower().endswith((".dist-info", ".egg-info")):
                dist = FoundDistribution(os.path.join(entry, child))
                by_name.setdefault(_normalized(child), []).append(dist)
        for dists in by_name.values():
            found.extend(dists)
    return found


def _entry_points(text: str, group: str, dist: FoundDistribution) -> list[FoundEntryPoint] | None:
    section = None
    found = []
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section is None:
            continue
        name, sep, value = line.partition("=")
        if not sep:
            return None  # importlib_metadata would fail here: let it say so
        if section == group:
            found.append(FoundEntryPoint(name.strip(), value.strip(), group, dist))
    return found


def _unsure() -> bool:
    """Whether a finder other than the path's offers distributions of its own."""
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        if finder is PathFinder or getattr(finder, "find_distributions", None) is None:
            continue
        module = (finder if isinstance(finder, type) else type(finder)).__module__
        if not module.startswith("importlib_metadata"):  # its own finder reads the path too
            return True
    return False


def distributions(path: Sequence[str] | None = None) -> dict[str, FoundDistribution] | None:
    """The distributions on ``path`` (default ``sys.path``) by normalised
    name, in importlib_metadata's order, or ``None`` when only it can tell."""
    dists = None if _unsure() else _distributions(sys.path if path is None else path)
    if dists is None:
        return None
    # One per normalised name: the first that has metadata, else the first.
    chosen: dict[str, FoundDistribution] = {}
    for dist in sorted(dists, key=lambda d: not d.has_metadata()):  # stable
        chosen.setdefault(_normalized(os.path.basename(dist.path)), dist)
    return chosen


def normalize(name: str) -> str:
    """A distribution name as :func:`distributions` keys it (PEP 503, ``_`` for ``-``)."""
    return _RUNS.sub("-", name).lower().replace("-", "_")


def scan(group: str, path: Sequence[str] | None = None) -> list[FoundEntryPoint] | None:
    """The entry points of ``group`` on ``path`` (default ``sys.path``), or
    ``None`` when only importlib_metadata can tell."""
    chosen = distributions(path)
    return None if chosen is None else entry_points_of(chosen, group)


def entry_points_of(
    chosen: Mapping[str, FoundDistribution], group: str
) -> list[FoundEntryPoint] | None:
    """The entry points of ``group`` of what :func:`distributions` found, or
    ``None`` when only importlib_metadata can tell."""
    found: list[FoundEntryPoint] = []
    for dist in chosen.values():
        entries = _entry_points(dist.read_text("entry_points.txt") or "", group, dist)
        if entries is None:
            return None
        found.extend(entries)
    return found
