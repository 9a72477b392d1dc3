"""The three demo cells, payloads exactly as in the wire contracts:

=================  =========================  ==================  ============================
cell               subject                    request             reply
=================  =========================  ==================  ============================
``prompt_name``    ``cbs.prompt_name.read``   ``{}`` or a prompt  ``{"name": "..."}``
``greet``          ``cbs.greeter.say_hello``  ``{"name": "..."}`` ``{"message": "Hello <name>!"}``
``print_greeting`` ``cbs.printer.write``      ``{"message": ...}``  ``{"ok": true}``
=================  =========================  ==================  ============================
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from cbs.contracts import BadRequest
from cbs.kernel import Cell

__all__ = ["make_prompt_name", "make_greet", "make_print_greeting", "VERSION"]

VERSION = "1.0.0"
ERROR_SCHEMA = "demo/v1/Error"


def _required_text(payload: dict[str, Any], field: str) -> str:
    value = payload.get(field)
    if field not in payload:
        raise BadRequest(
            f"Missing required field '{field}'",
            details={"field": field, "constraint": "required"},
        )
    if not isinstance(value, str):
        raise BadRequest(
            f"Field '{field}' must be a string", details={"field": field, "constraint": "type"}
        )
    if not value.strip():
        raise BadRequest(
            f"Field '{field}' must not be empty",
            details={"field": field, "constraint": "minLength"},
        )
    return value


def _stdin_line(prompt: str) -> str | None:
    """Ask on a TTY (prompt on stderr, so stdout stays clean), else read a line."""
    if sys.stdin is None:
        return None
    if sys.stdin.isatty():
        print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    return line if line else None


def make_prompt_name(read_line: Callable[[str], str | None] = _stdin_line) -> Cell:
    """``prompt_name`` (io): reads a name with ``read_line(prompt)``; stdin by default."""
    cell = Cell(
        "prompt_name",
        service="prompt_name",
        category="io",
        version=VERSION,
        name="Prompt name",
        purpose="Asks for a person's name",
        error_schema=ERROR_SCHEMA,
        max_concurrency=1,  # one question at a time on one terminal
    )

    @cell.verb("read", schema="demo/v1/Prompt", reply_schema="demo/v1/Name")
    def read(payload: dict[str, Any]) -> dict[str, Any]:
        prompt = payload.get("prompt", "What is your name? ")
        if not isinstance(prompt, str):
            raise BadRequest(
                "Field 'prompt' must be a string", details={"field": "prompt", "constraint": "type"}
            )
        line = read_line(prompt)
        if line is None or not line.strip():
            raise BadRequest("No name was entered", details={"field": "name"})
        return {"name": line.strip()}

    return cell


def make_greet() -> Cell:
    """``greet`` (logic): ``{"name"}`` -> ``{"message": "Hello <name>!"}``."""
    cell = Cell(
        "greet",
        service="greeter",
        category="logic",
        version=VERSION,
        name="Greet",
        purpose="Greets a person by name",
        error_schema=ERROR_SCHEMA,
    )

    @cell.verb("say_hello", schema="demo/v1/Name", reply_schema="demo/v1/Greeting", idempotent=True)
    async def say_hello(payload: dict[str, Any]) -> dict[str, Any]:
        return {"message": f"Hello {_required_text(payload, 'name')}!"}

    return cell


def make_print_greeting(out: TextIO | None = None) -> Cell:
    """``print_greeting`` (io): writes the message line to ``out`` (stdout by default)."""
    cell = Cell(
        "print_greeting",
        service="printer",
        category="io",
        version=VERSION,
        name="Print greeting",
        purpose="Writes a greeting to standard output",
        error_schema=ERROR_SCHEMA,
    )

    @cell.verb("write", schema="demo/v1/Greeting", reply_schema="demo/v1/Ack")
    async def write(payload: dict[str, Any]) -> dict[str, Any]:
        message = _required_text(payload, "message")
        print(message, file=out or sys.stdout, flush=True)
        return {"ok": True}

    return cell
