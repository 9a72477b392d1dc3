"""Adaptive load balancing on a real NATS: of two instances, the slow one
steps out of its queue group while saturated; no request fails, the fast one
takes most of the load, and foreign callers still use cbs.{service}.{verb}."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import cbs.nats.plugin
import cbs.spec.plugin
from cbs.spec import SpecRunner


async def test_the_slow_instance_steps_out_and_no_request_fails(
    nats_server: Any, make_body: Any, tmp_path: Path
) -> None:
    config = {"transport": "nats", "nats_url": nats_server.url}
    runners = []
    for kind in ("fast", "slow"):
        path = tmp_path / kind / "body.yaml"
        path.parent.mkdir()
        path.write_text(
            f"version: 1\ncells:\n  worker: {{factory: 'spec_cells:{kind}'}}\n"
            "balancing: {step_out: 0.25, step_in: 0, max_out: 1}\n"
        )
        runner = SpecRunner(make_body(cbs.nats.plugin, cbs.spec.plugin, config=config), path)
        await runner.start()
        runners.append(runner)
    fast, slow = (r.balancer for r in runners)
    assert fast is not None and slow is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not (
        fast.instance in slow.peers.get("worker", {})
        and slow.instance in fast.peers.get("worker", {})
    ):
        assert loop.time() < deadline, "the instances did not hear of each other"
        await asyncio.sleep(0.02)
    caller = make_body(cbs.nats.plugin, config=config)
    await caller.start(serve=False)
    served: dict[str, int] = {}
    failures: list[BaseException] = []
    left = 2000

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            try:
                reply = await caller.request("worker", "work", {}, schema="bench/v1/Job")
            except BaseException as exc:
                failures.append(exc)
                continue
            served[reply["v"]] = served.get(reply["v"], 0) + 1

    await asyncio.gather(*(client() for _ in range(32)))
    assert failures == []
    assert slow.steps_out > 0 and fast.steps_out == 0
    assert served.get("1.0.1", 0) < 0.35 * sum(served.values())  # plain queue groups: about 0.5
