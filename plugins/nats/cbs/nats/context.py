"""The nats CLI's own context files (``nats context save NAME ...``).

A context is ``$XDG_CONFIG_HOME/nats/context/NAME.json`` (``~/.config`` by
default) with the fields ``url``, ``user``, ``password``, ``token``, ``creds``,
``nkey``, ``cert``, ``key``, ``ca``, ``tls_first`` and ``inbox_prefix`` (others
are ignored). ``--nats-context NAME`` reads it; an absolute path to a JSON file
works too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["context_path", "load_context"]

_FIELDS = (
    "url",
    "user",
    "password",
    "token",
    "creds",
    "nkey",
    "cert",
    "key",
    "ca",
    "tls_first",
    "inbox_prefix",
)


def context_path(name: str) -> Path:
    """Where the nats CLI keeps the context ``name``."""
    if name.endswith(".json") and os.sep in name:
        return Path(name)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "nats" / "context" / f"{name}.json"


def load_context(name: str) -> dict[str, Any]:
    """The context's fields that CBS uses (``ValueError`` with one line if unreadable)."""
    path = context_path(name)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"bad nats_context: cannot read {path} ({exc.strerror})") from None
    except ValueError:
        raise ValueError(f"bad nats_context: {path} is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError(f"bad nats_context: {path} is not a JSON object")
    fields = {k: data[k] for k in _FIELDS if data.get(k) not in (None, "")}
    for key in ("creds", "nkey", "cert", "key", "ca"):
        if key in fields:
            fields[key] = os.path.expanduser(str(fields[key]))
    return fields
