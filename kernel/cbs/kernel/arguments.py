"""Command-line arguments that several ``cbs`` commands share (``call``,
``send``, and plugin commands that send requests): ``SERVICE.VERB`` and a
request payload. Each failure is a :class:`UsageError` of one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

from cbs.contracts import parse_subject
from cbs.kernel.errors import UsageError

__all__ = ["PAYLOAD_HELP", "parse_target", "read_payload"]

#: Help text of a payload argument read with :func:`read_payload`.
PAYLOAD_HELP = "request payload: a JSON object, '-' to read it from stdin, @FILE from a file"


def _json_kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return "a number"
    return "a string" if isinstance(value, str) else "an array"


def parse_target(text: str) -> tuple[str, str]:
    """``"greeter.say_hello"`` -> ``("greeter", "say_hello")``. A missing verb
    is a :class:`UsageError`; names that are not lower snake_case raise the
    contracts' ``BadRequest``."""
    service, _, verb = text.partition(".")
    if not verb:
        raise UsageError(f"target must be SERVICE.VERB, not {text!r}")
    parse_subject(f"cbs.{service}.{verb}")
    return service, verb


def read_payload(text: str, *, stdin: IO[str] | None = None) -> dict[str, Any]:
    """A payload argument as a dict: JSON text, ``-`` for JSON on ``stdin``
    (default: ``sys.stdin``), or ``@PATH`` for a JSON file."""
    if text == "-":
        source = "stdin"
        data = (sys.stdin if stdin is None else stdin).read()
    elif text.startswith("@"):
        path = Path(text[1:])
        source = str(path)
        try:
            data = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read payload file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise UsageError(f"payload file {path} is not UTF-8 text") from None
    else:
        source, data = "", text
    where = f" ({source})" if source else ""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise UsageError(f"payload{where} is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise UsageError(f"payload{where} must be a JSON object, not {_json_kind(payload)}")
    return payload
