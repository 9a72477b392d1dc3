"""The CBS error hierarchy: one root, one subclass per wire code.

Every error that crosses the bus is one of these. The mapping to and from the
``error`` object of an envelope is 1:1: ``CbsError.from_wire(e.to_wire())`` gives
back an error of the same class, message and details. Messages are short and
fixed: they travel to other processes, so they never carry tracebacks or secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "CbsError",
    "BadRequest",
    "Timeout",
    "NotFound",
    "Internal",
    "Unavailable",
    "NoResponders",
    "ERROR_CODES",
]


class CbsError(Exception):
    """Root of every CBS error. ``code`` is the wire code of the subclass."""

    code: ClassVar[str] = "Internal"
    default_message: ClassVar[str] = "Internal error"

    def __init__(
        self, message: str | None = None, *, details: Mapping[str, Any] | None = None
    ) -> None:
        self.message = message if message is not None else self.default_message
        self.details: dict[str, Any] | None = None if details is None else dict(details)
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={self.details!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CbsError):
            return NotImplemented
        return (self.code, self.message, self.details) == (
            other.code,
            other.message,
            other.details,
        )

    __hash__ = Exception.__hash__

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` object of an error envelope: ``{code, message, details?}``."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return error

    @staticmethod
    def from_wire(error: Mapping[str, Any]) -> CbsError:
        """Build the exception of the right class from an envelope's ``error`` object."""
        cls = ERROR_CODES.get(error.get("code", ""), Internal)
        return cls(str(error.get("message", "")), details=error.get("details"))


class BadRequest(CbsError):
    """The request failed validation: malformed JSON, a missing field, a wrong type."""

    code = "BadRequest"
    default_message = "Bad request"


class Timeout(CbsError, TimeoutError):
    """No reply before the deadline. Also a built-in ``TimeoutError``."""

    code = "Timeout"
    default_message = "No reply before the deadline"


class NotFound(CbsError):
    """No cell serves that subject, or the resource does not exist."""

    code = "NotFound"
    default_message = "Not found"


class Internal(CbsError):
    """An unexpected failure inside a cell or the bus."""

    code = "Internal"
    default_message = "Internal error"


class Unavailable(CbsError):
    """The target is known but refuses work for now (open circuit, draining body)."""

    code = "Unavailable"
    default_message = "Service unavailable"


class NoResponders(NotFound):
    """``NotFound`` raised by the client path when the transport found no cell
    serving the subject, as opposed to a cell's ``NotFound`` error reply (a
    missing resource). Not a wire code of its own: it travels as ``NotFound``
    and comes back from the wire as ``NotFound``."""


ERROR_CODES: dict[str, type[CbsError]] = {
    cls.code: cls for cls in (BadRequest, Timeout, NotFound, Internal, Unavailable)
}
