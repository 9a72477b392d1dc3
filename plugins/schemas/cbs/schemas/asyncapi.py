"""``cbs asyncapi``: an AsyncAPI 3.0 document of CBS cells.

One channel per request subject (``cbs.{service}.{verb}``) with a message
per accepted request schema, one reply channel per verb (the requester's
inbox: NATS request/reply, so no fixed address) with the reply and the error
envelope, and one ``receive`` operation per verb whose ``reply`` names them.
Message payloads are whole CBS envelopes whose ``payload`` is the verb's
JSON Schema where one is declared (``{"type": "object"}`` otherwise).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from cbs.kernel import Body, Directory

__all__ = ["document_for", "installed_rows", "configure", "run"]

JSON_SCHEMA_FORMAT = "application/schema+json;version=draft-07"
_KEY = re.compile(r"[^\w.\-]")

_ERROR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["code", "message"],
    "properties": {
        "code": {"enum": ["BadRequest", "Timeout", "NotFound", "Internal", "Unavailable"]},
        "message": {"type": "string"},
        "details": {"type": "object"},
    },
}


def _key(*parts: str) -> str:
    return _KEY.sub("_", "_".join(parts))


def _envelope(service: str, verb: str, label: str | None, body: Mapping[str, Any]) -> Any:
    properties: dict[str, Any] = {
        "id": {"type": "string", "format": "uuid"},
        "service": {"const": service},
        "verb": {"const": verb},
        "schema": {"const": label} if label else {"type": "string"},
        **body,
    }
    return {
        "type": "object",
        "required": ["id", "service", "verb", "schema", *body],
        "properties": properties,
        "additionalProperties": False,
    }


def _payload(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    if schema is None:
        return {"type": "object"}
    return {k: v for k, v in schema.items() if k != "$schema"}


def _message(name: str, title: str, payload: Any) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "contentType": "application/json",
        "payload": {"schemaFormat": JSON_SCHEMA_FORMAT, "schema": payload},
    }


def _json_meta(meta: Mapping[str, str], key: str) -> Any:
    raw = meta.get(key)
    return None if raw is None else orjson.loads(raw)


def document_for(rows: Iterable[Mapping[str, Any]], *, url: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of cells listed as ``cbs cells --json`` rows."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: str(r.get("id"))):
        service = str(row.get("service") or row.get("id"))
        for endpoint in row.get("endpoints") or []:
            verb = str(endpoint["verb"])
            meta: Mapping[str, str] = endpoint.get("metadata") or {}
            base = _key(service, verb)
            accepted = {str(endpoint.get("schema") or ""): _json_meta(meta, "cbs.schema.json")}
            accepted.update(_json_meta(meta, "cbs.also_accepts.json") or {})
            request_refs = {}
            for label, schema in accepted.items():
                key = _key(base, "request", label)
                messages[key] = _message(
                    key,
                    f"{service}.{verb} request ({label})",
                    _envelope(service, verb, label, {"payload": _payload(schema)}),
                )
                request_refs[_key("request", label)] = {"$ref": f"#/components/messages/{key}"}
            reply_label = endpoint.get("reply_schema")
            reply_schema = _json_meta(meta, "cbs.reply_schema.json")
            reply_key = _key(base, "reply")
            messages[reply_key] = _message(
                reply_key,
                f"{service}.{verb} reply",
                _envelope(service, verb, reply_label, {"payload": _payload(reply_schema)}),
            )
            error_key = _key(base, "error")
            messages[error_key] = _message(
                error_key,
                f"{service}.{verb} error",
                _envelope(service, verb, None, {"error": {"$ref": "#/components/schemas/Error"}}),
            )
            channels[base] = {
                "address": f"cbs.{service}.{verb}",
                "description": f"requests to {service}.{verb} (queue group {service})",
                "messages": request_refs,
            }
            channels[_key(base, "reply")] = {
                "address": None,
                "description": "the requester's inbox (NATS request/reply)",
                "messages": {
                    "reply": {"$ref": f"#/components/messages/{reply_key}"},
                    "error": {"$ref": f"#/components/messages/{error_key}"},
                },
            }
            operations[base] = {
                "action": "receive",
                "summary": f"{service}.{verb}",
                "channel": {"$ref": f"#/channels/{base}"},
                "messages": [{"$ref": f"#/channels/{base}/messages/{k}"} for k in request_refs],
                "reply": {
                    "channel": {"$ref": f"#/channels/{_key(base, 'reply')}"},
                    "messages": [
                        {"$ref": f"#/channels/{_key(base, 'reply')}/messages/reply"},
                        {"$ref": f"#/channels/{_key(base, 'reply')}/messages/error"},
                    ],
                },
            }
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "CBS cells",
            "version": "1.0.0",
            "description": "Request/reply verbs of CBS cells; envelopes as in the CBS contracts.",
        },
        "defaultContentType": "application/json",
    }
    if url:
        first = urlsplit(url.split(",")[0])
        host = first.hostname or "127.0.0.1"
        doc["servers"] = {"nats": {"host": f"{host}:{first.port or 4222}", "protocol": "nats"}}
    doc["channels"] = channels
    doc["operations"] = operations
    doc["components"] = {
        "schemas": {"Error": {"schemaFormat": JSON_SCHEMA_FORMAT, "schema": _ERROR}},
        "messages": messages,
    }
    return doc


def installed_rows(body: Body) -> list[dict[str, Any]]:
    """The installed cells of ``body`` as rows for :func:`document_for`."""
    rows = []
    for entry in body.cells:
        cell = entry.item
        rows.append(
            {
                "id": cell.id,
                "service": cell.service,
                "endpoints": [
                    {
                        "verb": e.verb,
                        "schema": e.schema,
                        "reply_schema": e.reply_schema,
                        "metadata": body.endpoint_options.metadata(e),
                    }
                    for e in cell.endpoints
                ],
            }
        )
    return rows


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--installed",
        action="store_true",
        help="describe the installed cells even when a shared NATS is given",
    )


async def run(body: Body, args: argparse.Namespace) -> int:
    url = None
    if body.transport_shared() and not args.installed:
        await body.start(serve=False)
        directory = body.capabilities.get(Directory)
        rows = await directory.list_cells() if directory is not None else installed_rows(body)
        from cbs.nats import NatsConnection

        conn = body.capabilities.get(NatsConnection)
        url = None if conn is None else conn.url
    else:
        rows = installed_rows(body)
    print(json.dumps(document_for(rows, url=url), indent=2, ensure_ascii=False))
    return 0
