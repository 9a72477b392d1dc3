"""Fault rules: what to inject, where, and how often.

A rule is a mapping (from YAML, JSON or code)::

    name: flaky-greeter        # unique in a set; default "<fault>-<n>"
    fault: abort               # delay | abort | drop
    side: server               # server (default) | client
    subject: "cbs.greeter.*"   # NATS wildcards on cbs.{service}.{verb}; default "cbs.>"
    cell: greet                # only this cell id (optional)
    headers: {tenant: acme}    # only requests with these header values (optional)
    percent: 50                # share of matching requests, 0 < p <= 100 (default 100)
    error: Unavailable         # abort: BadRequest | Timeout | NotFound | Internal | Unavailable
    message: Injected fault    # abort: the error message
    retry_after: 2             # abort with Unavailable: details.retry_after, seconds
    delay: 0.2                 # delay: seconds
    jitter: 0.05               # delay: +- seconds, uniform
    hold: 5                    # drop on the server: longest hold of a dropped reply

Everything is checked when rules are loaded or switched; a bad rule is a
one-line ``ConfigError`` (or, over the control subject, a one-line refusal).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from cbs.contracts import BadRequest, CbsError, Internal, NotFound, Timeout, Unavailable
from cbs.kernel import ConfigError

__all__ = ["Rule", "FAULTS", "SIDES", "ERRORS", "parse_rules", "read_rules", "subject_matcher"]

FAULTS = ("delay", "abort", "drop")
SIDES = ("server", "client")
ERRORS: dict[str, type[CbsError]] = {
    cls.code: cls for cls in (BadRequest, Timeout, NotFound, Internal, Unavailable)
}
_KEYS = {
    "name",
    "fault",
    "side",
    "subject",
    "cell",
    "headers",
    "percent",
    "error",
    "message",
    "retry_after",
    "delay",
    "jitter",
    "hold",
}
_ONLY = {
    "error": "abort",
    "message": "abort",
    "retry_after": "abort",
    "delay": "delay",
    "jitter": "delay",
    "hold": "drop",
}
_MAX_SECONDS = 3600.0


def subject_matcher(pattern: str) -> Callable[[str], bool]:
    """A test of subjects against a NATS subject pattern: ``*`` matches one
    token, a final ``>`` one or more. ``ValueError`` for a bad pattern."""
    tokens = pattern.split(".")
    if not pattern or any(not t for t in tokens):
        raise ValueError(f"subject pattern {pattern!r} has an empty token")
    for i, token in enumerate(tokens):
        if token == ">" and i != len(tokens) - 1:
            raise ValueError(f"subject pattern {pattern!r}: '>' must be the last token")
        if token not in ("*", ">") and ("*" in token or ">" in token):
            raise ValueError(f"subject pattern {pattern!r}: a wildcard must be a whole token")
    tail = tokens[-1] == ">"
    head = tokens[:-1] if tail else tokens

    def matches(subject: str) -> bool:
        parts = subject.split(".")
        if len(parts) < len(head) + tail or (not tail and len(parts) != len(head)):
            return False
        return all(t == "*" or t == p for t, p in zip(head, parts, strict=False))

    return matches


def _seconds(value: Any, key: str, where: str, *, positive: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or value > _MAX_SECONDS or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"bad chaos rule {where}: {key} must be seconds {bound}, not {value!r}")
    return float(value)


@attrs.frozen
class Rule:
    """One validated fault rule (see the module docstring)."""

    name: str
    fault: str
    side: str = "server"
    subject: str = "cbs.>"
    cell: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    percent: float = 100.0
    error: str = "Unavailable"
    message: str = "Injected fault"
    retry_after: float | None = None
    delay: float = 0.0
    jitter: float = 0.0
    hold: float | None = None
    matches_subject: Callable[[str], bool] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "matches_subject", subject_matcher(self.subject))

    def targets(self, side: str, subject: str, cell: str | None) -> bool:
        """Whether the rule applies to an endpoint (fixed per endpoint)."""
        if side != self.side or not self.matches_subject(subject):
            return False
        return self.cell is None or self.cell == cell

    def hits(self, headers: Mapping[str, str] | None, rng: Callable[[], float]) -> bool:
        """Whether the rule applies to one request (its headers and the dice)."""
        if self.headers:
            if not headers:
                return False
            for key, value in self.headers.items():
                if headers.get(key) != value:
                    return False
        return self.percent >= 100.0 or rng() * 100.0 < self.percent

    def pause(self, rng: Callable[[], float]) -> float:
        """The delay of one request: ``delay`` +- ``jitter``, never below 0."""
        if not self.jitter:
            return self.delay
        return max(0.0, self.delay + (2.0 * rng() - 1.0) * self.jitter)

    def exception(self) -> CbsError:
        details = None if self.retry_after is None else {"retry_after": self.retry_after}
        return ERRORS[self.error](self.message, details=details)

    def to_dict(self) -> dict[str, Any]:
        """The rule as it would be written, with only the keys that apply."""
        data: dict[str, Any] = {
            "name": self.name,
            "fault": self.fault,
            "side": self.side,
            "subject": self.subject,
        }
        if self.cell is not None:
            data["cell"] = self.cell
        if self.headers:
            data["headers"] = dict(self.headers)
        if self.percent < 100:
            data["percent"] = self.percent
        if self.fault == "abort":
            data["error"] = self.error
            data["message"] = self.message
            if self.retry_after is not None:
                data["retry_after"] = self.retry_after
        elif self.fault == "delay":
            data["delay"] = self.delay
            if self.jitter:
                data["jitter"] = self.jitter
        elif self.hold is not None:
            data["hold"] = self.hold
        return data


def _rule(raw: Any, index: int) -> Rule:
    where = f"#{index + 1}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"bad chaos rule {where}: expected a mapping, not {raw!r}")
    if isinstance(raw.get("name"), str):
        where = f"{raw['name']!r}"
    unknown = set(raw) - _KEYS
    if unknown:
        known = ", ".join(sorted(_KEYS))
        raise ConfigError(f"bad chaos rule {where}: unknown key {sorted(unknown)[0]!r} ({known})")
    fault = raw.get("fault")
    if fault not in FAULTS:
        raise ConfigError(f"bad chaos rule {where}: fault must be one of {', '.join(FAULTS)}")
    for key, only in _ONLY.items():
        if key in raw and fault != only:
            raise ConfigError(f"bad chaos rule {where}: {key} applies to {only} rules only")
    values: dict[str, Any] = {"fault": fault}
    name = raw.get("name", f"{fault}-{index + 1}")
    if not isinstance(name, str) or not name or len(name) > 100:
        raise ConfigError(f"bad chaos rule {where}: name must be a non-empty text")
    values["name"] = name
    side = raw.get("side", "server")
    if side not in SIDES:
        raise ConfigError(f"bad chaos rule {where}: side must be server or client")
    values["side"] = side
    subject = raw.get("subject", "cbs.>")
    if not isinstance(subject, str):
        raise ConfigError(f"bad chaos rule {where}: subject must be a text")
    try:
        subject_matcher(subject)
    except ValueError as exc:
        raise ConfigError(f"bad chaos rule {where}: {exc}") from None
    values["subject"] = subject
    cell = raw.get("cell")
    if cell is not None and not isinstance(cell, str):
        raise ConfigError(f"bad chaos rule {where}: cell must be a cell id")
    values["cell"] = cell
    headers = raw.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError(f"bad chaos rule {where}: headers must map names to text values")
    values["headers"] = dict(headers)
    percent = raw.get("percent", 100)
    if not isinstance(percent, int | float) or isinstance(percent, bool) or not 0 < percent <= 100:
        raise ConfigError(f"bad chaos rule {where}: percent must be a number, 0 < p <= 100")
    values["percent"] = float(percent)
    if fault == "abort":
        error = raw.get("error", "Unavailable")
        if error not in ERRORS:
            raise ConfigError(f"bad chaos rule {where}: error must be one of {', '.join(ERRORS)}")
        values["error"] = error
        message = raw.get("message", "Injected fault")
        if not isinstance(message, str) or len(message) > 200:
            raise ConfigError(f"bad chaos rule {where}: message must be a short text")
        values["message"] = message
        if "retry_after" in raw:
            if error != "Unavailable":
                raise ConfigError(f"bad chaos rule {where}: retry_after needs error Unavailable")
            values["retry_after"] = _seconds(raw["retry_after"], "retry_after", where)
    elif fault == "delay":
        if "delay" not in raw:
            raise ConfigError(f"bad chaos rule {where}: a delay rule needs delay (seconds)")
        values["delay"] = _seconds(raw["delay"], "delay", where, positive=True)
        values["jitter"] = _seconds(raw.get("jitter", 0), "jitter", where)
    elif "hold" in raw:
        values["hold"] = _seconds(raw["hold"], "hold", where, positive=True)
    return Rule(**values)


def parse_rules(data: Any) -> list[Rule]:
    """Rules from a list of mappings, a mapping with the key ``rules``, or
    one rule (``ConfigError`` if bad, names must be unique)."""
    if data is None:
        return []
    if isinstance(data, Mapping) and "fault" in data:
        data = [data]
    elif isinstance(data, Mapping):
        if set(data) - {"rules"}:
            raise ConfigError("bad chaos rules: expected a list, or a mapping with only 'rules'")
        data = data.get("rules") or []
    if isinstance(data, str | bytes) or not isinstance(data, Iterable):
        raise ConfigError("bad chaos rules: expected a list of rules")
    rules = [_rule(raw, i) for i, raw in enumerate(data)]
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ConfigError(f"bad chaos rules: name {rule.name!r} is given twice")
        seen.add(rule.name)
    return rules


def _load_text(text: str, source: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"bad chaos rules: {source} is not valid YAML or JSON ({first})"
        ) from None


def read_rules(source: Any) -> list[Rule]:
    """Rules from the ``chaos_file`` option: a YAML or JSON file, YAML or
    JSON text (starting with ``[`` or ``{``), or in code a list or mapping."""
    if source is None or source == "":
        return []
    if not isinstance(source, str):
        return parse_rules(source)
    text = source.strip()
    if text.startswith(("[", "{")):
        return parse_rules(_load_text(text, "the text"))
    try:
        content = Path(text).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"bad chaos rules: cannot read {text} ({type(exc).__name__}: {exc})"
        ) from None
    if text.endswith(".json"):
        try:
            return parse_rules(json.loads(content))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"bad chaos rules: {text} is not valid JSON ({exc})") from None
    return parse_rules(_load_text(content, text))


def default_rng() -> Callable[[], float]:
    import random  # here: reading rules (every body's configuration) needs no generator

    return random.Random().random
