"""Schema documents: where a verb's JSON Schema comes from, and its identity.

A source is a path to a JSON file (``str`` or ``os.PathLike``), a ``dict``
holding the schema, or a typed model (an attrs class or a ``TypedDict``)
from which the schema is generated. :func:`document` turns any of them into
a plain JSON Schema ``dict``; :func:`fingerprint` names its content.
"""

from __future__ import annotations

import hashlib
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import attrs
import orjson

__all__ = ["Source", "Upcast", "document", "fingerprint", "schema_of"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: Where a schema comes from: a file, a dict, or a typed model.
Source = str | os.PathLike[str] | Mapping[str, Any] | type


@attrs.frozen
class Upcast:
    """An older request schema a verb still accepts (it is in the verb's
    ``also_accepts``), and how to turn such a payload into the current one.
    ``to_current`` runs after the payload matched ``schema`` and before the
    handler; ``None`` hands the old payload to the handler as it is."""

    schema: Source
    to_current: Callable[[dict[str, Any]], dict[str, Any]] | None = None


class SchemaError(ValueError):
    """A schema source that cannot be read or generated."""


def document(source: Source) -> dict[str, Any]:
    """The JSON Schema ``source`` holds or describes (a fresh ``dict``)."""
    if isinstance(source, Mapping):
        return dict(orjson.loads(orjson.dumps(source)))
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            loaded = orjson.loads(path.read_bytes())
        except OSError as exc:
            raise SchemaError(f"cannot read schema {path}: {exc.strerror}") from None
        except orjson.JSONDecodeError as exc:
            raise SchemaError(f"schema {path} is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise SchemaError(f"schema {path} is not a JSON object")
        return loaded
    if isinstance(source, type):
        return schema_of(source)
    raise SchemaError(f"a schema is a path, a dict or a typed model, not {type(source).__name__}")


def fingerprint(schema: Mapping[str, Any]) -> str:
    """``sha256:`` and the hex digest of the schema's canonical JSON."""
    canonical = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def schema_of(model: type) -> dict[str, Any]:
    """The JSON Schema of an attrs class or a ``TypedDict``: an object with
    one property per field, required unless it has a default (attrs) or is
    not required (``TypedDict``), no other properties."""
    body = _object(model)
    return {"$schema": DIALECT, "title": model.__name__, **body}


def _object(model: type) -> dict[str, Any]:
    hints = get_type_hints(model)
    properties: dict[str, Any] = {}
    required: list[str] = []
    if attrs.has(model):
        for field in attrs.fields(model):
            properties[field.name] = _type(hints.get(field.name, Any))
            if field.default is attrs.NOTHING:
                required.append(field.name)
    elif is_typeddict(model):
        # Under ``from __future__ import annotations`` __required_keys__
        # cannot see NotRequired[...]: read the markers from the hints.
        needed: frozenset[str] = getattr(model, "__required_keys__", frozenset())
        for name, hint in get_type_hints(model, include_extras=True).items():
            marker = get_origin(hint)
            properties[name] = _type(_unwrap_required(hint))
            if marker is typing.Required or (marker is not typing.NotRequired and name in needed):
                required.append(name)
    else:
        raise SchemaError(f"{model.__name__} is neither an attrs class nor a TypedDict")
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    result["additionalProperties"] = False
    return result


def _unwrap_required(hint: Any) -> Any:
    if get_origin(hint) in (typing.Required, typing.NotRequired):
        return get_args(hint)[0]
    return hint


_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    type(None): {"type": "null"},
    Any: {},
}


def _type(hint: Any) -> dict[str, Any]:
    if hint in _SCALARS:
        return dict(_SCALARS[hint])
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_type(a) for a in args]}
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        item = args[0] if args else Any
        return {"type": "array", "items": _type(item)}
    if origin is dict or hint is dict:
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": _type(value)}
    if isinstance(hint, type) and (attrs.has(hint) or is_typeddict(hint)):
        return _object(hint)
    raise SchemaError(f"no JSON Schema for type {hint!r}")
