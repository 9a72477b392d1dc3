"""Chaos engineering for CBS (``cbs-chaos``): fault-injection middleware on
both sides of a call, switched at runtime over ``$CBS.CHAOS.*``, and
``cbs chaos run`` for experiments with a steady-state hypothesis.

The entry point (:mod:`cbs.chaos.plugin`) holds only hook implementations.
Public helpers::

    from cbs.chaos import Rule, parse_rules, read_rules, rules, set_rules, clear_rules

See docs/chaos.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

# Imported here, not lazily: importing the submodule `rules` later would
# replace the function `rules` below with it.
from cbs.chaos.rules import Rule, parse_rules, read_rules
from cbs.kernel import lazy_exports

if TYPE_CHECKING:
    from cbs.chaos.control import CONTROL_SUBJECT
    from cbs.chaos.state import ChaosState
    from cbs.kernel import Body

__all__ = [
    "CONTROL_SUBJECT",
    "Rule",
    "parse_rules",
    "read_rules",
    "rules",
    "set_rules",
    "clear_rules",
    "instance",
]
# Imported when first used: the entry point (every `cbs` command) needs none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {"CONTROL_SUBJECT": "cbs.chaos.control"},
)


def _state(body: Body) -> ChaosState:
    from cbs.chaos.plugin import STATE

    state = body.stash.get(STATE, None)
    if state is None:
        raise RuntimeError("cbs-chaos is not wired into this body (not started, or blocked)")
    return state


def rules(body: Body) -> list[Rule]:
    """The rules in force in ``body`` (empty when the plugin is not wired in)."""
    from cbs.chaos.plugin import STATE

    state = body.stash.get(STATE, None)
    return [] if state is None else list(state.rules)


def set_rules(body: Body, new: Sequence[Rule | dict[str, Any]], *, replace: bool = False) -> None:
    """Add rules to a started body (same name: replaced), or with ``replace``
    set exactly these. Mappings are checked as in a rules file."""
    parsed = [r for r in new if isinstance(r, Rule)]
    raw = [r for r in new if not isinstance(r, Rule)]
    parsed += parse_rules(raw)
    state = _state(body)
    if replace:
        state.replace(parsed)
    else:
        state.merge(parsed)


def clear_rules(body: Body, names: Sequence[str] = ()) -> list[str]:
    """Remove the named rules (every rule without names); the names removed."""
    return _state(body).clear(names)


def instance(body: Body) -> str | None:
    """The id under which ``body`` answers on ``$CBS.CHAOS.<id>`` (``None``
    while it does not listen)."""
    from cbs.chaos.plugin import RESPONDER

    responder = body.stash.get(RESPONDER, None)
    return None if responder is None else responder.instance
