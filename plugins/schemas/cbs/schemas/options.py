"""The endpoint options a cell declares its JSON Schemas with; light to
import, as every body registers them (the validator is imported only when a
chain is composed)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cbs.kernel import EndpointOption
from cbs.schemas.documents import Upcast, document, fingerprint

__all__ = ["JSON_SCHEMA", "REPLY_JSON_SCHEMA", "UPCASTS"]


def _meta(prefix: str) -> Callable[[Any], Mapping[str, str]]:
    def advertise(value: Any) -> Mapping[str, str]:
        schema = document(value)
        return {f"cbs.{prefix}.hash": fingerprint(schema), f"cbs.{prefix}.json": _json(schema)}

    return advertise


def _upcasts_meta(value: Any) -> Mapping[str, str]:
    older = {label: document(up.schema) for label, up in dict(value).items()}
    return {"cbs.also_accepts.json": _json(older)}


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


#: The JSON Schema of a verb's request payload (its ``schema`` label): a
#: path, a dict, or a typed model.
JSON_SCHEMA: EndpointOption[Any] = EndpointOption(
    "json_schema",
    object,
    None,
    help="JSON Schema of the request payload: a path, a dict or an attrs class / TypedDict",
    metadata=_meta("schema"),
)
#: The JSON Schema of a verb's reply payload (advertised, not enforced).
REPLY_JSON_SCHEMA: EndpointOption[Any] = EndpointOption(
    "reply_json_schema",
    object,
    None,
    help="JSON Schema of the reply payload (advertised)",
    metadata=_meta("reply_schema"),
)
#: Older request schemas (labels in ``also_accepts``) and their upcasters:
#: ``{"demo/v1/Name": Upcast(schema, to_current)}``.
UPCASTS: EndpointOption[Mapping[str, Upcast]] = EndpointOption(
    "upcasts",
    dict,
    {},
    help="older request schemas the verb accepts, each with its upcaster",
    metadata=_upcasts_meta,
)
