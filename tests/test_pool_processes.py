"""cbs-pool with real processes: a supervisor (``cbs run --workers``), its
workers, a nats-server, and requests under load while workers are killed,
crash, are restarted and scaled. Processes are killed only by pid."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cbs_process import CbsProcess, run_cbs, wait_gone
from pool_kit import GREET_JS, Load, cbs_env, need_node, wait_group

import cbs.nats.plugin
from cbs.kernel import Body
from cbs.testing import MakeBody


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Any]:
    import nats

    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


def start_pool(
    processes: list[CbsProcess], url: str, pool: str, *args: str, **env: str
) -> CbsProcess:
    proc = CbsProcess("run", "--nats-url", url, "--pool-id", pool, *args, env=cbs_env(**env))
    processes.append(proc)
    return proc


async def caller(make_body: MakeBody, url: str) -> Body:
    body = make_body(cbs.nats.plugin, config={"transport": "nats", "nats_url": url})
    await body.start(serve=False)
    return body


def serving(n: int) -> Any:
    return lambda g: g["serving"] == n and g["alive"] == n


async def test_a_worker_killed_with_sigkill_under_load_is_replaced(
    nats_server: Any, nc: Any, make_body: MakeBody, processes: list[CbsProcess]
) -> None:
    pool = start_pool(processes, nats_server.url, "kill9", "--workers", "2")
    first = await wait_group(nc, "kill9", "cells", serving(2))
    load = Load(await caller(make_body, nats_server.url), timeout=2.0)
    load.start()
    await load.wait_count(100)
    victim = first["pids"][0]
    os.kill(victim, signal.SIGKILL)
    assert wait_gone(victim, 10)
    healed = await wait_group(
        nc,
        "kill9",
        "cells",
        lambda g: serving(2)(g) and g["restarts"] == 1 and victim not in g["pids"],
    )
    replaced = time.monotonic()
    await load.wait_count(200, after=replaced)
    await load.stop()
    assert load.failures(after=replaced) == []
    assert set(healed["pids"]) - set(first["pids"])  # a new worker
    code, _, err = pool.stop()
    assert code == 0, err
    assert re.search(rf"worker {victim} of cells exited \(killed by SIGKILL\)", err), err


async def test_a_crash_loop_is_reported_and_backs_off(
    nats_server: Any, nc: Any, tmp_path: Path, processes: list[CbsProcess]
) -> None:
    spec = tmp_path / "pool.toml"
    spec.write_text(
        "[[sidecar]]\n"
        'id = "crasher"\n'
        'language = "python"\n'
        f"command = {json.dumps(sys.executable)}\n"
        'args = ["-c", "raise SystemExit(3)"]\n'
        'health = "none"\n'
    )
    pool = start_pool(
        processes, nats_server.url, "loop", "--pool-file", str(spec), "--pool-backoff-max", "2"
    )
    pool.wait_for(r"crasher is crash-looping: 3 quick exits in a row")
    status = await wait_group(nc, "loop", "crasher", lambda g: g["restarts"] >= 5)
    assert status["state"] == "crash-loop"
    code, _, err = pool.stop()
    assert code == 0, err
    delays = [
        float(d) for d in re.findall(r"exited \(exit code 3\).*restarting in ([0-9.]+) s", err)
    ]
    # Exponential (0.5, 1, 2) then capped at --pool-backoff-max, never a tight spin.
    assert delays[:5] == [0.5, 1.0, 2.0, 2.0, 2.0], err
    assert err.count("is crash-looping") == 1


async def test_scale_up_shows_instances_and_scale_down_drains_without_failures(
    nats_server: Any, nc: Any, make_body: MakeBody, processes: list[CbsProcess]
) -> None:
    start_pool(processes, nats_server.url, "scaled", "--workers", "1")
    await wait_group(nc, "scaled", "cells", serving(1))
    env = cbs_env()
    up = run_cbs("scale", "greeter", "3", "--nats-url", nats_server.url, env=env)
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith("greeter: 3 workers in pool scaled"), up.stdout
    await wait_group(nc, "scaled", "cells", serving(3))
    deadline = time.monotonic() + 10
    while True:
        listed = run_cbs("cells", "--nats-url", nats_server.url, env=env)
        greet = [line for line in listed.stdout.splitlines() if line.startswith("greet ")]
        if greet and "instances=3" in greet[0]:
            break
        assert time.monotonic() < deadline, listed.stdout + listed.stderr
    assert "pool=3/3 serving" in greet[0], greet[0]
    load = Load(await caller(make_body, nats_server.url))
    load.start()
    await load.wait_count(100)
    down = run_cbs("scale", "greeter", "1", "--nats-url", nats_server.url, env=env)
    assert down.returncode == 0, down.stderr
    await wait_group(nc, "scaled", "cells", serving(1))
    await load.wait_count(100, after=time.monotonic())
    outcomes = await load.stop()
    assert load.failures() == [], load.failures()[:3]
    assert len(outcomes) >= 200


async def test_sighup_restarts_every_worker_with_no_failed_request(
    nats_server: Any, nc: Any, make_body: MakeBody, processes: list[CbsProcess]
) -> None:
    pool = start_pool(processes, nats_server.url, "hup", "--workers", "2")
    before = await wait_group(nc, "hup", "cells", serving(2))
    load = Load(await caller(make_body, nats_server.url))
    load.start()
    await load.wait_count(100)
    pool.popen.send_signal(signal.SIGHUP)
    pool.wait_for(r"rolling restart done", 60)
    after = await wait_group(nc, "hup", "cells", serving(2))
    await load.wait_count(100, after=time.monotonic())
    await load.stop()
    assert load.failures() == [], load.failures()[:3]
    assert not set(after["pids"]) & set(before["pids"])
    assert after["restarts"] == 0  # planned replacements are no restarts


def test_scale_with_nobody_serving_is_one_line(nats_server: Any) -> None:
    found = run_cbs("scale", "greeter", "2", "--nats-url", nats_server.url, env=cbs_env())
    assert found.returncode == 1
    assert found.stderr.count("\n") == 1 and "no pool" in found.stderr, found.stderr


def test_workers_need_a_shared_bus() -> None:
    found = run_cbs("run", "--workers", "2", "--transport", "local", env=cbs_env())
    assert found.returncode == 2
    assert found.stderr == (
        "cbs: error: cbs run --workers needs a bus other processes share (e.g. --nats-url URL)\n"
    )


async def test_a_javascript_sidecar_is_supervised_listed_and_healed(
    nats_server: Any, nc: Any, tmp_path: Path, make_body: MakeBody, processes: list[CbsProcess]
) -> None:
    node = need_node()
    spec = tmp_path / "pool.toml"
    spec.write_text(
        "[[sidecar]]\n"
        'id = "greet_js"\n'
        'service = "greeter"\n'
        'language = "javascript"\n'
        f"command = {json.dumps(node)}\n"
        f"args = [{json.dumps(str(GREET_JS))}]\n"
        "replicas = 2\n"
    )
    pool = start_pool(
        processes, nats_server.url, "poly", "--pool-file", str(spec), "--cells", "prompt_name"
    )
    first = await wait_group(nc, "poly", "greet_js", serving(2))
    await wait_group(nc, "poly", "cells", serving(1))
    listed = run_cbs("cells", "--nats-url", nats_server.url, "--json", env=cbs_env())
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows["greet"]["language"] == "javascript"
    assert rows["greet"]["instances"] == 2
    assert rows["prompt_name"]["language"] == "python"
    load = Load(await caller(make_body, nats_server.url), timeout=2.0)
    load.start()
    await load.wait_count(50)
    victim = first["pids"][0]
    os.kill(victim, signal.SIGKILL)
    assert wait_gone(victim, 10)
    await wait_group(nc, "poly", "greet_js", lambda g: serving(2)(g) and g["restarts"] == 1)
    replaced = time.monotonic()
    await load.wait_count(100, after=replaced)
    await load.stop()
    assert load.failures(after=replaced) == []
    scaled = run_cbs("scale", "greeter", "1", "--nats-url", nats_server.url, env=cbs_env())
    assert scaled.returncode == 0, scaled.stderr
    await wait_group(nc, "poly", "greet_js", serving(1))
    code, _, err = pool.stop()
    assert code == 0, err


async def test_pool_numbers_are_metrics_of_the_supervisor(
    nats_server: Any, nc: Any, processes: list[CbsProcess]
) -> None:
    import urllib.request

    from cbs.nats.server import free_port

    port = free_port()
    start_pool(
        processes,
        nats_server.url,
        "met",
        "--workers",
        "2",
        "--metrics-port",
        str(port),
        "--pool-worker-set",
        "metrics_port=0",  # each worker its own free port
    )
    await wait_group(nc, "met", "cells", serving(2))

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(scrape)
    labels = '{group="cells",language="python",pool="met"}'
    assert f"cbs_pool_workers{labels} 2.0" in text, text
    assert f"cbs_pool_workers_alive{labels} 2.0" in text
    assert f"cbs_pool_workers_serving{labels} 2.0" in text
    assert f"cbs_pool_restarts_total{labels} 0.0" in text
    assert f"cbs_pool_crash_loop{labels} 0.0" in text
