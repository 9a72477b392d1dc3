"""Benchmark scenarios of cbs-pool and the JavaScript SDK:

- ``pool``: a CPU-bound cell served by 1 and by 2 supervised worker
  processes, 16 requests in flight (target: >= 1.6x with 2 workers on 2 cores);
- ``polyglot``: the same echo cell in Python and in JavaScript, each in its own
  process, behind the same CBS caller.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.stacks import Call, cbs_call, make_body
from cbs.nats import plugin as nats_plugin
from cbs.pool.supervisor import Group, Settings, Supervisor

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from benchmarks.__main__ import Runner

    Measure = Callable[[Call, int, int], Awaitable[dict[str, float]]]

ROOT = Path(__file__).resolve().parent.parent
SDK_JS = ROOT / "sdks" / "js"


async def _serving(group: Group, n: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while (
        sum(1 for w in group.workers if w.state == "serving" and not w.stopping) != n
        or len(group.workers) != n
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pool did not reach {n} serving workers")
        await asyncio.sleep(0.05)


def _row(
    runner: Runner, scenario: str, stack: str, results: list[dict[str, float]], **extra: Any
) -> None:
    row: dict[str, Any] = {"scenario": scenario, "mode": "concurrent", "stack": stack, **extra}
    row["rounds"] = results
    for key in results[0]:
        row[key] = statistics.median(r[key] for r in results)
    runner.rows.append(row)
    runner.print_row(row)


async def pool_scaling(runner: Runner, url: str, measure: Measure) -> None:
    group = Group(
        name="bench_cpu",
        command=[sys.executable, "-m", "benchmarks.cpu_worker", url],
        cells=("bench_cpu",),
        services=("bench_cpu",),
        desired=1,
    )
    supervisor = Supervisor([group], Settings(heartbeat=0.2), "bench")
    stop = asyncio.Event()
    running = asyncio.ensure_future(supervisor.run(stop))
    caller = make_body(nats_plugin, nats_url=url)
    await caller.start(serve=False)

    async def call(payload: dict[str, Any]) -> dict[str, Any]:
        return await caller.request("bench_cpu", "work", {}, schema="bench/v1/Work", timeout=60)

    count = runner.args.cpu_requests
    one: list[dict[str, float]] = []
    two: list[dict[str, float]] = []
    try:
        for _ in range(runner.args.rounds):
            supervisor.scale(group, 1)
            await _serving(group, 1)
            await measure(call, max(10, count // 10), 16)  # warm-up
            one.append(await measure(call, count, 16))
            supervisor.scale(group, 2)
            await _serving(group, 2)
            await measure(call, max(10, count // 10), 16)
            result = await measure(call, count, 16)
            result["ratio"] = result["rps"] / one[-1]["rps"]
            result["p50_ratio"] = result["p50_us"] / one[-1]["p50_us"]
            two.append(result)
    finally:
        await caller.stop()
        stop.set()
        await running
    _row(runner, "pool cpu-bound", "1 worker", one, count=count, in_flight=16)
    _row(runner, "pool cpu-bound", "2 workers", two, count=count, in_flight=16)


async def polyglot(runner: Runner, url: str) -> None:
    node = shutil.which("node")
    if node is None or not (SDK_JS / "node_modules").is_dir():
        print("polyglot: skipped (needs node and npm ci in sdks/js)", flush=True)
        return
    python_side = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
        [sys.executable, "-m", "benchmarks.responder", url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    js_side = subprocess.Popen(  # noqa: ASYNC220
        [node, str(SDK_JS / "examples" / "echo.js")],
        env={"NATS_URL": url, "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert python_side.stdout is not None and js_side.stderr is not None
        if "ready" not in python_side.stdout.readline():
            raise RuntimeError("the Python responder did not start")
        if "serving" not in js_side.stderr.readline():
            raise RuntimeError("the JavaScript responder did not start")
        caller = make_body(nats_plugin, nats_url=url)
        await caller.start(serve=False)

        async def js_call(payload: dict[str, Any]) -> dict[str, Any]:
            return await caller.request(
                "bench_js", "echo", payload, schema="bench/v1/Echo", timeout=10
            )

        try:
            await runner.compare(
                "polyglot echo", ("python cell", cbs_call(caller)), [("javascript cell", js_call)]
            )
        finally:
            await caller.stop()
    finally:
        for proc in (python_side, js_side):
            proc.terminate()
            proc.wait(10)
