"""cbs-schemas: requests checked against a verb's JSON Schema before the
handler, BadRequest details naming the field and the rule, v1 payloads
upcast to v2, verbs without a schema untouched (no middleware at all)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
from schema_cells import greeter

import cbs.schemas.plugin
from cbs.contracts import BadRequest
from cbs.kernel import Body, Cell, PluginError, Served
from cbs.schemas import SchemaError, Upcast, document, schema_of
from cbs.schemas.validation import schema_middleware
from cbs.testing import CellsPlugin

MakeBody = Callable[..., Body]


@attrs.define
class Inner:
    n: int


@attrs.define
class Model:
    kind: Literal["a", "b"]
    items: list[Inner]
    note: str | None = None


async def started(make_body: MakeBody, cell: Cell) -> Body:
    body = make_body(cbs.schemas.plugin, CellsPlugin(cell))
    await body.start()
    return body


async def test_a_valid_v2_request_reaches_the_handler(make_body: MakeBody) -> None:
    body = await started(make_body, greeter())
    reply = await body.request(
        "greeter", "say_hello", {"first": "Ada", "last": "Lovelace"}, schema="demo/v2/Name"
    )
    assert reply == {"message": "Hello Ada Lovelace!"}


@pytest.mark.parametrize(
    ("payload", "field", "constraint"),
    [
        ({"first": "Ada"}, "last", "required"),
        ({"first": "Ada", "last": 3}, "last", "type"),
        ({"first": "Ada", "last": "L", "age": 36}, "age", "additionalProperties"),
    ],
)
async def test_an_invalid_request_is_bad_request_naming_field_and_rule(
    make_body: MakeBody, payload: dict[str, Any], field: str, constraint: str
) -> None:
    body = await started(make_body, greeter())
    with pytest.raises(BadRequest) as caught:
        await body.request("greeter", "say_hello", payload, schema="demo/v2/Name")
    details = caught.value.details or {}
    assert details["field"] == field
    assert details["constraint"] == constraint
    assert details["schema"] == "demo/v2/Name"
    assert field in caught.value.message


async def test_a_v1_request_is_checked_against_v1_then_upcast(make_body: MakeBody) -> None:
    body = await started(make_body, greeter())
    reply = await body.request(
        "greeter", "say_hello", {"name": "Ada Lovelace"}, schema="demo/v1/Name"
    )
    assert reply == {"message": "Hello Ada Lovelace!"}
    with pytest.raises(BadRequest) as caught:
        await body.request("greeter", "say_hello", {}, schema="demo/v1/Name")
    assert (caught.value.details or {})["field"] == "name"


async def test_a_verb_without_schema_gets_no_middleware(make_body: MakeBody) -> None:
    cell = greeter()
    plain = next(e for e in cell.endpoints if e.verb == "plain")
    typed = next(e for e in cell.endpoints if e.verb == "say_hello")

    async def inner(request: Any, headers: Any) -> Any:
        return request

    assert schema_middleware(Served(cell, plain), inner) is inner
    assert schema_middleware(Served(cell, typed), inner) is not inner
    body = await started(make_body, cell)
    assert await body.request("greeter", "plain", {"x": 1}, schema="demo/v1/Any") == {"x": 1}


def test_sources_file_dict_and_models(tmp_path: Path) -> None:
    path = tmp_path / "name.json"
    path.write_text('{"type": "object", "required": ["name"]}')
    assert document(path) == {"type": "object", "required": ["name"]}
    assert document(str(path)) == document({"type": "object", "required": ["name"]})

    schema = schema_of(Model)
    assert schema["required"] == ["kind", "items"]
    assert schema["properties"]["kind"] == {"enum": ["a", "b"]}
    assert schema["properties"]["items"]["items"]["required"] == ["n"]
    assert schema["additionalProperties"] is False
    with pytest.raises(SchemaError, match="cannot read"):
        document(tmp_path / "missing.json")
    with pytest.raises(SchemaError, match="neither"):
        document(int)


async def test_an_upcaster_that_breaks_the_current_schema_is_internal(
    make_body: MakeBody,
) -> None:
    from cbs.contracts import Internal
    from cbs.schemas import Upcast

    cell = Cell("bad", category="logic", version="1.0.0", purpose="a broken upcaster")

    @cell.verb(
        "go",
        schema="tt/v2/Go",
        also_accepts=("tt/v1/Go",),
        json_schema={"type": "object", "required": ["b"]},
        upcasts={"tt/v1/Go": Upcast({"type": "object"}, lambda p: {"a": 1})},
    )
    async def go(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    body = await started(make_body, cell)
    with pytest.raises(Internal):
        await body.request("bad", "go", {}, schema="tt/v1/Go")
    assert await body.request("bad", "go", {"b": 2}, schema="tt/v2/Go") == {"b": 2}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"json_schema": "/nonexistent/name.json"}, "cannot read schema"),
        ({"json_schema": {"type": 5}}, "bad JSON Schema"),
        ({"upcasts": {"tt/v0/Go": Upcast({})}}, "not in also_accepts"),
    ],
)
async def test_a_bad_schema_stops_the_start_naming_cell_and_verb(
    make_body: MakeBody, options: dict[str, Any], expected: str
) -> None:
    cell = Cell("bad", category="logic", version="1.0.0", purpose="bad schemas")
    cell.add_verb("go", lambda p: p, schema="tt/v1/Go", **options)
    body = make_body(cbs.schemas.plugin, CellsPlugin(cell))
    with pytest.raises(PluginError, match=f"cell 'bad' verb 'go': .*{expected}"):
        await body.start()
