"""The envelope: the one message shape every CBS party speaks.

Fields, rules and subjects are exactly those of the wire contracts: ``id`` (UUID
v4, also the correlation id), ``service`` and ``verb`` (lower snake_case),
``schema`` (``domain/v{N}/Type``), and exactly one of ``payload`` and ``error``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from cbs.contracts.errors import ERROR_CODES, BadRequest, CbsError

__all__ = [
    "Envelope",
    "ERROR_SCHEMA",
    "subject_for",
    "check_name",
    "check_schema",
    "parse_subject",
]

NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
SCHEMA_RE = re.compile(r"[a-z][a-z0-9_]+/v[0-9]+/[A-Za-z][A-Za-z0-9_]*")
UUID4_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}"
)

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


def _validate(env: Envelope) -> None:
    if not isinstance(env.id, str) or UUID4_RE.fullmatch(env.id) is None:
        raise _bad("id", "format", "Field 'id' must be a UUID v4")
    check_name("service", env.service)
    check_name("verb", env.verb)
    check_schema(env.schema)
    if (env.payload is None) == (env.error is None):
        raise _bad("payload", "oneOf", "Exactly one of 'payload' and 'error' must be present")
    if env.payload is not None and not isinstance(env.payload, dict):
        raise _bad("payload", "type", "Field 'payload' must be an object")
    if env.error is not None:
        _check_error(env.error)


@attrs.frozen(slots=True)
class Envelope:
    """An immutable, validated envelope. Build one with :meth:`request`,
    :meth:`reply` or :meth:`error_reply`; construction raises ``BadRequest``
    on any field that breaks the contract.

    The payload dict itself is not copied: treat it as read-only once sent.
    """

    id: str
    service: str
    verb: str
    schema: str
    payload: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def __attrs_post_init__(self) -> None:
        _validate(self)

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
        if not isinstance(payload, Mapping):
            raise _bad("payload", "type", "Field 'payload' must be an object")
        return cls(
            id=id if id is not None else str(uuid.uuid4()),
            service=service,
            verb=verb,
            schema=schema,
            payload=dict(payload),
        )

    def reply(self, payload: Mapping[str, Any], *, schema: str | None = None) -> Envelope:
        """A successful reply to this request: same id, service and verb."""
        if not isinstance(payload, Mapping):
            raise _bad("payload", "type", "Field 'payload' must be an object")
        return Envelope(
            id=self.id,
            service=self.service,
            verb=self.verb,
            schema=schema if schema is not None else self.schema,
            payload=dict(payload),
        )

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
