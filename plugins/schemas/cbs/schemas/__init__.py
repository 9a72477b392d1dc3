"""JSON Schemas for CBS verbs (``cbs-schemas``).

A verb declares the JSON Schema of its request (and reply) as endpoint
options: a path, a dict, or a typed model (an attrs class or a TypedDict)::

    @cell.verb("say_hello", schema="demo/v2/Name", json_schema=NameV2,
               also_accepts=("demo/v1/Name",),
               upcasts={"demo/v1/Name": Upcast(NameV1, v1_to_v2)})

Requests are checked before the handler runs (``BadRequest`` naming the
field and the rule), older payloads are upcast, discovery advertises the
schemas, a JetStream key-value bucket keeps every published version, and
``cbs schema check`` tells whether a change breaks callers. See docs/schemas.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel import lazy_exports

if TYPE_CHECKING:
    from cbs.schemas.documents import (
        SchemaError,
        Source,
        Upcast,
        document,
        fingerprint,
        schema_of,
    )
    from cbs.schemas.options import JSON_SCHEMA, REPLY_JSON_SCHEMA, UPCASTS
    from cbs.schemas.registry import BUCKET, Registry, published
    from cbs.schemas.validation import compile_schema

__all__ = [
    "BUCKET",
    "JSON_SCHEMA",
    "REPLY_JSON_SCHEMA",
    "UPCASTS",
    "Registry",
    "SchemaError",
    "Source",
    "Upcast",
    "compile_schema",
    "document",
    "fingerprint",
    "published",
    "schema_of",
]
# Imported when first used: the entry point (every `cbs` command) needs none of
# them, and the validator (jsonschema-rs) takes longer to import than CBS.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(
            ("SchemaError", "Source", "Upcast", "document", "fingerprint", "schema_of"),
            "cbs.schemas.documents",
        ),
        **dict.fromkeys(("BUCKET", "Registry", "published"), "cbs.schemas.registry"),
        **dict.fromkeys(("JSON_SCHEMA", "REPLY_JSON_SCHEMA", "UPCASTS"), "cbs.schemas.options"),
        "compile_schema": "cbs.schemas.validation",
    },
)
