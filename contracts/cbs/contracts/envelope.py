"""The envelope: the one message shape every CBS party speaks.

Fields, rules and subjects are exactly those of the wire contracts: ``id`` (UUID
v4, also the correlation id), ``service`` and ``verb`` (lower snake_case),
``schema`` (``domain/v{N}/Type``), and exactly one of ``payload`` and ``error``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import urandom as _urandom
from typing import Any

import attrs

from cbs.contracts.errors import ERROR_CODES, BadRequest, CbsError

__all__ = [
    "NAME_RE",
    "SCHEMA_RE",
    "Envelope",
    "ERROR_SCHEMA",
    "subject_for",
    "check_name",
    "check_schema",
    "parse_subject",
    "new_id",
    "validate_fields",
]

NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
SCHEMA_RE = re.compile(r"[a-z][a-z0-9_]+/v[0-9]+/[A-Za-z][A-Za-z0-9_]*")
UUID4_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}"
)

_new = object.__new__

#: Schema of error replies made by CBS itself (cells may name their own).
ERROR_SCHEMA = "cbs/v1/Error"


def _bad(field: str, constraint: str, message: str) -> BadRequest:
    return BadRequest(message, details={"field": field, "constraint": constraint})


def check_name(field: str, value: object) -> str:
    """Return ``value`` if it is a lower snake_case name, else raise ``BadRequest``."""
    if not isinstance(value, str):
        raise _bad(field, "type", f"Field '{field}' must be a string")
    if NAME_RE.fullmatch(value) is None:
        raise _bad(field, "pattern", f"Field '{field}' must be lower snake_case")
    return value


def check_schema(value: object, field: str = "schema") -> str:
    """Return ``value`` if it reads ``domain/v{N}/Type``, else raise ``BadRequest``."""
    if not isinstance(value, str):
        raise _bad(field, "type", f"Field '{field}' must be a string")
    if SCHEMA_RE.fullmatch(value) is None:
        raise _bad(field, "pattern", f"Field '{field}' must look like 'domain/v1/Type'")
    return value


def subject_for(service: str, verb: str) -> str:
    """The request subject of a verb: ``cbs.{service}.{verb}``."""
    return f"cbs.{service}.{verb}"


def parse_subject(subject: str) -> tuple[str, str]:
    """Split ``cbs.{service}.{verb}`` into ``(service, verb)`` or raise ``BadRequest``."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] != "cbs":
        raise _bad("subject", "pattern", "Subject must be 'cbs.{service}.{verb}'")
    return check_name("service", parts[1]), check_name("verb", parts[2])


def _check_error(error: object) -> None:
    if not isinstance(error, dict):
        raise _bad("error", "type", "Field 'error' must be an object")
    extra = error.keys() - {"code", "message", "details"}
    if extra:
        raise _bad("error", "additional", "Field 'error' has unknown members")
    code = error.get("code")
    if not isinstance(code, str) or code not in ERROR_CODES:
        raise _bad("error.code", "enum", "Field 'error.code' is not a known error code")
    if not isinstance(error.get("message"), str):
        raise _bad("error.message", "required", "Field 'error.message' must be a string")
    if "details" in error and not isinstance(error["details"], dict):
        raise _bad("error.details", "type", "Field 'error.details' must be an object")


# Validated (service, verb, schema) triples: most traffic repeats a few, so the
# regular expressions run once per triple, not once per message.
_KNOWN_ROUTES: set[tuple[str, str, str]] = set()
_KNOWN_LIMIT = 4096


def _check_route(service: object, verb: object, schema: object) -> None:
    strings = type(service) is str and type(verb) is str and type(schema) is str
    if strings and (service, verb, schema) in _KNOWN_ROUTES:
        return
    check_name("service", service)
    check_name("verb", verb)
    check_schema(schema)
    if len(_KNOWN_ROUTES) >= _KNOWN_LIMIT:
        _KNOWN_ROUTES.clear()
    _KNOWN_ROUTES.add((service, verb, schema))  # type: ignore[arg-type]


def validate_fields(
    id: object, service: object, verb: object, schema: object, payload: object, error: object
) -> None:
    """Raise ``BadRequest`` unless the fields make a valid envelope."""
    if type(id) is not str or UUID4_RE.fullmatch(id) is None:
        raise _bad("id", "format", "Field 'id' must be a UUID v4")
    _check_route(service, verb, schema)
    if (payload is None) == (error is None):
        raise _bad("payload", "oneOf", "Exactly one of 'payload' and 'error' must be present")
    if payload is not None and not isinstance(payload, dict):
        raise _bad("payload", "type", "Field 'payload' must be an object")
    if error is not None:
        _check_error(error)


