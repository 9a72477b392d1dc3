"""The fault rules of one body, and each endpoint's view of them: what the
entry point makes when middleware is registered, without the layers (or asyncio)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cbs.chaos.rules import Rule, default_rng

__all__ = ["ChaosState", "View"]


class View:
    """The rules targeting one endpoint, kept current by the state."""

    __slots__ = ("cell", "rules", "side", "subject")

    def __init__(self, side: str, subject: str, cell: str | None) -> None:
        self.side = side
        self.subject = subject
        self.cell = cell
        self.rules: tuple[Rule, ...] = ()

    def update(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(r for r in rules if r.targets(self.side, self.subject, self.cell))


class ChaosState:
    """The rules of one body and the views of its endpoints."""

    def __init__(
        self,
        rules: Sequence[Rule] = (),
        *,
        rng: Callable[[], float] | None = None,
        hold: float = 5.0,
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.rng = rng or default_rng()
        #: How long a dropped reply is held on the server when the request
        #: carries no deadline (the body's request timeout).
        self.hold = hold
        self._views: dict[tuple[str, str, str | None], View] = {}

    def view(self, side: str, subject: str, cell: str | None) -> View:
        key = (side, subject, cell)
        found = self._views.get(key)
        if found is None:
            found = self._views[key] = View(side, subject, cell)
            found.update(self.rules)
        return found

    def replace(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        for view in self._views.values():
            view.update(self.rules)

    def merge(self, rules: Sequence[Rule]) -> None:
        """Add rules; one with the name of an existing rule replaces it."""
        new = {r.name: r for r in rules}
        kept = [new.pop(r.name) if r.name in new else r for r in self.rules]
        self.replace([*kept, *new.values()])

    def clear(self, names: Sequence[str] = ()) -> list[str]:
        """Remove the named rules (all without names); the names removed."""
        gone = [r.name for r in self.rules if not names or r.name in names]
        self.replace([r for r in self.rules if r.name not in gone])
        return gone
