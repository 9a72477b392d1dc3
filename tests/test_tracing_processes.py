"""One trace across three processes on a real nats-server: a caller
(``cbs call``), a process serving the ``relay`` cell, which asks the greeter,
and a process serving ``greet``. Each writes its spans to its own file
(``CBS_TRACING_FILE``); the plugins are found through their entry points, and
no cell knows about tracing. Every process started here is stopped here, by pid."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cbs_process import CLI, CbsProcess

RELAY = '''
"""A third-party cell that asks another cell: one request, two hops."""

import logging

from cbs.kernel import Cell, hookimpl

relay = Cell("relay", category="logic", version="1.0.0", purpose="Asks the greeter")
_bodies = []


@relay.verb("relay", schema="relay/v1/Name", reply_schema="demo/v1/Greeting")
async def relay_hello(payload):
    logging.getLogger("relay").warning("relaying to the greeter")
    return await _bodies[-1].request("greeter", "say_hello", {"name": payload.get("name")})


@hookimpl
def cbs_register_cells(cells, config):
    cells.add(relay)


@hookimpl
def cbs_body_starting(body):
    _bodies.append(body)
'''


@pytest.fixture(scope="module")
def relay_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The relay plugin as an installed distribution (dist-info, entry point)."""
    site = tmp_path_factory.mktemp("relay-site")
    (site / "cbs_relay.py").write_text(textwrap.dedent(RELAY))
    info = site / "cbs_relay-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cbs-relay\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text("[cbs]\nrelay = cbs_relay\n")
    return site


def env_for(plugins: str, spans: Path, site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_", "OTEL_"))}
    env.update(CBS_PLUGINS=plugins, CBS_TRACING_FILE=str(spans), PYTHONPATH=str(site))
    return env


def read_spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def one(spans: list[dict[str, Any]], name: str, kind: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name and s["kind"] == f"SpanKind.{kind}"]
    assert len(found) == 1, [(s["name"], s["kind"]) for s in spans]
    return found[0]


def test_a_flow_across_three_processes_is_one_trace(
    nats_server: Any, relay_site: Path, tmp_path: Path, processes: list[CbsProcess]
) -> None:
    url = nats_server.url
    files = {name: tmp_path / f"{name}.jsonl" for name in ("caller", "relay", "greet")}
    greet = CbsProcess(
        "run",
        *("--cells", "greet", "--nats-url", url),
        env=env_for("greeter,nats,tracing", files["greet"], relay_site),
    )
    processes.append(greet)
    relay = CbsProcess(
        "run",
        *("--cells", "relay", "--nats-url", url),
        env=env_for("relay,greeter,nats,tracing", files["relay"], relay_site),
    )
    processes.append(relay)
    greet.wait_for("serving cells greet")
    relay.wait_for("serving cells relay")

    caller_env = env_for("relay,nats,tracing", files["caller"], relay_site)
    done = subprocess.run(
        [*CLI, "call", "relay.relay", '{"name": "Ada"}', "--nats-url", url],
        env=caller_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"message": "Hello Ada!"}
    _, _, relay_log = relay.stop()
    greet.stop()

    caller_spans = read_spans(files["caller"])
    relay_spans = read_spans(files["relay"])
    greet_spans = read_spans(files["greet"])
    c1 = one(caller_spans, "cbs.relay.relay", "CLIENT")
    s1 = one(relay_spans, "cbs.relay.relay", "SERVER")
    c2 = one(relay_spans, "cbs.greeter.say_hello", "CLIENT")
    s2 = one(greet_spans, "cbs.greeter.say_hello", "SERVER")
    everything = caller_spans + relay_spans + greet_spans
    assert len(everything) == 4
    trace_ids = {s["context"]["trace_id"] for s in everything}
    assert trace_ids == {c1["context"]["trace_id"]}
    assert c1["parent_id"] is None
    assert s1["parent_id"] == c1["context"]["span_id"]
    assert c2["parent_id"] == s1["context"]["span_id"]
    assert s2["parent_id"] == c2["context"]["span_id"]
    # Three processes, each named in its spans' resource.
    pids = {s["resource"]["attributes"]["process.pid"] for s in (c1, s1, s2)}
    assert len(pids) == 3
    assert {s["resource"]["attributes"]["service.name"] for s in everything} == {"cbs"}
    # The envelope id is the correlation id of a hop, on both of its sides.
    assert c1["attributes"]["messaging.message.id"] == s1["attributes"]["messaging.message.id"]
    assert c2["attributes"]["messaging.message.id"] == s2["attributes"]["messaging.message.id"]
    assert s2["attributes"]["cbs.cell"] == "greet"
    assert s2["attributes"]["messaging.system"] == "nats"

    # The relay's log line carries the trace id and its envelope id.
    trace_id = c1["context"]["trace_id"].removeprefix("0x")
    envelope_id = s1["attributes"]["messaging.message.id"]
    (line,) = [x for x in relay_log.splitlines() if "relaying to the greeter" in x]
    assert line.endswith(f"[trace_id={trace_id} envelope_id={envelope_id}]"), line


def test_a_failure_is_marked_on_every_span_of_the_flow(
    nats_server: Any, relay_site: Path, tmp_path: Path, processes: list[CbsProcess]
) -> None:
    url = nats_server.url
    files = {name: tmp_path / f"{name}.jsonl" for name in ("caller", "cells")}
    cells = CbsProcess(
        "run",
        "--nats-url",
        url,
        env=env_for("relay,greeter,nats,tracing", files["cells"], relay_site),
    )
    processes.append(cells)
    cells.wait_for("serving cells")
    done = subprocess.run(
        [*CLI, "call", "relay.relay", "{}", "--nats-url", url],
        env=env_for("relay,nats,tracing", files["caller"], relay_site),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("BadRequest:")
    cells.stop()
    spans = read_spans(files["caller"]) + read_spans(files["cells"])
    assert len(spans) == 4
    for span in spans:
        assert span["status"]["status_code"] == "ERROR"
        assert span["attributes"]["error.type"] == "BadRequest"
