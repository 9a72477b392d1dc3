"""What a pool runs: groups of Python workers and sidecars, from the options
``workers`` and ``replicas`` and the pool file (TOML)::

    [replicas]            # cells of these services get workers of their own
    greeter = 2

    [[sidecar]]           # a process in any language serving cells itself
    id = "greet_js"       # a name for the group (snake_case)
    service = "greeter"   # the service it serves (for cbs scale)
    language = "javascript"
    command = "node"
    args = ["sdks/js/examples/greet.js"]
    env = { GREETING = "Hello" }
    replicas = 1
    health = "heartbeat"  # or "none": only the process being alive counts
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from cbs.contracts.envelope import NAME_RE
from cbs.kernel import ConfigError

__all__ = ["SidecarSpec", "load_pool_file", "parse_replicas"]

HEALTH_CHECKS = ("heartbeat", "none")


@attrs.frozen
class SidecarSpec:
    """One sidecar declared in the pool file."""

    id: str
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict)
    replicas: int = 1
    service: str = ""
    language: str = "unknown"
    health: str = "heartbeat"


def parse_replicas(text: str) -> dict[str, int]:
    """``greeter=3,printer=1`` as ``{"greeter": 3, "printer": 1}``."""
    result: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, count = part.partition("=")
        if not sep or NAME_RE.fullmatch(name.strip()) is None or not count.strip().isdigit():
            raise ConfigError(f"replicas: {part!r} is not SERVICE=N (e.g. greeter=3)")
        result[name.strip()] = int(count)
    return result


def _sidecar(entry: Any, where: str) -> SidecarSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a [[sidecar]] entry must be a table")
    unknown = set(entry) - {f.name for f in attrs.fields(SidecarSpec)}
    if unknown:
        raise ConfigError(f"{where}: unknown sidecar key(s) {', '.join(sorted(unknown))}")
    ident, command = entry.get("id"), entry.get("command")
    if not isinstance(ident, str) or NAME_RE.fullmatch(ident) is None:
        raise ConfigError(f"{where}: sidecar id must be snake_case text")
    if not isinstance(command, str) or not command:
        raise ConfigError(f"{where}: sidecar {ident}: command must be text")
    args, env = entry.get("args", []), entry.get("env", {})
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where}: sidecar {ident}: args must be a list of text")
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError(f"{where}: sidecar {ident}: env must map names to text")
    replicas = entry.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= 64:
        raise ConfigError(f"{where}: sidecar {ident}: replicas must be 0 to 64")
    health = entry.get("health", "heartbeat")
    if health not in HEALTH_CHECKS:
        raise ConfigError(f"{where}: sidecar {ident}: health must be heartbeat or none")
    return SidecarSpec(
        id=ident,
        command=command,
        args=tuple(args),
        env=dict(env),
        replicas=replicas,
        service=str(entry.get("service", ident)),
        language=str(entry.get("language", "unknown")),
        health=health,
    )


def load_pool_file(path: str) -> tuple[dict[str, int], list[SidecarSpec]]:
    """The replicas and sidecars a pool file declares (``ConfigError`` if invalid)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"pool file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"pool file {path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"replicas", "sidecar"}
    if unknown:
        raise ConfigError(f"pool file {path}: unknown table(s) {', '.join(sorted(unknown))}")
    replicas = data.get("replicas", {})
    if not isinstance(replicas, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 64 for v in replicas.values()
    ):
        raise ConfigError(f"pool file {path}: [replicas] maps services to 0 to 64")
    sidecars = [_sidecar(e, f"pool file {path}") for e in data.get("sidecar", [])]
    return dict(replicas), sidecars
