"""Package attributes imported on first use (PEP 562).

A plugin's entry point is imported by every ``cbs`` command, ``cbs plugins``
and ``cbs --help`` included. Its package's ``__init__`` should cost nothing
there, yet offer its public names::

    from typing import TYPE_CHECKING
    from cbs.kernel import lazy_exports

    if TYPE_CHECKING:  # for type checkers and readers: the names and their homes
        from cbs.breaker.layers import HEADER, CircuitOpen

    __all__ = ["HEADER", "CircuitOpen"]
    __getattr__, __dir__ = lazy_exports(__name__, {
        "HEADER": "cbs.breaker.layers",
        "CircuitOpen": "cbs.breaker.layers",
    })
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``: each name of
    ``homes`` is imported from its module when first read, then kept."""
    homes = dict(homes)

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)  # read once
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *homes})

    return __getattr__, __dir__
