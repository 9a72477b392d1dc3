"""Hooks that cbs-breaker adds (through ``cbs_addhooks``) for other plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from cbs.kernel import Body

hookspec = pluggy.HookspecMarker("cbs")


@hookspec
def cbs_breaker_state_changed(body: Body, service: str, verb: str, old: str, new: str) -> None:
    """Notification: the circuit breaker of ``service.verb`` in ``body`` moved
    from state ``old`` to ``new`` (``closed``, ``open``, ``half-open``).

    Called once per transition, from the request path that caused it (rare:
    never per message otherwise). Plain function only; keep it short.
    Exceptions are logged. Returns nothing.
    """
