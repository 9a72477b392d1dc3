"""Adaptive load balancing against plain queue groups, in the same run.

Two instances of the service ``worker`` (two bodies on one nats-server),
one of them 10x slower (2 ms and 20 ms per request); a caller keeps 32
requests in flight. Four cases: both fast; fast + slow with plain queue
groups; fast + slow with ``balancing.step_out`` (cbs-spec); fast + slow with
``balancing.strategy: p2c`` (the caller chooses by power of two choices). Prints p50 and
p99 of each, as JSON. The first ``--warmup`` requests (default 2000, about half a second: the
instances measure each other first) are not counted. Run:
``python -m benchmarks.balancing [--count N] [--warmup N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cbs.kernel import Body, Cell
from cbs.nats import plugin as nats_plugin
from cbs.nats.server import NatsServer
from cbs.spec import SpecRunner
from cbs.spec import plugin as spec_plugin

FAST, SLOW = 0.002, 0.020


def _worker(delay: float, version: str) -> Cell:
    cell = Cell("worker", category="logic", version=version, purpose="sleeps", max_concurrency=16)

    @cell.verb("work", schema="bench/v1/Job")
    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(delay)
        return {"v": version}

    return cell


def fast() -> Cell:
    return _worker(FAST, "1.0.0")


def slow() -> Cell:
    return _worker(SLOW, "1.0.1")


async def _instance(url: str, factory: str, balancing: str, folder: Path) -> Body:
    path = folder / f"{factory}.yaml"
    text = f"version: 1\ncells:\n  worker: {{factory: 'benchmarks.balancing:{factory}'}}\n"
    if balancing == "step out":
        text += "balancing: {step_out: 0.25, step_in: 0.0, max_out: 1}\n"
    elif balancing == "p2c":
        text += "balancing: {strategy: p2c}\n"
    path.write_text(text)
    body = Body(
        {"transport": "nats", "nats_url": url},
        plugins=[nats_plugin, spec_plugin],
        autoload=False,
        environ={},
    )
    await SpecRunner(body, path).start()
    return body


async def case(
    url: str, kinds: tuple[str, str], balancing: str, count: int, warmup: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bodies = [
            await _instance(url, kind, balancing, folder / str(i))
            if (folder / str(i)).mkdir() is None
            else None
            for i, kind in enumerate(kinds)
        ]
        caller = Body(
            {"transport": "nats", "nats_url": url, "balancing": "p2c" * (balancing == "p2c")},
            plugins=[nats_plugin, spec_plugin],
            autoload=False,
            environ={},
        )
        await caller.start(serve=False)
        await asyncio.sleep(0.5)  # the instances hear of each other
        latencies: list[float] = []
        versions: dict[str, int] = {}
        failures = 0
        kinds_failed: dict[str, int] = {}
        left = count + warmup

        async def client() -> None:
            nonlocal left, failures
            while left > 0:
                left -= 1
                started = time.perf_counter()
                try:
                    reply = await caller.request("worker", "work", {}, schema="bench/v1/Job")
                except Exception as exc:
                    failures += 1
                    kinds_failed[type(exc).__name__] = kinds_failed.get(type(exc).__name__, 0) + 1
                    continue
                if left < count:  # the first ``warmup`` requests are not measured
                    latencies.append(time.perf_counter() - started)
                    versions[reply["v"]] = versions.get(reply["v"], 0) + 1

        await asyncio.gather(*(client() for _ in range(32)))
        await caller.stop()
        for body in bodies:
            assert body is not None
            await body.stop()
    ordered = sorted(latencies)
    return {
        "instances": "+".join(kinds),
        "balancing": balancing,
        "requests": count,
        "warmup": warmup,
        "failures": failures,
        "failed_with": kinds_failed,
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 2),
        "slow_share": round(versions.get("1.0.1", 0) / max(len(latencies), 1), 3),
    }


async def main(count: int, warmup: int) -> list[dict[str, Any]]:
    server = NatsServer().start()
    try:
        return [
            await case(server.url, ("fast", "fast"), "queue group", count, warmup),
            await case(server.url, ("fast", "slow"), "queue group", count, warmup),
            await case(server.url, ("fast", "slow"), "step out", count, warmup),
            await case(server.url, ("fast", "slow"), "p2c", count, warmup),
        ]
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000, help="requests measured")
    parser.add_argument(
        "--warmup", type=int, default=2000, help="requests sent first and not measured"
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.count, args.warmup)), indent=2))
