"""Compatibility of two JSON Schemas, in the modes of Confluent Schema Registry.

A check asks whether a *reader* schema accepts every payload a *writer*
schema allows. For a verb's request the server reads what callers write:

* ``BACKWARD``: the new schema reads payloads written for the old one (old
  callers keep working with an upgraded cell): reader = new, writer = old.
* ``FORWARD``: the old schema reads payloads written for the new one (new
  callers work with cells not yet upgraded): reader = old, writer = new.
* ``FULL``: both.
* ``*_TRANSITIVE``: the same against every earlier version, not only the
  latest.

The check is structural and conservative: it names each change that can
make a payload valid for the writer fail for the reader (a field removed
from a closed object, a required field added, a type narrowed, an enum
shrunk, ``additionalProperties`` tightened, a bound tightened, a pattern
changed). Keywords it does not understand that differ are reported too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = ["MODES", "Change", "check", "breaking_changes", "major_of"]

MODES = (
    "BACKWARD",
    "FORWARD",
    "FULL",
    "BACKWARD_TRANSITIVE",
    "FORWARD_TRANSITIVE",
    "FULL_TRANSITIVE",
    "NONE",
)

_MAJOR = re.compile(r"(?:^|[/_.-])v([0-9]+)(?:[/_.-]|$)")


def major_of(text: str) -> int | None:
    """The major version ``v{N}`` in a schema label, ``$id`` or path."""
    found = _MAJOR.findall(text)
    return int(found[-1]) if found else None


@attrs.frozen
class Change:
    """One change that can break a reader: where, what kind, and a sentence."""

    path: str
    kind: str
    text: str
    direction: str = ""  # BACKWARD or FORWARD: who it breaks

    def line(self) -> str:
        where = self.path or "(payload)"
        return f"{self.direction}: {where}: {self.kind}: {self.text}"


_TYPES_WIDER = {"integer": {"number"}}
_LOWER = ("minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum")
_UPPER = ("maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum")
_HANDLED = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "pattern",
    "format",
    "$schema",
    "$id",
    "title",
    "description",
    "examples",
    "default",
    "$comment",
    *_LOWER,
    *_UPPER,
}


def _types(schema: Mapping[str, Any]) -> set[str] | None:
    t = schema.get("type")
    if t is None:
        return None
    return {t} if isinstance(t, str) else set(t)


def _covers(reader: set[str], writer: set[str]) -> set[str]:
    """Writer types the reader does not accept."""
    missing = set()
    for t in writer:
        if t in reader or (_TYPES_WIDER.get(t, set()) & reader):
            continue
        missing.add(t)
    return missing


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def breaking_changes(reader: Any, writer: Any, path: str = "") -> list[Change]:
    """Every change that can make a payload valid for ``writer`` invalid for
    ``reader`` (empty: the reader accepts whatever the writer allows)."""
    if reader is True or reader == {}:
        return []
    if writer is True or writer == {}:
        return [Change(path, "constrained", "anything was allowed, now a schema applies")]
    if reader is False:
        return [Change(path, "removed", "nothing is allowed any more")]
    if writer is False:
        return []
    found: list[Change] = []
    add = found.append
    r_types, w_types = _types(reader), _types(writer)
    if r_types is not None:
        if w_types is None:
            add(Change(path, "type_narrowed", f"any type was allowed, now {sorted(r_types)}"))
        elif missing := _covers(r_types, w_types):
            add(
                Change(
                    path,
                    "type_narrowed",
                    f"{sorted(w_types)} became {sorted(r_types)} ({sorted(missing)} refused)",
                )
            )
    if "enum" in reader:
        r_enum = list(reader["enum"])
        if "enum" not in writer and "const" not in writer:
            add(Change(path, "enum_added", f"values are now limited to {r_enum}"))
        else:
            w_enum = list(writer.get("enum", [writer.get("const")]))
            if lost := [v for v in w_enum if v not in r_enum]:
                add(Change(path, "enum_shrunk", f"values {lost} are no longer accepted"))
    if "const" in reader and reader["const"] != writer.get("const", object()):
        add(Change(path, "const_changed", f"only {reader['const']!r} is accepted"))
    for key in _LOWER:
        if key in reader and (key not in writer or reader[key] > writer[key]):
            add(Change(path, "bound_tightened", f"{key} {writer.get(key)} became {reader[key]}"))
    for key in _UPPER:
        if key in reader and (key not in writer or reader[key] < writer[key]):
            add(Change(path, "bound_tightened", f"{key} {writer.get(key)} became {reader[key]}"))
    for key in ("pattern", "format"):
        if key in reader and reader[key] != writer.get(key):
            add(Change(path, f"{key}_changed", f"{writer.get(key)!r} became {reader[key]!r}"))
    found.extend(_objects(reader, writer, path))
    if "items" in reader:
        w_items = writer.get("items", True)
        found.extend(breaking_changes(reader["items"], w_items, _join(path, "[]")))
    for key in sorted(set(reader) - _HANDLED):
        if reader[key] != writer.get(key):
            add(Change(path, "keyword_changed", f"'{key}' differs (not analysed)"))
    return found


def _objects(reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> list[Change]:
    found: list[Change] = []
    add = found.append
    r_props: Mapping[str, Any] = reader.get("properties", {})
    w_props: Mapping[str, Any] = writer.get("properties", {})
    r_extra = reader.get("additionalProperties", True)
    w_extra = writer.get("additionalProperties", True)
    w_required = set(writer.get("required", []))
    for name in reader.get("required", []):
        if name not in w_required:
            add(Change(_join(path, name), "required_added", "a payload may leave it out"))
    for name, w_schema in w_props.items():
        if name in r_props:
            found.extend(breaking_changes(r_props[name], w_schema, _join(path, name)))
        elif r_extra is False:
            add(
                Change(
                    _join(path, name),
                    "field_removed",
                    "no longer a property, and other properties are refused",
                )
            )
        elif isinstance(r_extra, Mapping):
            found.extend(breaking_changes(r_extra, w_schema, _join(path, name)))
    if r_extra is False and w_extra is not False:
        add(
            Change(path, "additional_properties_tightened", "properties not listed are now refused")
        )
    elif isinstance(r_extra, Mapping) and r_extra and w_extra is not False:
        w_any = w_extra if isinstance(w_extra, Mapping) else {}
        for change in breaking_changes(r_extra, w_any, _join(path, "*")):
            add(change)
    for name, r_schema in r_props.items():
        if name not in w_props and w_extra is not False:
            w_schema = w_extra if isinstance(w_extra, Mapping) else {}
            found.extend(breaking_changes(r_schema, w_schema, _join(path, name)))
    return found


#: A change that breaks old readers (FORWARD), named as made from OLD to NEW.
_AS_MADE = {
    "field_removed": "field_added",
    "required_added": "required_removed",
    "type_narrowed": "type_widened",
    "enum_shrunk": "enum_grown",
    "enum_added": "enum_removed",
    "bound_tightened": "bound_loosened",
    "additional_properties_tightened": "additional_properties_loosened",
    "constrained": "unconstrained",
}


def _forward(change: Change) -> Change:
    kind = _AS_MADE.get(change.kind, change.kind)
    return attrs.evolve(change, kind=kind, text=f"old readers: {change.text}", direction="FORWARD")


def check(mode: str, history: Sequence[Mapping[str, Any]], new: Mapping[str, Any]) -> list[Change]:
    """The breaking changes of ``new`` against ``history`` (oldest first) in
    ``mode`` (one of :data:`MODES`). BACKWARD changes are named as they
    break new readers (``field_removed``: NEW lost a field OLD payloads may
    carry); FORWARD ones as made from OLD to NEW (``field_added``: OLD
    readers refuse what NEW payloads may carry)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
    if mode == "NONE" or not history:
        return []
    against = history if mode.endswith("_TRANSITIVE") else history[-1:]
    base = mode.removesuffix("_TRANSITIVE")
    found: list[Change] = []
    for old in against:
        if base in ("BACKWARD", "FULL"):
            found += [attrs.evolve(c, direction="BACKWARD") for c in breaking_changes(new, old)]
        if base in ("FORWARD", "FULL"):
            found += [_forward(c) for c in breaking_changes(old, new)]
    unique: dict[Change, None] = dict.fromkeys(found)
    return list(unique)
