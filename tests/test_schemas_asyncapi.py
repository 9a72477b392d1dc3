"""``cbs asyncapi``: the AsyncAPI 3.0 document of installed and of discovered
cells, validated against the official AsyncAPI 3.0 JSON Schema of the npm
package ``@asyncapi/specs`` (installed once into pytest's cache)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cbs_process import run_cbs
from schema_cells import GREETING, NameV1, NameV2, cli_env, greeter

import cbs.nats.plugin
import cbs.schemas.plugin
from cbs.kernel import Body
from cbs.schemas import document
from cbs.schemas.asyncapi import document_for, installed_rows
from cbs.testing import CellsPlugin

MakeBody = Callable[..., Body]
SPECS = "@asyncapi/specs@6"


@pytest.fixture(scope="module")
def asyncapi_validator(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    folder = (
        Path(cache.mkdir("asyncapi-specs"))
        if cache is not None
        else tmp_path_factory.mktemp("asyncapi-specs")
    )
    schema = folder / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"
    if not schema.is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: cannot fetch @asyncapi/specs")
        done = subprocess.run(
            [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", SPECS],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0 or not schema.is_file():
            pytest.skip(f"npm could not install {SPECS}: {done.stderr.strip()[-200:]}")
    return jsonschema.Draft7Validator(json.loads(schema.read_text()))


def valid(validator: Any, doc: dict[str, Any]) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    assert errors == []


def test_the_validator_refuses_a_broken_document(asyncapi_validator: Any) -> None:
    doc = document_for([])
    valid(asyncapi_validator, doc)
    assert list(asyncapi_validator.iter_errors({**doc, "asyncapi": "2.6.0"}))


def test_installed_cells(asyncapi_validator: Any, make_body: MakeBody) -> None:
    body = make_body(cbs.schemas.plugin, CellsPlugin(greeter()))
    doc = document_for(installed_rows(body))
    valid(asyncapi_validator, doc)
    channel = doc["channels"]["greeter_say_hello"]
    assert channel["address"] == "cbs.greeter.say_hello"
    assert set(channel["messages"]) == {"request_demo_v2_Name", "request_demo_v1_Name"}
    messages = doc["components"]["messages"]
    v2 = messages["greeter_say_hello_request_demo_v2_Name"]["payload"]["schema"]
    assert v2["properties"]["payload"] == {
        k: v for k, v in document(NameV2).items() if k != "$schema"
    }
    assert v2["properties"]["schema"] == {"const": "demo/v2/Name"}
    v1 = messages["greeter_say_hello_request_demo_v1_Name"]["payload"]["schema"]
    assert v1["properties"]["payload"]["required"] == document(NameV1)["required"]
    reply = messages["greeter_say_hello_reply"]["payload"]["schema"]
    assert reply["properties"]["payload"] == GREETING
    error = messages["greeter_say_hello_error"]["payload"]["schema"]
    assert error["properties"]["error"] == {"$ref": "#/components/schemas/Error"}
    operation = doc["operations"]["greeter_say_hello"]
    assert operation["action"] == "receive"
    assert operation["reply"]["channel"] == {"$ref": "#/channels/greeter_say_hello_reply"}


def test_cli_on_installed_cells(asyncapi_validator: Any) -> None:
    done = run_cbs("asyncapi", env=cli_env(CBS_TRANSPORT="local"))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    valid(asyncapi_validator, doc)
    assert "greeter_say_hello" in doc["operations"]  # cbs-greeter's own cell


async def test_cli_on_discovered_cells(
    asyncapi_validator: Any, nats_server: Any, make_body: MakeBody
) -> None:
    config = {"transport": "nats", "nats_url": nats_server.url}
    body = make_body(cbs.nats.plugin, cbs.schemas.plugin, CellsPlugin(greeter()), config=config)
    await body.start()
    done = await asyncio.to_thread(
        run_cbs, "asyncapi", "--nats-url", nats_server.url, env=cli_env()
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    valid(asyncapi_validator, doc)
    assert doc["servers"]["nats"]["protocol"] == "nats"
    messages = doc["components"]["messages"]
    v2 = messages["greeter_say_hello_request_demo_v2_Name"]["payload"]["schema"]
    assert v2["properties"]["payload"]["required"] == ["first", "last"]
