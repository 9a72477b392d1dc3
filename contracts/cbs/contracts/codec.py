"""Bytes <-> Envelope.

Decoding is total: whatever the bytes, :func:`decode` returns an
:class:`Envelope` or raises :class:`BadRequest` with a short, safe message.
It rejects, in this order:

* input over :data:`MAX_ENVELOPE_BYTES` (1 MiB, NATS's default max payload);
* anything that is not strict UTF-8 (no BOM, no UTF-16/32 auto-detection,
  no lone surrogates, not even as ``\\ud800`` escapes);
* invalid JSON, ``NaN``/``Infinity``, numbers out of the double range;
* nesting deeper than :data:`MAX_DEPTH` (64) arrays/objects;
* duplicate keys in any object;
* a top level that is not an object, unknown top-level fields, both or
  neither of ``payload`` and ``error``, and every field rule of the contract.

Encoding is deterministic: compact UTF-8 JSON with keys sorted at every level,
so the same envelope always gives the same bytes. Integers must fit in 64 bits
and floats must be finite (``Internal`` otherwise: that is a bug in the sender).

orjson does the parsing and printing (4-10x the standard library here); the
standard library's decoder only double-checks for duplicate keys, and only for
input that is not already in canonical form.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import orjson

from cbs.contracts.envelope import (
    UUID4_RE,
    Envelope,
    _check_route,
    check_schema,
    validate_fields,
)
from cbs.contracts.errors import BadRequest, Internal
from cbs.contracts.protocols import WrongReply

__all__ = [
    "encode",
    "decode",
    "decode_reply",
    "encode_payload",
    "MAX_ENVELOPE_BYTES",
    "MAX_DEPTH",
    "FIELDS",
]

#: Largest envelope accepted by :func:`decode`, in bytes.
MAX_ENVELOPE_BYTES = 1024 * 1024
#: Deepest nesting of arrays and objects accepted by :func:`decode` (the
#: envelope object itself counts as level 1).
MAX_DEPTH = 64
#: The top-level fields of an envelope; no others are allowed.
FIELDS = frozenset({"id", "service", "verb", "schema", "payload", "error"})

_SORT = orjson.OPT_SORT_KEYS


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_unique_pairs, parse_constant=_reject_constant)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of ``value``, stopping early once past ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item if isinstance(v, (dict, list)))
    return deepest


def decode(data: bytes | bytearray | memoryview) -> Envelope:
    """Parse and validate one envelope. Raises only :class:`BadRequest`."""
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > MAX_ENVELOPE_BYTES:
        raise BadRequest(
            "Envelope too large",
            details={"constraint": "maxBytes", "limit": MAX_ENVELOPE_BYTES},
        )
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson's message may quote the input: keep ours fixed.
        raise BadRequest("Malformed JSON: not a strict UTF-8 JSON document") from None
    if not isinstance(obj, dict):
        raise BadRequest("Envelope must be a JSON object")
    # Depth: the bracket count bounds the depth, so most input skips the walk.
    if data.count(b"{") + data.count(b"[") > MAX_DEPTH and _depth(obj, MAX_DEPTH) > MAX_DEPTH:
        raise BadRequest(
            "JSON nested too deeply", details={"constraint": "maxDepth", "limit": MAX_DEPTH}
        )
    # Duplicate keys: orjson keeps the last silently. Canonical input (ours)
    # re-encodes to the same bytes, which proves it had none.
    if orjson.dumps(obj, option=_SORT) != data:
        try:
            _STRICT_DECODER.decode(data.decode("utf-8"))
        except (ValueError, RecursionError):
            raise BadRequest("Malformed JSON: duplicate keys") from None
    return _from_object(obj, strict=True)


def _from_object(obj: dict[str, Any], *, strict: bool) -> Envelope:
    """The envelope of a parsed JSON object. ``strict``: unknown top-level
    fields are an error (requests); otherwise they are ignored (replies, so
    that a newer peer's extra field cannot make a reply unreadable)."""
    if len(obj) == 5:
        # The common request: exactly id, service, verb, schema and an object
        # payload (five keys, all named: nothing else, no error). Anything
        # else, or a field that fails here, takes the full path below, which
        # gives the same error in the same order.
        try:
            ident, payload = obj["id"], obj["payload"]
            service, verb, schema = obj["service"], obj["verb"], obj["schema"]
        except KeyError:
            pass
        else:
            if type(payload) is dict and type(ident) is str and UUID4_RE.fullmatch(ident):
                _check_route(service, verb, schema)
                return Envelope.trusted(ident, service, verb, schema, payload)
    extra = obj.keys() - FIELDS
    if extra and strict:
        raise BadRequest(
            "Envelope has unknown top-level fields",
            details={"fields": sorted(str(k)[:64] for k in extra)[:8]},
        )
    for field in ("id", "service", "verb", "schema"):
        if field not in obj:
            raise BadRequest(
                f"Missing required field '{field}'",
                details={"field": field, "constraint": "required"},
            )
    # The Envelope reads None as "absent"; on the wire null is not an object.
    for field in ("payload", "error"):
        if field in obj and obj[field] is None:
            raise BadRequest(
                f"Field '{field}' must be an object",
                details={"field": field, "constraint": "type"},
            )
    fields = obj["id"], obj["service"], obj["verb"], obj["schema"]
    payload, error = obj.get("payload"), obj.get("error")
    validate_fields(*fields, payload, error)
    return Envelope.trusted(*fields, payload, error)


def decode_reply(data: bytes, request: Envelope) -> Envelope:
    """Decode the reply to ``request``: an envelope with the request's id,
    service and verb. Anything else raises :class:`WrongReply` (another
    request's reply, a forged or malformed message): the caller drops it and
    keeps waiting. Unknown top-level fields are ignored, whatever their
    number or place, so a newer peer's reply still decodes."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise WrongReply("reply too large")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise WrongReply("reply is not JSON") from None
    if (
        type(obj) is not dict
        or obj.get("id") != request.id
        or obj.get("service") != request.service
        or obj.get("verb") != request.verb
    ):
        raise WrongReply("reply does not answer this request")
    schema, payload, error = obj.get("schema"), obj.get("payload"), obj.get("error")
    if type(payload) is dict and error is None and type(schema) is str:
        _check_reply_schema(schema)
        return Envelope.trusted(request.id, request.service, request.verb, schema, payload)
    try:
        return _from_object(obj, strict=False)
    except BadRequest:
        raise WrongReply("reply is not a valid envelope") from None


def _check_reply_schema(schema: str) -> None:
    try:
        check_schema(schema)
    except BadRequest:
        raise WrongReply("reply schema is malformed") from None


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


def encode_payload(obj: Any) -> bytes:
    """Canonical JSON bytes of any JSON value (used for envelopes and payloads)."""
    try:
        data = orjson.dumps(obj, option=_SORT)
    except TypeError as exc:
        raise Internal("Payload is not JSON-serializable") from exc
    # orjson writes NaN and Infinity as null: look closer only when null appears.
    if b"null" in data and _has_non_finite(obj):
        raise Internal("Payload holds a non-finite number")
    return data


def encode(envelope: Envelope, *, extra: Mapping[str, Any] | None = None) -> bytes:
    """Deterministic UTF-8 JSON bytes of ``envelope``. ``extra`` adds top-level
    fields that this version of the contract does not know: only for showing
    how a newer peer's envelope is read (replies ignore them, requests refuse
    them)."""
    obj = envelope.to_dict()
    if extra:
        obj.update(extra)
    return encode_payload(obj)
