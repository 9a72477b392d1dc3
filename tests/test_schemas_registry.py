"""The schema registry on a real NATS with JetStream: a body publishes every
request schema of its verbs when it starts serving them (v1, then v2), the
same content twice adds no version, a caller without the cell reads them
with ``cbs schema get``, and ``cbs schema check --against-registry``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cbs_process import run_cbs
from schema_cells import NameV1, NameV2, cli_env, greeter

import cbs.nats.plugin
import cbs.schemas.plugin
from cbs.kernel import Body
from cbs.nats import NatsConnection
from cbs.schemas import Registry, document, published
from cbs.testing import CellsPlugin

MakeBody = Callable[..., Body]


async def serving(make_body: MakeBody, url: str, version: str = "2.0.0") -> Body:
    config = {"transport": "nats", "nats_url": url}
    body = make_body(
        cbs.nats.plugin, cbs.schemas.plugin, CellsPlugin(greeter(version)), config=config
    )
    await body.start()
    await published(body)
    return body


def registry_of(body: Body) -> Registry:
    conn = body.capabilities.require(NatsConnection, needed_by="test")
    return Registry(conn.jetstream(timeout=5.0))


async def cbs_cli(*args: str) -> Any:
    # In a thread: this loop keeps serving meanwhile.
    return await asyncio.to_thread(run_cbs, *args, env=cli_env())


async def test_published_versions_and_cbs_schema_get(nats_server: Any, make_body: MakeBody) -> None:
    body = await serving(make_body, nats_server.url)
    versions = await registry_of(body).history("greeter", "say_hello")
    assert [(e["version"], e["label"]) for e in versions] == [
        (1, "demo/v1/Name"),
        (2, "demo/v2/Name"),
    ]
    assert versions[1]["schema"] == document(NameV2)
    assert versions[1]["reply_label"] == "demo/v1/Greeting"
    assert await registry_of(body).history("greeter", "plain") == []

    again = await serving(make_body, nats_server.url, version="2.0.1")  # same schemas
    assert len(await registry_of(again).history("greeter", "say_hello")) == 2

    latest = await cbs_cli("schema", "get", "greeter.say_hello", "--nats-url", nats_server.url)
    assert latest.returncode == 0, latest.stderr
    assert json.loads(latest.stdout) == document(NameV2)
    first = await cbs_cli(
        "schema", "get", "greeter.say_hello", "--version", "1", "--nats-url", nats_server.url
    )
    assert json.loads(first.stdout) == document(NameV1)
    missing = await cbs_cli("schema", "get", "greeter.nothing", "--nats-url", nats_server.url)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "cbs: error: no schema of greeter.nothing in the registry"
    ]


async def test_check_against_the_registry(
    nats_server: Any, make_body: MakeBody, tmp_path: Path
) -> None:
    await serving(make_body, nats_server.url)
    v2 = document(NameV2)
    narrowed = {**v2, "required": [*v2["required"], "title"], "$id": "demo/v2/Name"}
    path = tmp_path / "name.json"
    path.write_text(json.dumps(narrowed))
    args = ("schema", "check", "--against-registry", "greeter.say_hello", str(path))
    done = await cbs_cli(*args, "--nats-url", nats_server.url)
    assert done.returncode == 1
    assert "BACKWARD: title: required_added" in done.stdout
    bumped = tmp_path / "v3.json"
    bumped.write_text(json.dumps({**narrowed, "$id": "demo/v3/Name"}))
    args = ("schema", "check", "--against-registry", "greeter.say_hello", str(bumped))
    assert (await cbs_cli(*args, "--nats-url", nats_server.url)).returncode == 0
    # TRANSITIVE: v1 payloads ({"name"}) are refused by v2 as well.
    transitive = await cbs_cli(
        *args, "--mode", "BACKWARD_TRANSITIVE", "--json", "--nats-url", nats_server.url
    )
    kinds = {c["kind"] for c in json.loads(transitive.stdout)["changes"]}
    assert {"required_added", "field_removed"} <= kinds


def test_schema_get_needs_a_shared_nats() -> None:
    done = run_cbs("schema", "get", "greeter.say_hello", env=cli_env(CBS_TRANSPORT="local"))
    assert done.returncode == 2
    assert "needs a shared NATS server" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
