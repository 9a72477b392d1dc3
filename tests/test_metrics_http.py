"""cbs-metrics: the HTTP endpoint (/metrics, /healthz, /readyz, the status
page), readiness following the NATS connection, and ``cbs run --metrics-port``
as a user runs it. Every process started here is stopped here, by pid."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import ConfigError
from cbs.metrics import plugin as metrics_plugin
from cbs.metrics.plugin import HEALTH, server_url
from cbs.nats import plugin as nats_plugin

CLI = [sys.executable, "-m", "cbs.kernel.cli"]


def get(url: str) -> tuple[int, str, str]:
    """Status, content type and text of a GET (4xx and 5xx included)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


async def aget(url: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(get, url)


async def wait_until(check: Callable[[], Any], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not {what} within {seconds} s")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_", "OTEL_"))}
    env.update(extra)
    return env


async def test_off_by_default(make_body: Any) -> None:
    body = make_body(greeter_plugin, metrics_plugin)
    await body.start()
    assert body.config["metrics_port"] is None
    assert server_url(body) is None


async def test_endpoints_on_the_local_bus(make_body: Any) -> None:
    body = make_body(greeter_plugin, metrics_plugin, config={"metrics_port": 0})
    await body.start()
    url = server_url(body)
    assert url is not None and url.startswith("http://127.0.0.1:")
    await body.request("greeter", "say_hello", {"name": "x"})

    status, content_type, text = await aget(url + "metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert re.search(r'^cbs_server_requests_total\{cell="greet",.*\} [1-9]', text, re.M)
    assert "process_cpu_seconds_total" in text or "python_info" in text  # the default registry

    status, content_type, text = await aget(url + "healthz")
    assert (status, content_type, json.loads(text)) == (200, "application/json", {"alive": True})

    status, _, text = await aget(url + "readyz")
    assert status == 200
    assert json.loads(text) == {
        "ready": True,
        "state": "started",
        "bus": {"transport": "local", "connected": True},
        "cells": {
            "prompt_name": "registered",
            "greet": "registered",
            "print_greeting": "registered",
        },
    }

    status, content_type, page = await aget(url)
    assert status == 200 and content_type == "text/html; charset=utf-8"
    assert '<tr id="cell-greet">' in page and "<code>cbs.greeter.say_hello</code>" in page

    assert (await aget(url + "nope"))[0] == 404

    # Not ready while a start goes on after Body.start (cbs-spec adding cells).
    with body.not_ready("the spec's cells are starting"):
        status, _, text = await aget(url + "readyz")
        assert status == 503
        assert json.loads(text)["waiting_for"] == ["the spec's cells are starting"]
    assert (await aget(url + "readyz"))[0] == 200

    # Not ready while draining (stopping), gone once stopped.
    body.stash[HEALTH].stopping = True
    status, _, text = await aget(url + "readyz")
    assert status == 503 and json.loads(text)["state"] == "stopping"
    await body.stop()
    with pytest.raises(urllib.error.URLError):
        await aget(url + "healthz")


async def test_a_port_in_use_fails_the_start(make_body: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        body = make_body(greeter_plugin, metrics_plugin, config={"metrics_port": port})
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await body.start()
    assert body.state == "stopped"


async def test_readyz_follows_the_nats_connection(nats_server: Any, make_body: Any) -> None:
    config = {"nats_url": nats_server.url, "metrics_port": 0}
    body = make_body(nats_plugin, greeter_plugin, metrics_plugin, config=config)
    await body.start()
    url = server_url(body)
    assert url is not None

    async def ready() -> bool:
        return (await aget(url + "readyz"))[0] == 200

    async def not_ready() -> bool:
        status, _, text = await aget(url + "readyz")
        return status == 503 and json.loads(text)["bus"] == {
            "transport": "nats",
            "connected": False,
        }

    assert await ready()
    nats_server.kill()
    await wait_until(not_ready, 15, "not ready after the server went away")
    assert (await aget(url + "healthz"))[0] == 200  # alive all the same
    nats_server.start()
    await wait_until(ready, 30, "ready again after the server came back")
    assert await body.request("greeter", "say_hello", {"name": "back"}) == {
        "message": "Hello back!"
    }


async def test_cbs_run_metrics_port_after_100_requests(nats_server: Any, make_body: Any) -> None:
    """The acceptance run: ``cbs run --metrics-port`` with the plugins found
    through their entry points, 100 requests, then a scrape."""
    env = clean_env(CBS_PLUGINS="greeter,nats,tracing,metrics")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, stopped below by pid
        [*CLI, "run", "--nats-url", nats_server.url, "--metrics-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url, lines = None, []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stderr.readline)
            lines.append(line)
            if found := re.search(r"serving (http://127\.0\.0\.1:\d+/)", line):
                url = found.group(1)
            if "serving cells" in line or not line:
                break
        assert url is not None, "".join(lines)

        caller = make_body(nats_plugin, greeter_plugin, config={"nats_url": nats_server.url})
        await caller.start(serve=False)
        for i in range(100):
            await caller.request("greeter", "say_hello", {"name": f"n{i}"})

        status, _, text = await aget(url + "metrics")
        assert status == 200
        labels = 'cell="greet",service="greeter",subject="cbs.greeter.say_hello",verb="say_hello"'
        assert f"cbs_server_requests_total{{{labels}}} 100.0" in text
        assert f"cbs_server_request_duration_seconds_count{{{labels}}} 100.0" in text
        assert 'cbs_cell_instances_up{cell="greet",service="greeter",version="1.0.0"} 1.0' in text
        assert "cbs_cells_up 3.0" in text
        assert (await aget(url + "readyz"))[0] == 200
        status, _, page = await aget(url)
        assert re.search(r'<tr id="cell-greet">.*?<td class="num">100</td>', page, re.S)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.communicate, timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.communicate, timeout=10)
    assert proc.returncode == 0


def test_cbs_plugins_lists_both_and_stays_light() -> None:
    env = clean_env(CBS_PLUGINS="tracing,metrics")
    listed = subprocess.run(
        [*CLI, "plugins", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    report = {p["name"]: p for p in json.loads(listed.stdout)}
    assert report["tracing"]["distribution"] == "cbs-tracing"
    assert report["tracing"]["registered"] == {
        "middleware": ["tracing", "tracing"],
        "options": ["tracing_file", "tracing_log_ids"],
    }
    assert report["metrics"]["distribution"] == "cbs-metrics"
    assert report["metrics"]["registered"] == {
        "middleware": ["metrics", "metrics"],
        "options": ["metrics_port", "metrics_host"],
    }
    # Listing them imports neither OpenTelemetry nor prometheus_client.
    code = (
        "import sys; from cbs.kernel import Body; from cbs.kernel.commands import plugins_report;"
        "plugins_report(Body());"
        "heavy = {'opentelemetry', 'prometheus_client'};"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
