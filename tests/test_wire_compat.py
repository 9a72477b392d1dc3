"""Wire compatibility: a foreign party (raw nats-py, hand-written JSON, no CBS
code) as a caller and as a cell, with a CBS body on the other side."""

from __future__ import annotations

import io
import json
import re
import uuid
from typing import Any

import nats
import pytest

from cbs.contracts import BadRequest
from cbs.greeter import make_print_greeting, make_prompt_name
from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import CellRegistry, Config, hookimpl
from cbs.nats import plugin as nats_plugin

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def test_foreign_caller(nats_server: Any, make_body: Any) -> None:
    body = make_body(nats_plugin, greeter_plugin, config={"nats_url": nats_server.url})
    await body.start(serve=["greet"])
    nc = await nats.connect(nats_server.url)
    try:
        request = (
            '{"id": "550e8400-e29b-41d4-a716-446655440000", "service": "greeter",'
            ' "verb": "say_hello", "schema": "demo/v1/Name", "payload": {"name": "Ada Lovelace"}}'
        )
        reply = json.loads((await nc.request("cbs.greeter.say_hello", request.encode())).data)
        assert reply == {
            "id": "550e8400-e29b-41d4-a716-446655440000",
            "service": "greeter",
            "verb": "say_hello",
            "schema": "demo/v1/Greeting",
            "payload": {"message": "Hello Ada Lovelace!"},
        }
        missing = request.replace('{"name": "Ada Lovelace"}', "{}")
        error = json.loads((await nc.request("cbs.greeter.say_hello", missing.encode())).data)
        assert error == {
            "id": "550e8400-e29b-41d4-a716-446655440000",
            "service": "greeter",
            "verb": "say_hello",
            "schema": "demo/v1/Error",
            "error": {
                "code": "BadRequest",
                "message": "Missing required field 'name'",
                "details": {"field": "name", "constraint": "required"},
            },
        }
        garbage = json.loads((await nc.request("cbs.greeter.say_hello", b"\x00garbage")).data)
        assert garbage["error"]["code"] == "BadRequest" and "payload" not in garbage
        assert UUID4.match(garbage["id"])
    finally:
        await nc.close()


class DemoEnds:
    """The CBS side serves prompt_name and print_greeting; greet is foreign."""

    name = "demo_ends"

    def __init__(self, out: io.StringIO) -> None:
        self.out = out

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cells.add(make_prompt_name(lambda prompt: "Grace"))
        cells.add(make_print_greeting(self.out))


async def test_foreign_cell_in_the_demo_flow(nats_server: Any, make_body: Any) -> None:
    seen: list[dict[str, Any]] = []
    nc = await nats.connect(nats_server.url)

    async def foreign_greeter(msg: Any) -> None:
        request = json.loads(msg.data)  # what a Go, Rust or Dart cell would do
        seen.append(request)
        name = request["payload"].get("name")
        head = f'{{"id": "{request["id"]}", "service": "greeter", "verb": "say_hello", '
        if not name:
            body = head + (
                '"schema": "demo/v1/Error", "error": {"code": "BadRequest", '
                '"message": "Missing required field \'name\'"}}'
            )
        else:
            body = head + f'"schema": "demo/v1/Greeting", "payload": {{"message": "Hi {name}!"}}}}'
        await msg.respond(body.encode())

    await nc.subscribe("cbs.greeter.say_hello", queue="greeter", cb=foreign_greeter)
    try:
        out = io.StringIO()
        cbs_body = make_body(nats_plugin, DemoEnds(out), config={"nats_url": nats_server.url})
        await cbs_body.start()
        name = (await cbs_body.request("prompt_name", "read", {}))["name"]
        greeting = await cbs_body.request(
            "greeter", "say_hello", {"name": name}, schema="demo/v1/Name"
        )
        await cbs_body.request("printer", "write", greeting)
        assert out.getvalue() == "Hi Grace!\n"
        with pytest.raises(BadRequest, match="Missing required field 'name'"):
            await cbs_body.request("greeter", "say_hello", {"name": ""}, schema="demo/v1/Name")
    finally:
        await nc.close()
    # What the foreign cell received is exactly the contract's envelope.
    assert set(seen[0]) == {"id", "service", "verb", "schema", "payload"}
    assert seen[0]["service"] == "greeter" and seen[0]["verb"] == "say_hello"
    assert seen[0]["schema"] == "demo/v1/Name" and seen[0]["payload"] == {"name": "Grace"}
    assert UUID4.match(seen[0]["id"]) and uuid.UUID(seen[0]["id"]).version == 4
