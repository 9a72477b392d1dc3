"""Reading ``body.yaml``: YAML with its node marks, checked against the JSON
Schema that ships with the package (``body.schema.json``), then turned into a
:class:`~cbs.spec.model.BodySpec`.

Every error is one :class:`SpecError` line naming the file, the line and the
column (from PyYAML's node marks, 1-based) and what was expected.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cbs.kernel import ConfigError

__all__ = ["SpecError", "schema", "load_text", "load_file"]


class SpecError(ConfigError):
    """A spec that cannot be used: ``file:line:column: what was expected``."""


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of ``body.yaml``."""
    text = resources.files("cbs.spec").joinpath("body.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


def _node_at(node: yaml.Node, path: list[Any]) -> yaml.Node:
    """The deepest node of ``node`` along ``path`` (keys and indexes)."""
    for step in path:
        if isinstance(node, yaml.MappingNode):
            found = next(
                (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == step),
                None,
            )
            if found is None:
                return node
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if step >= len(node.value):
                return node
            node = node.value[step]
        else:
            return node
    return node


def _where(name: str, node: yaml.Node | None) -> str:
    if node is None:
        return f"{name}:1:1"
    mark = node.start_mark
    return f"{name}:{mark.line + 1}:{mark.column + 1}"


def _describe(error: Any) -> str:
    """A short 'what was expected' for one jsonschema error."""
    where = ".".join(str(p) for p in error.absolute_path) or "the spec"
    validator = error.validator
    if validator == "additionalProperties":
        extra = (
            sorted(set(error.instance) - set(error.schema.get("properties", {})))
            if isinstance(error.instance, dict)
            else []
        )
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"{where}: unknown field {extra[0] if extra else '?'!r} (expected one of: {allowed})"
    if validator == "required":
        return f"{where}: {error.message}"
    if validator == "type":
        return f"{where}: expected {error.validator_value}, got {json.dumps(error.instance)[:40]}"
    if validator == "pattern":
        return f"{where}: {json.dumps(error.instance)[:40]} does not match {error.validator_value}"
    if validator == "const":
        return f"{where}: expected {json.dumps(error.validator_value)}"
    if validator == "oneOf":
        return f"{where}: expected an integer or {{min, max}}"
    return f"{where}: {error.message}"


def _extra_key_node(node: yaml.Node, error: Any) -> yaml.Node | None:
    """The key node an additionalProperties/propertyNames error is about."""
    if not isinstance(node, yaml.MappingNode) or not isinstance(error.instance, dict):
        return None
    known = set(error.schema.get("properties", {}))
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value not in known:
            return key
    return None


def load_text(text: str, name: str = "body.yaml") -> dict[str, Any]:
    """Parse and check a spec; return its data (``SpecError`` if bad)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        place = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else f"{name}:1:1"
        raise SpecError(f"{place}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{name}:1:1: not valid YAML: {exc}") from None
    if root is None:
        raise SpecError(
            f"{name}:1:1: the spec is empty (expected a mapping with version and cells)"
        )
    errors = sorted(
        _validator().iter_errors(data), key=lambda e: (len(list(e.absolute_path)), str(e.path))
    )
    if errors:
        error = min(errors, key=lambda e: _node_at(root, list(e.absolute_path)).start_mark.index)
        node = _node_at(root, list(error.absolute_path))
        if error.validator in ("additionalProperties", "propertyNames"):
            node = _extra_key_node(node, error) or node
        raise SpecError(f"{_where(name, node)}: {_describe(error)}")
    assert isinstance(data, dict)
    return data


def load_file(path: str | Path) -> dict[str, Any]:
    """Read and check a spec file (``SpecError`` if missing or bad)."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}:1:1: not UTF-8 text") from None
    return load_text(text, str(path))
