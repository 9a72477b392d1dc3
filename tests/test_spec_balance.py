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


async def test_p2c_callers_choose_the_fast_instance_and_the_queue_group_still_serves(
    nats_server: Any, make_body: Any, tmp_path: Path
) -> None:
    from cbs.spec.p2c import P2C
    from cbs.spec.plugin import BALANCER

    config = {"transport": "nats", "nats_url": nats_server.url}
    instances = []
    for kind in ("fast", "slow"):
        path = tmp_path / kind / "body.yaml"
        path.parent.mkdir()
        path.write_text(
            f"version: 1\ncells:\n  worker: {{factory: 'spec_cells:{kind}'}}\n"
            "balancing: {strategy: p2c}\n"
        )
        body = make_body(cbs.nats.plugin, cbs.spec.plugin, config=config)
        await SpecRunner(body, path).start()
        instances.append(body.stash[BALANCER])
    caller_body = make_body(cbs.nats.plugin, cbs.spec.plugin, config={**config, "balancing": "p2c"})
    await caller_body.start(serve=False)
    caller: P2C = caller_body.stash[BALANCER]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while set(caller.known.get("worker", {})) != {i.instance for i in instances}:
        assert loop.time() < deadline, f"the caller knows {caller.known}"
        await asyncio.sleep(0.02)
    served: dict[str, int] = {}
    failures: list[BaseException] = []

    async def load(body: Any, n: int) -> None:
        for _ in range(n):
            try:
                reply = await body.request("worker", "work", {}, schema="bench/v1/Job")
            except BaseException as exc:
                failures.append(exc)
                continue
            if body is caller_body:
                served[reply["v"]] = served.get(reply["v"], 0) + 1

    plain = make_body(cbs.nats.plugin, config=config)  # a caller without the option
    await plain.start(serve=False)
    await asyncio.gather(*(load(caller_body, 40) for _ in range(16)), load(plain, 20))
    assert failures == []
    assert caller.chosen >= 600  # sent to instance subjects, not to the group
    assert served.get("1.0.1", 0) < 0.25 * sum(served.values())  # the queue group: about 0.5
    # An instance that stops is dropped at once (its "gone"); requests go on.
    await instances[1].body.stop()
    while instances[1].instance in caller.known.get("worker", {}):
        assert loop.time() < deadline + 10, "the stopped instance is still known"
        await asyncio.sleep(0.02)
    before = caller.fallbacks
    await asyncio.gather(*(load(caller_body, 10) for _ in range(8)))
    assert failures == [] and caller.fallbacks >= before + 80  # one instance: the group
