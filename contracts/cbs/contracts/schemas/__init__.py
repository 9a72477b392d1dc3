"""JSON Schemas of the envelope and the cell manifest, shipped as package data."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["load_schema", "SCHEMA_NAMES"]

SCHEMA_NAMES = ("envelope", "manifest")


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``name`` (``"envelope"`` or ``"manifest"``) as a dict."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; expected one of {SCHEMA_NAMES}")
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
