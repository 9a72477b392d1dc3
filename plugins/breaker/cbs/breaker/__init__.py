"""Resilience for CBS callers (``cbs-breaker``): circuit breakers, deadlines,
retries with backoff and bulkheads, as client middleware composed in a fixed
order, plus a server middleware that drops work whose deadline has passed.

The entry point (:mod:`cbs.breaker.plugin`) holds only hook implementations.
Public helpers::

    from cbs.breaker import states, remaining, CircuitOpen, BulkheadFull, HEADER

See docs/resilience.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel import lazy_exports

if TYPE_CHECKING:
    from cbs.breaker.circuit import CLOSED, HALF_OPEN, OPEN
    from cbs.breaker.layers import HEADER, BulkheadFull, CircuitOpen, remaining
    from cbs.kernel import Body

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "HEADER",
    "BulkheadFull",
    "CircuitOpen",
    "remaining",
    "states",
]
# Imported when first used: the entry point (every `cbs` command) needs none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(("CLOSED", "HALF_OPEN", "OPEN"), "cbs.breaker.circuit"),
        **dict.fromkeys(
            ("HEADER", "BulkheadFull", "CircuitOpen", "remaining"), "cbs.breaker.layers"
        ),
    },
)


def states(body: Body) -> dict[tuple[str, str], str]:
    """The state (``closed``, ``half-open`` or ``open``) of every breaker of
    ``body``, by ``(service, verb)``: one per target called since it started
    with this plugin. Empty when the plugin is not wired into the body."""
    from cbs.breaker.plugin import TABLE

    table = body.stash.get(TABLE, None)
    return {} if table is None else table.states()
