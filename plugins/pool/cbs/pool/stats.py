"""What a pool tells about itself: :class:`PoolStats`, a capability that
metrics and ``cbs cells`` read, and the rows it is made of."""

from __future__ import annotations

from typing import Any

import attrs

from cbs.kernel import Capability

__all__ = ["GroupStats", "PoolStats"]


@attrs.frozen
class GroupStats:
    """One group of identical workers: the cells (or the sidecar) they serve."""

    name: str
    pool: str
    language: str
    cells: tuple[str, ...]
    services: tuple[str, ...]
    #: Workers wanted (``cbs scale`` changes it).
    workers: int
    #: Worker processes running (starting, serving or draining).
    alive: int
    #: Workers whose last heartbeat said "serving".
    serving: int
    #: Unplanned exits so far (crashes, kills, missed heartbeats).
    restarts: int
    #: Requests being handled, summed over the workers' last heartbeats.
    busy: int
    #: Requests waiting for a free thread or process of their cell.
    queue: int
    #: ``ok``, ``starting``, ``degraded`` (fewer serving than wanted) or ``crash-loop``.
    state: str
    pids: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["cells"], data["services"], data["pids"] = (
            list(self.cells),
            list(self.services),
            list(self.pids),
        )
        return data


class PoolStats(Capability):
    """The groups of the pool this body supervises (``cbs run --workers``)."""

    provided_by = "cbs-pool (cbs run --workers)"

    @property
    def pool_id(self) -> str:
        raise NotImplementedError

    def groups(self) -> list[GroupStats]:
        raise NotImplementedError
