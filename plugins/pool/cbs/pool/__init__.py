"""cbs-pool: supervised worker processes and sidecar cells.

``cbs run --workers N`` supervises N worker processes serving the cells
(restarted with exponential backoff, crash loops reported, health by
heartbeat, ``SIGHUP`` for a rolling restart); ``cbs scale SERVICE N`` resizes
a running pool over ``$CBS.POOL.scale``. See docs/pools.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel import lazy_exports

if TYPE_CHECKING:
    from cbs.pool.specs import SidecarSpec, load_pool_file, parse_replicas
    from cbs.pool.stats import GroupStats, PoolStats

__all__ = ["GroupStats", "PoolStats", "SidecarSpec", "load_pool_file", "parse_replicas"]
# Imported when first used: the entry point (every `cbs` command) needs none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(("GroupStats", "PoolStats"), "cbs.pool.stats"),
        **dict.fromkeys(("SidecarSpec", "load_pool_file", "parse_replicas"), "cbs.pool.specs"),
    },
)
