"""Cells the spec tests deploy: the installed ``worker`` 1.0.0 and factories
of new versions (named in specs as ``spec_cells:worker_v2`` ...)."""

from __future__ import annotations

import asyncio
from typing import Any

from cbs.kernel import Cell


def worker(version: str = "1.0.0", *, healthy: bool = True, cell_id: str = "worker") -> Cell:
    cell = Cell(cell_id, category="logic", version=version, purpose="answers with its version")

    @cell.verb("work", schema="test/v1/Job")
    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("probe") and not healthy:
            raise RuntimeError("not ready")
        await asyncio.sleep(0.002)  # so that requests are in flight during a change
        return {"version": version, "n": payload.get("n", 0)}

    return cell


def worker_v2() -> Cell:
    return worker("2.0.0")


def worker_v3() -> Cell:
    return worker("3.0.0")


def worker_broken() -> Cell:
    return worker("9.0.0", healthy=False)


def helper() -> Cell:
    return worker("1.0.0", cell_id="helper")


def _sleeper(delay: float, version: str) -> Cell:
    cell = Cell("worker", category="logic", version=version, purpose="sleeps", max_concurrency=16)

    @cell.verb("work", schema="bench/v1/Job")
    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(delay)
        return {"v": version}

    return cell


def fast() -> Cell:
    """2 ms a request."""
    return _sleeper(0.002, "1.0.0")


def slow() -> Cell:
    """20 ms a request: ten times ``fast``."""
    return _sleeper(0.020, "1.0.1")


def clash() -> Cell:
    """Another id on the subjects of ``worker``: cannot be added beside it."""
    cell = Cell("clash", service="worker", category="logic", version="1.0.0", purpose="clashes")

    @cell.verb("work", schema="test/v1/Job")
    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    return cell
