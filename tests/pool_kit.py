"""Helpers for tests of cbs-pool: the environment of a ``cbs`` subprocess, the
status of pools on a NATS server, and a load of requests that records each
outcome."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from cbs.contracts import CbsError
from cbs.kernel import Body


def cbs_env(**extra: str) -> dict[str, str]:
    """The caller's environment without ``CBS_*`` settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBS_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


async def group_status(nc: Any, pool: str, group: str) -> dict[str, Any] | None:
    from cbs.pool.control import pool_statuses

    for status in await pool_statuses(nc, wait=0.5):
        if status.get("pool") == pool:
            for entry in status.get("groups", []):
                if entry.get("name") == group:
                    found: dict[str, Any] = entry
                    return found
    return None


async def wait_group(
    nc: Any,
    pool: str,
    group: str,
    condition: Callable[[dict[str, Any]], bool],
    seconds: float = 30,
) -> dict[str, Any]:
    """The group's status once ``condition`` holds for it (polled, with a deadline)."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = await group_status(nc, pool, group)
        if last is not None and condition(last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"pool {pool} group {group} never matched; last status: {last}")


@attrs.define
class Outcome:
    started: float
    ok: bool
    error: str = ""


@attrs.define
class Load:
    """Requests to ``greeter.say_hello`` from ``concurrency`` loops until stopped."""

    body: Body
    concurrency: int = 8
    timeout: float = 3.0
    outcomes: list[Outcome] = attrs.field(factory=list)
    _stop: asyncio.Event = attrs.field(factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = attrs.field(factory=list)

    async def _loop(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            started = time.monotonic()
            name = f"w{n}-{i}"
            try:
                reply = await self.body.request(
                    "greeter",
                    "say_hello",
                    {"name": name},
                    schema="demo/v1/Name",
                    timeout=self.timeout,
                )
                ok = reply == {"message": f"Hello {name}!"}
                self.outcomes.append(Outcome(started, ok, "" if ok else repr(reply)))
            except CbsError as exc:
                self.outcomes.append(Outcome(started, False, str(exc)))
                await asyncio.sleep(0.01)

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._loop(n)) for n in range(self.concurrency)]

    async def wait_count(self, count: int, *, after: float = 0.0, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while sum(1 for o in self.outcomes if o.started >= after) < count:
            assert time.monotonic() < deadline, f"only {len(self.outcomes)} requests done"
            await asyncio.sleep(0.05)

    async def stop(self) -> list[Outcome]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes

    def failures(self, *, after: float = 0.0) -> list[Outcome]:
        return [o for o in self.outcomes if o.started >= after and not o.ok]


def burn(payload: dict[str, Any]) -> dict[str, Any]:
    """A CPU-bound handler (importable, for ``isolation="process"``): spins
    for ``payload["seconds"]`` holding the GIL."""
    end = time.perf_counter() + float(payload["seconds"])
    n = 0
    while time.perf_counter() < end:
        n += 1
    return {"spins": n}


#: The JavaScript SDK of this repository and its greet example.
SDK_JS = Path(__file__).resolve().parents[1] / "sdks" / "js"
GREET_JS = SDK_JS / "examples" / "greet.js"


def need_node() -> str:
    """The ``node`` executable, or skip when node or the SDK's packages are missing
    (.ci/run installs them: cd sdks/js && npm ci)."""
    import shutil

    import pytest

    node = shutil.which("node")
    if node is None or not (SDK_JS / "node_modules" / "@nats-io").is_dir():
        pytest.skip("needs node and sdks/js/node_modules (cd sdks/js && npm ci)")
    return node
