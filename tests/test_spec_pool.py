"""cbs-spec with cbs-pool and real processes: ``replicas`` in a spec and its
autoscaler reach worker processes through the kernel's ``Scaler``, which
cbs-pool provides without knowing cbs-spec."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from cbs_process import wait_gone

import cbs.greeter.plugin
import cbs.nats.plugin
import cbs.pool.plugin
import cbs.spec.plugin
from cbs.kernel import Body, Directory, Scaler
from cbs.pool.stats import PoolStats
from cbs.spec import SpecRunner, read_text
from cbs.testing import MakeBody


async def instances(body: Body, cell_id: str) -> int:
    directory = body.capabilities.require(Directory, needed_by="the test")
    rows = {row["id"]: row for row in await directory.list_cells()}
    return int(rows[cell_id]["instances"]) if cell_id in rows else 0


async def until_instances(body: Body, cell_id: str, n: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    seen = -1
    while time.monotonic() < deadline:
        seen = await instances(body, cell_id)
        if seen == n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{cell_id}: {seen} instances, not {n}, within {seconds:g} s")


def worker_pids(body: Body) -> list[int]:
    stats = body.capabilities.get(PoolStats)
    return [] if stats is None else [p for g in stats.groups() for p in g.pids]


async def test_spec_replicas_and_the_autoscaler_reach_real_worker_processes(
    nats_server: Any, make_body: MakeBody, tmp_path: Path
) -> None:
    path = tmp_path / "body.yaml"
    path.write_text("version: 1\ncells:\n  greet: {replicas: 3}\n")
    body = make_body(
        cbs.nats.plugin,
        cbs.spec.plugin,
        cbs.pool.plugin,
        cbs.greeter.plugin,
        config={"transport": "nats", "nats_url": nats_server.url, "drain_timeout": 2},
        environ=dict(os.environ),
    )
    runner = SpecRunner(body, path)
    await runner.start()
    scaler = body.capabilities.get(Scaler)
    assert scaler is not None and type(scaler).__module__ == "cbs.pool.scaler"
    assert scaler.replicas("greeter") == 3  # this body and two workers
    pids = worker_pids(body)
    assert len(pids) == 2 and os.getpid() not in pids
    await until_instances(body, "greet", 3)
    # Every instance answers (the queue group spreads them over the processes).
    replies = await asyncio.gather(
        *(body.request("greeter", "say_hello", {"name": f"n{i}"}) for i in range(60))
    )
    assert {r["message"] for r in replies} == {f"Hello n{i}!" for i in range(60)}

    # The autoscaler, idle, takes the service from 3 to its min of 1: real processes stop.
    assert runner.reconciler is not None
    spec = read_text(
        "version: 1\ncells:\n  greet: {replicas: {min: 1, max: 3}}\n"
        "services:\n  greeter:\n    autoscale: {in_flight: 0.5, interval: 0.1,"
        " scale_down_window: 0, cooldown: 0}\n"
    )
    assert (await runner.reconciler.apply(spec)).ok
    deadline = time.monotonic() + 20
    while scaler.replicas("greeter") != 1 or worker_pids(body):
        assert time.monotonic() < deadline, f"still {scaler.replicas('greeter')} replicas"
        await asyncio.sleep(0.05)
    assert any(d.desired == 1 for d in runner.decisions)
    assert all(wait_gone(pid, 10) for pid in pids)
    await until_instances(body, "greet", 1)
    await body.stop()
    assert worker_pids(body) == []


async def test_a_sidecar_of_a_spec_runs_under_the_pool_and_a_new_command_replaces_it(
    make_body: MakeBody, tmp_path: Path
) -> None:
    import sys

    from cbs_process import alive

    path = tmp_path / "body.yaml"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    path.write_text(f"version: 1\ncells:\n  tick: {{command: {sleeper}, replicas: 2}}\n")
    body = make_body(cbs.spec.plugin, cbs.pool.plugin, environ=dict(os.environ))
    runner = SpecRunner(body, path)
    await runner.start()
    first = worker_pids(body)
    assert len(first) == 2 and all(alive(pid) for pid in first)
    assert runner.reconciler is not None
    other = [*sleeper[:-1], "import time; time.sleep(121)"]
    spec = read_text(f"version: 1\ncells:\n  tick: {{command: {other}, replicas: 1}}\n")
    assert (await runner.reconciler.apply(spec)).ok
    second = worker_pids(body)
    assert len(second) == 1 and not set(second) & set(first)  # new ones first, old ones gone
    assert all(wait_gone(pid, 10) for pid in first)
    assert (await runner.reconciler.apply(read_text("version: 1\ncells: {}\n"))).ok
    assert worker_pids(body) == [] and wait_gone(second[0], 10)
