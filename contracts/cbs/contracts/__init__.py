"""CBS wire contracts: envelope, errors, codec, schemas and protocols."""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cbs.contracts.codec import MAX_DEPTH, MAX_ENVELOPE_BYTES, decode, encode
    from cbs.contracts.envelope import ERROR_SCHEMA, Envelope, parse_subject, subject_for
    from cbs.contracts.errors import (
        ERROR_CODES,
        BadRequest,
        CbsError,
        Internal,
        NoResponders,
        NotFound,
        Timeout,
        Unavailable,
    )
    from cbs.contracts.protocols import (
        DEFAULT_MAX_PENDING,
        DEFAULT_MAX_PENDING_BYTES,
        Bus,
        Cell,
        Endpoint,
        Outcome,
        PayloadHandler,
        RawHandler,
        ReplyCheck,
        Subscription,
        WrongReply,
    )
    from cbs.contracts.schemas import load_schema

__all__ = [
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_BYTES",
    "MAX_DEPTH",
    "MAX_ENVELOPE_BYTES",
    "ERROR_CODES",
    "ERROR_SCHEMA",
    "BadRequest",
    "Bus",
    "Cell",
    "CbsError",
    "Endpoint",
    "Envelope",
    "Internal",
    "NoResponders",
    "NotFound",
    "Outcome",
    "PayloadHandler",
    "RawHandler",
    "ReplyCheck",
    "Subscription",
    "Timeout",
    "Unavailable",
    "WrongReply",
    "decode",
    "encode",
    "load_schema",
    "parse_subject",
    "subject_for",
]
# Each name is imported from its module when first read (PEP 562): a plugin's
# entry point, read by every `cbs` command, should not pay for the codec.
_HOMES: dict[str, str] = {
    **dict.fromkeys(("MAX_DEPTH", "MAX_ENVELOPE_BYTES", "decode", "encode"), "cbs.contracts.codec"),
    **dict.fromkeys(
        ("ERROR_SCHEMA", "Envelope", "parse_subject", "subject_for"), "cbs.contracts.envelope"
    ),
    **dict.fromkeys(
        (
            "ERROR_CODES",
            "BadRequest",
            "CbsError",
            "Internal",
            "NoResponders",
            "NotFound",
            "Timeout",
            "Unavailable",
        ),
        "cbs.contracts.errors",
    ),
    **dict.fromkeys(
        (
            "DEFAULT_MAX_PENDING",
            "DEFAULT_MAX_PENDING_BYTES",
            "Bus",
            "Cell",
            "Endpoint",
            "Outcome",
            "PayloadHandler",
            "RawHandler",
            "ReplyCheck",
            "Subscription",
            "WrongReply",
        ),
        "cbs.contracts.protocols",
    ),
    **dict.fromkeys(("load_schema",), "cbs.contracts.schemas"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    setattr(sys.modules[__name__], name, value)  # read once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
