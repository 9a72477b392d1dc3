"""Cells across real processes on a real nats-server; discovery; the embedded
server's lifetime. Every process started here is stopped here, by pid."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from typing import Any

import nats
import pytest
from cbs_process import CLI, CbsProcess, alive, wait_gone

from cbs.contracts import BadRequest
from cbs.greeter import plugin as greeter_plugin
from cbs.nats import plugin as nats_plugin

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}
ENV["CBS_PLUGINS"] = "greeter,nats"


async def srv(url: str, subject: str, wait: float = 1.0) -> list[dict[str, Any]]:
    """All replies to a plain-NATS request on ``subject`` within ``wait`` seconds."""
    nc = await nats.connect(url)
    replies: list[dict[str, Any]] = []
    try:
        inbox = nc.new_inbox()

        async def collect(msg: Any) -> None:
            replies.append(json.loads(msg.data))

        sub = await nc.subscribe(inbox, cb=collect)
        await nc.publish(subject, b"", reply=inbox)
        await asyncio.sleep(wait)
        await sub.unsubscribe()
    finally:
        await nc.close()
    return replies


def serve_in_two_processes(url: str, processes: list[CbsProcess]) -> None:
    for _ in range(2):
        proc = CbsProcess("run", "--nats-url", url, env=ENV)
        processes.append(proc)
        proc.wait_for("serving cells")


async def test_two_processes_share_the_load_and_discovery_sees_both(
    nats_server: Any, processes: list[CbsProcess], make_body: Any
) -> None:
    serve_in_two_processes(nats_server.url, processes)
    # One PING reply per cell instance: 3 cells x 2 processes.
    pings = await srv(nats_server.url, "$SRV.PING")
    assert len(pings) == 6
    assert all(p["type"] == "io.nats.micro.v1.ping_response" for p in pings)
    assert sorted(p["name"] for p in pings) == sorted(
        ["prompt_name", "greet", "print_greeting"] * 2
    )

    caller = make_body(nats_plugin, greeter_plugin, config={"nats_url": nats_server.url})
    await caller.start(serve=False)
    for i in range(100):
        assert await caller.request("greeter", "say_hello", {"name": f"n{i}"})

    stats = [s for s in await srv(nats_server.url, "$SRV.STATS.greet") if s["name"] == "greet"]
    counts = [s["endpoints"][0]["num_requests"] for s in stats]
    assert len(counts) == 2 and sum(counts) == 100 and min(counts) > 0, counts

    listed = await asyncio.to_thread(
        subprocess.run,
        [*CLI, "cells", "--json", "--nats-url", nats_server.url],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    greet = next(c for c in json.loads(listed.stdout) if c["id"] == "greet")
    assert greet["instances"] == 2 and greet["requests"] == 100
    assert all(n > 0 for n in (v["requests"] for v in greet["per_instance"].values()))

    for proc in processes:
        assert proc.stop()[0] == 0


async def test_discovery_replies_have_the_adr32_shapes(nats_server: Any, make_body: Any) -> None:
    body = make_body(nats_plugin, greeter_plugin, config={"nats_url": nats_server.url})
    await body.start(serve=["greet"])
    await body.request("greeter", "say_hello", {"name": "x"})
    with pytest.raises(BadRequest):  # counted as an error
        await body.request("greeter", "say_hello", {})
    # So are bytes that are no envelope, answered before any middleware runs.
    foreign = await nats.connect(nats_server.url)
    try:
        answer = await foreign.request("cbs.greeter.say_hello", b"\xff not json", timeout=5)
    finally:
        await foreign.close()
    assert json.loads(answer.data)["error"]["code"] == "BadRequest"
    [ping] = await srv(nats_server.url, "$SRV.PING.greet", 0.5)
    assert set(ping) == {"type", "name", "id", "version", "metadata"}
    [info] = await srv(nats_server.url, f"$SRV.INFO.greet.{ping['id']}", 0.5)
    assert info["type"] == "io.nats.micro.v1.info_response"
    assert set(info) == {"type", "name", "id", "version", "metadata", "description", "endpoints"}
    assert info["endpoints"] == [
        {
            "name": "say_hello",
            "subject": "cbs.greeter.say_hello",
            "queue_group": "greeter",
            "metadata": {"cbs.schema": "demo/v1/Name", "cbs.reply_schema": "demo/v1/Greeting"},
        }
    ]
    server = info["metadata"].pop("cbs.server")  # which server it is on (no cluster: no name)
    assert server.startswith("cbs-") and "cbs.cluster" not in info["metadata"]
    assert info["metadata"] == {
        "cbs.category": "logic",
        "cbs.service": "greeter",
        "cbs.language": "python",
    }
    assert all(isinstance(v, str) for v in info["metadata"].values())  # ADR-32: strings
    [stats] = await srv(nats_server.url, "$SRV.STATS.greet", 0.5)
    assert stats["type"] == "io.nats.micro.v1.stats_response"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stats["started"])
    [endpoint] = stats["endpoints"]
    assert endpoint["num_requests"] == 3 and endpoint["num_errors"] == 2
    assert endpoint["last_error"] == "BadRequest"
    assert endpoint["processing_time"] >= endpoint["average_processing_time"] > 0
    assert await srv(nats_server.url, "$SRV.PING.nobody", 0.3) == []

    # nats-py's own micro client types parse our replies.
    from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

    assert ServicePing.from_dict(ping).name == "greet"
    assert ServiceInfo.from_dict(info).endpoints[0].subject == "cbs.greeter.say_hello"
    assert ServiceStats.from_dict(stats).endpoints[0].num_requests == 3


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_embedded_server_never_outlives_its_body(processes: list[CbsProcess], how: int) -> None:
    proc = CbsProcess("run", env=ENV)
    processes.append(proc)
    match = proc.wait_for(r"embedded nats-server at (\S+) \(pid (\d+)\)")
    proc.wait_for("serving cells")
    server_pid = int(match.group(2))
    assert alive(server_pid)
    proc.popen.send_signal(how)
    code = proc.popen.wait(20)
    assert code == (0 if how != signal.SIGKILL else -signal.SIGKILL)
    assert wait_gone(server_pid), f"nats-server {server_pid} outlived its body"


def test_demo_over_the_embedded_server_leaves_nothing_behind() -> None:
    result = subprocess.run(
        [*CLI, "demo", "--name", "Ada"], env=ENV, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello Ada!\n"
    match = re.search(r"embedded nats-server at \S+ \(pid (\d+)\)", result.stderr)
    assert match, result.stderr
    assert wait_gone(int(match.group(1)), 5)


def test_cli_demo_across_processes(nats_server: Any, processes: list[CbsProcess]) -> None:
    server = CbsProcess("run", "--nats-url", nats_server.url, env=ENV)
    processes.append(server)
    server.wait_for("serving cells")
    demo = subprocess.run(
        [*CLI, "demo", "--no-serve", "--name", "Ada", "--nats-url", nats_server.url],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout == "Hello Ada!\n"
    call = subprocess.run(
        [*CLI, "call", "greeter.say_hello", '{"name": "Ada"}', "--nats-url", nats_server.url],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert call.stdout == '{"message": "Hello Ada!"}\n', call.stderr
    code, out, _ = server.stop()
    assert code == 0
    assert out == "Hello Ada!\n"  # the printer cell ran there
