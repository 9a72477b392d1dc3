"""A cell whose verb declares JSON Schemas: v2 of a request, v1 still
accepted and upcast (tests of cbs-schemas)."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import attrs

from cbs.kernel import Cell
from cbs.schemas import Upcast


@attrs.define
class NameV1:
    name: str


class NameV2(TypedDict):
    first: str
    last: str
    title: NotRequired[str]


def v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    first, _, last = payload["name"].partition(" ")
    return {"first": first, "last": last or "-"}


GREETING = {
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
}


def greeter(version: str = "2.0.0") -> Cell:
    cell = Cell("greet", service="greeter", category="logic", version=version, purpose="Greets")

    @cell.verb(
        "say_hello",
        schema="demo/v2/Name",
        reply_schema="demo/v1/Greeting",
        also_accepts=("demo/v1/Name",),
        json_schema=NameV2,
        reply_json_schema=GREETING,
        upcasts={"demo/v1/Name": Upcast(NameV1, v1_to_v2)},
    )
    async def say_hello(payload: dict[str, Any]) -> dict[str, Any]:
        title = payload.get("title")
        who = f"{title} {payload['last']}" if title else f"{payload['first']} {payload['last']}"
        return {"message": f"Hello {who}!"}

    @cell.verb("plain", schema="demo/v1/Any")
    async def plain(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    return cell


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``cbs`` subprocess: no CBS_* of the user's, plus ``extra``."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CBS_")}
    return {**env, **extra}
