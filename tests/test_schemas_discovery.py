"""Discovery advertises the JSON Schemas of verbs: ``$SRV.INFO`` endpoint
metadata on a real NATS (read by another body that does not have the cell),
and the ``endpoints`` of ``cbs cells --json`` rows, installed or discovered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import orjson
from cbs_process import run_cbs
from schema_cells import GREETING, NameV2, cli_env, greeter

import cbs.nats.plugin
import cbs.schemas.plugin
from cbs.kernel import Body, Directory
from cbs.kernel.commands import cells_report
from cbs.schemas import document, fingerprint
from cbs.testing import CellsPlugin

MakeBody = Callable[..., Body]


def say_hello_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    (row,) = [r for r in rows if r["id"] == "greet"]
    (endpoint,) = [e for e in row["endpoints"] if e["verb"] == "say_hello"]
    return endpoint


def check_advertised(endpoint: dict[str, Any]) -> None:
    meta = endpoint["metadata"]
    assert endpoint["schema"] == "demo/v2/Name"
    assert meta["cbs.schema.hash"] == fingerprint(document(NameV2))
    assert orjson.loads(meta["cbs.schema.json"]) == document(NameV2)
    assert orjson.loads(meta["cbs.reply_schema.json"]) == GREETING
    assert set(orjson.loads(meta["cbs.also_accepts.json"])) == {"demo/v1/Name"}


async def test_installed_rows_carry_the_schemas(make_body: MakeBody) -> None:
    body = make_body(cbs.schemas.plugin, CellsPlugin(greeter()))
    check_advertised(say_hello_row(cells_report(body)))
    plain = [e for e in cells_report(body)[0]["endpoints"] if e["verb"] == "plain"]
    assert plain[0]["metadata"] == {}


async def test_srv_info_advertises_them_to_a_body_without_the_cell(
    nats_server: Any, make_body: MakeBody
) -> None:
    config = {"transport": "nats", "nats_url": nats_server.url}
    server = make_body(cbs.nats.plugin, cbs.schemas.plugin, CellsPlugin(greeter()), config=config)
    await server.start()
    caller = make_body(cbs.nats.plugin, config=config)  # neither the cell nor cbs-schemas
    await caller.start(serve=False)
    rows = await caller.capabilities.require(Directory, needed_by="test").list_cells()
    check_advertised(say_hello_row(rows))


async def test_cbs_cells_json_on_nats_shows_them(make_body: MakeBody, nats_server: Any) -> None:
    config = {"transport": "nats", "nats_url": nats_server.url}
    server = make_body(cbs.nats.plugin, cbs.schemas.plugin, CellsPlugin(greeter()), config=config)
    await server.start()
    # In a thread: this loop must keep answering $SRV.INFO meanwhile.
    done = await asyncio.to_thread(
        run_cbs, "cells", "--json", "--nats-url", nats_server.url, env=cli_env()
    )
    assert done.returncode == 0, done.stderr
    check_advertised(say_hello_row(json.loads(done.stdout)))
