"""The server middleware that checks requests against a verb's JSON Schema.

Composed once per endpoint (phase ``transport``, next to the handler): an
endpoint without a schema gets no middleware at all, one with a schema gets a
compiled validator (jsonschema-rs) per accepted request schema. A payload of
an older schema (one of ``upcasts``) is checked against that schema, turned
into the current one by its upcaster, and handed on under the current label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema_rs

from cbs.contracts import BadRequest, Endpoint, Envelope, Internal
from cbs.kernel import PluginError, Served, ServerHandler
from cbs.schemas.documents import Source, document
from cbs.schemas.options import JSON_SCHEMA, REPLY_JSON_SCHEMA, UPCASTS

__all__ = [
    "JSON_SCHEMA",
    "REPLY_JSON_SCHEMA",
    "UPCASTS",
    "Contract",
    "contract_of",
    "compile_schema",
    "schema_middleware",
]

Validator = Any  # a jsonschema_rs validator (untyped)

log = logging.getLogger("cbs.schemas")


def compile_schema(schema: Mapping[str, Any]) -> Validator:
    """A compiled validator for ``schema`` (its ``$schema`` picks the draft)."""
    return jsonschema_rs.validator_for(dict(schema))


class Contract:
    """The schemas of one endpoint, as documents."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.label = endpoint.schema
        source: Source | None = JSON_SCHEMA.of(endpoint)
        self.request = None if source is None else document(source)
        reply: Source | None = REPLY_JSON_SCHEMA.of(endpoint)
        self.reply_label = endpoint.reply_schema
        self.reply = None if reply is None else document(reply)
        self.upcasts = dict(UPCASTS.of(endpoint))
        self.older = {label: document(up.schema) for label, up in self.upcasts.items()}

    @property
    def empty(self) -> bool:
        return self.request is None and not self.older


def contract_of(endpoint: Endpoint) -> Contract | None:
    """The endpoint's schemas, or ``None`` when it declares none."""
    names = (JSON_SCHEMA.name, REPLY_JSON_SCHEMA.name, UPCASTS.name)
    if not any(name in endpoint.options for name in names):
        return None
    return Contract(endpoint)


def _field(error: Any) -> str:
    path = [str(p) for p in error.instance_path]
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        path.append(str(kind.property))
    elif isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties):
        path.append(str(kind.unexpected[0])[:64] if kind.unexpected else "")
    return ".".join(path)


def bad_request(error: Any, label: str) -> BadRequest:
    """``BadRequest`` naming the failing field and the rule it breaks."""
    rule = str(error.schema_path[-1]) if error.schema_path else "schema"
    field = _field(error)
    details: dict[str, Any] = {"field": field, "constraint": rule, "schema": label}
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Type):
        details["expected"] = kind.types if hasattr(kind, "types") else None
    message = (
        f"Field '{field}' breaks rule '{rule}' of {label}"
        if field
        else (f"Payload breaks rule '{rule}' of {label}")
    )
    return BadRequest(message, details={k: v for k, v in details.items() if v is not None})


Checks = dict[str, tuple[Validator, Callable[[dict[str, Any]], dict[str, Any]] | None]]


def _compiled(served: Served) -> tuple[Contract, Checks] | None:
    """The endpoint's validators by label; a schema that cannot be read or
    compiled is a ``PluginError`` naming the cell and verb."""
    try:
        contract = contract_of(served.endpoint)
        if contract is None or contract.empty:
            return None
        checks: Checks = {}
        if contract.request is not None:
            checks[contract.label] = (compile_schema(contract.request), None)
        for label, up in contract.upcasts.items():
            if label not in served.endpoint.also_accepts:
                raise ValueError(f"upcasts names {label}, which is not in also_accepts")
            checks[label] = (compile_schema(contract.older[label]), up.to_current)
    except ValueError as exc:  # SchemaError, jsonschema-rs's errors
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PluginError(
            f"cell '{served.cell.id}' verb '{served.endpoint.verb}': bad JSON Schema: {message}"
        ) from None
    return contract, checks


def schema_middleware(served: Served, inner: ServerHandler) -> ServerHandler:
    """Server middleware factory: checks requests before ``inner`` runs."""
    compiled = _compiled(served)
    if compiled is None:
        return inner
    contract, checks = compiled
    current = contract.label
    main = checks.get(current, (None, None))[0]
    error_cls = jsonschema_rs.ValidationError
    subject = served.subject
    evolve = Envelope.trusted

    async def validate(request: Envelope, headers: Mapping[str, str]) -> Envelope:
        check = checks.get(request.schema)
        if check is None:  # a label the kernel accepts or refuses: not ours
            return await inner(request, headers)
        validator, upcast = check
        label = request.schema
        try:
            validator.validate(request.payload)
        except error_cls as exc:
            raise bad_request(exc, request.schema) from None
        if upcast is not None:
            payload = upcast(dict(request.payload or {}))
            if main is not None and not main.is_valid(payload):
                # The cell's bug, not the caller's: its upcaster made what
                # the current schema refuses.
                log.error("%s: the upcaster of %s made an invalid %s", subject, label, current)
                raise Internal()
            request = evolve(request.id, request.service, request.verb, current, payload)
        return await inner(request, headers)

    return validate
