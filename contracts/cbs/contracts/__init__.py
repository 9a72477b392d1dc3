"""CBS wire contracts: envelope, errors, codec, schemas and protocols."""

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
