"""What is measured: each stack offers a responder and a ``call(payload)``.

Every stack encodes and decodes the same ~100-byte JSON payload on both sides,
with orjson, the JSON library CBS's codec uses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from cbs.kernel import Body, Cell, CellRegistry, Config, hookimpl

PAYLOAD: dict[str, Any] = {
    "name": "Ada Lovelace",
    "id": 1815,
    "tags": ["math", "engine"],
    "score": 0.97,
    "active": True,
    "note": "first program",
}
SUBJECT_RAW = "bench.echo"
SCHEMA = "bench/v1/Echo"

Call = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def echo_handler(payload: dict[str, Any]) -> dict[str, Any]:
    return {"echo": payload["name"], "n": payload["id"] + 1}


#: The JSON Schema of PAYLOAD, for the ``schemas`` scenario (cbs-schemas).
ECHO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "id": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 16},
        "score": {"type": "number"},
        "active": {"type": "boolean"},
        "note": {"type": "string"},
    },
    "required": ["name", "id"],
    "additionalProperties": False,
}


def bench_cell(**options: Any) -> Cell:
    cell = Cell(
        "bench_echo",
        service="bench",
        category="logic",
        version="1.0.0",
        purpose="Benchmark echo",
        max_concurrency=256,
    )
    cell.add_verb("echo", echo_handler, schema=SCHEMA, **options)
    return cell


class BenchPlugin:
    """Registers the benchmark cell (with endpoint options, e.g. ``json_schema``)."""

    name = "bench"

    def __init__(self, **options: Any) -> None:
        self.options = options

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cells.add(bench_cell(**self.options))


# -- raw nats-py ---------------------------------------------------------------------------


async def raw_responder(nc: Any) -> Any:
    """A queue-group subscriber replying with ``msg.respond``."""

    async def on_message(msg: Any) -> None:
        reply = await echo_handler(orjson.loads(msg.data))
        await msg.respond(orjson.dumps(reply))

    return await nc.subscribe(SUBJECT_RAW, queue="bench", cb=on_message)


def raw_call(nc: Any) -> Call:
    async def call(payload: dict[str, Any]) -> dict[str, Any]:
        msg = await nc.request(SUBJECT_RAW, orjson.dumps(payload), timeout=10)
        result: dict[str, Any] = orjson.loads(msg.data)
        return result

    return call


# -- CBS ---------------------------------------------------------------------------------------


def cbs_call(body: Body) -> Call:
    async def call(payload: dict[str, Any]) -> dict[str, Any]:
        return await body.request("bench", "echo", payload, timeout=10)

    return call


def direct_call() -> Call:
    """The baseline of the local bus: a direct await, encoding both ways."""

    async def call(payload: dict[str, Any]) -> dict[str, Any]:
        request = orjson.loads(orjson.dumps(payload))
        reply = await echo_handler(request)
        result: dict[str, Any] = orjson.loads(orjson.dumps(reply))
        return result

    return call


def make_body(*extra: Any, cells: BenchPlugin | None = None, **config: Any) -> Body:
    return Body(config, plugins=[cells or BenchPlugin(), *extra], autoload=False)