def _as_dict(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A dict as it is (not copied: see Envelope); any other mapping copied."""
    if type(payload) is dict:
        return payload
    if not isinstance(payload, Mapping):
        raise _bad("payload", "type", "Field 'payload' must be an object")
    return dict(payload)


_VARIANT = dict(zip("0123456789abcdef", "89ab" * 4, strict=True))


def new_id() -> str:
    """A random UUID v4 string (16 bytes from os.urandom, version and variant set)."""
    h = _urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


@attrs.frozen(slots=True)
class Envelope:
    """An immutable, validated envelope. Build one with :meth:`request`,
    :meth:`reply` or :meth:`error_reply`; construction raises ``BadRequest``
    on any field that breaks the contract.

    A payload dict is not copied (that would cost every message a copy):
    treat it as read-only once it is in an envelope.
    """

    id: str
    service: str
    verb: str
    schema: str
    payload: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def __attrs_post_init__(self) -> None:
        validate_fields(self.id, self.service, self.verb, self.schema, self.payload, self.error)

    @classmethod
    def trusted(
        cls,
        id: str,
        service: str,
        verb: str,
        schema: str,
        payload: dict[str, Any] | None,
        error: dict[str, Any] | None = None,
    ) -> Envelope:
        """An envelope from fields already validated (skips the checks)."""
        env = _new(cls)
        _slot_id(env, id)
        _slot_service(env, service)
        _slot_verb(env, verb)
        _slot_schema(env, schema)
        _slot_payload(env, payload)
        _slot_error(env, error)
        return env

    # -- constructors ---------------------------------------------------------

    @classmethod
    def request(
        cls,
        service: str,
        verb: str,
        payload: Mapping[str, Any],
        *,
        schema: str,
        id: str | None = None,
    ) -> Envelope:
        """A new request with a fresh UUID v4 id (or the given one)."""
        payload = _as_dict(payload)
        if id is None:
            _check_route(service, verb, schema)
            return cls.trusted(new_id(), service, verb, schema, payload)
        return cls(id=id, service=service, verb=verb, schema=schema, payload=payload)

    def reply(self, payload: Mapping[str, Any], *, schema: str | None = None) -> Envelope:
        """A successful reply to this request: same id, service and verb."""
        payload = _as_dict(payload)
        schema = self.schema if schema is None else schema
        _check_route(self.service, self.verb, schema)
        return Envelope.trusted(self.id, self.service, self.verb, schema, payload)

    def error_reply(self, error: CbsError, *, schema: str = ERROR_SCHEMA) -> Envelope:
        """A failed reply to this request carrying ``error``."""
        return Envelope(
            id=self.id, service=self.service, verb=self.verb, schema=schema, error=error.to_wire()
        )

    # -- views ------------------------------------------------------------------

    @property
    def subject(self) -> str:
        """``cbs.{service}.{verb}``: where the request is sent."""
        return f"cbs.{self.service}.{self.verb}"

    @property
    def queue_group(self) -> str:
        """``{service}``: every instance of a service shares the load."""
        return self.service

    @property
    def is_error(self) -> bool:
        return self.error is not None

    def to_exception(self) -> CbsError | None:
        """The error of an error reply as an exception, or ``None``."""
        return None if self.error is None else CbsError.from_wire(self.error)

    def unwrap(self) -> dict[str, Any]:
        """The payload of a successful reply; raises the error of a failed one."""
        if self.error is not None:
            raise CbsError.from_wire(self.error)
        assert self.payload is not None
        return self.payload

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this envelope, in contract field order."""
        data: dict[str, Any] = {
            "id": self.id,
            "service": self.service,
            "verb": self.verb,
            "schema": self.schema,
        }
        if self.payload is not None:
            data["payload"] = self.payload
        else:
            data["error"] = self.error
        return data


# The slots' own setters: what ``object.__setattr__`` finds after a lookup by
# name, called directly (0.6 against 1.0 µs for a trusted envelope here).
_slot_id, _slot_service, _slot_verb, _slot_schema, _slot_payload, _slot_error = (
    Envelope.__dict__[name].__set__
    for name in ("id", "service", "verb", "schema", "payload", "error")
)
