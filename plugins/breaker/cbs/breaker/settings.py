"""The ``breaker_config`` option: resilience settings per service and verb.

The value is a TOML file, a JSON object (text starting with ``{``, or a path
ending in ``.json``), or in code a mapping. Each table holds settings: the
table ``default`` for every target, a table named after a service for all its
verbs, a table ``"service.verb"`` (or ``[service.verb]``, nested) for one verb.
A target's policy is the built-in defaults, overridden by ``default``, then by
its service's table, then by its verb's table. Everything is checked when the
body starts; a bad value is a one-line ``ConfigError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from cbs.breaker.circuit import BreakerSettings
from cbs.kernel import ConfigError

__all__ = ["Policy", "Settings", "load_settings", "FIELDS"]

OPTION = "breaker_config"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SECONDS_OR_RATE = {
    "failure_rate",
    "cooldown",
    "deadline",
    "attempt_timeout",
    "backoff",
    "backoff_max",
}


_BREAKER = BreakerSettings()  # the breaker's defaults, stated once in circuit.py


@attrs.frozen
class Policy:
    """Everything the layers need to know about one target. Durations are in
    seconds; ``0`` turns the deadline, attempt timeout and bulkhead off."""

    #: Circuit breaker on or off.
    breaker: bool = True
    failure_threshold: int = _BREAKER.failure_threshold
    failure_rate: float = _BREAKER.failure_rate
    window: int = _BREAKER.window
    min_calls: int = _BREAKER.min_calls
    cooldown: float = _BREAKER.cooldown
    probes: int = _BREAKER.probes
    #: Overall deadline of a call (bulkhead wait and retries included); the
    #: caller's own timeout still applies when it is shorter. 0: the caller's.
    deadline: float = 0.0
    #: Longest wait for one attempt's reply. 0: whatever the deadline leaves.
    attempt_timeout: float = 0.0
    #: Send each attempt's deadline to the callee in the ``cbs-deadline`` header.
    propagate_deadline: bool = True
    #: Retries after the first attempt, for idempotent verbs only.
    retries: int = 2
    backoff: float = 0.05
    backoff_max: float = 1.0
    #: Declares the verb idempotent (or not), e.g. for verbs of remote cells;
    #: unset (``None``): the installed cell's ``idempotent`` flag, else no.
    idempotent: bool | None = None
    #: Calls in flight to the target at most (0: no bulkhead).
    max_concurrent: int = 0
    #: Calls waiting for a bulkhead slot at most, beyond which calls fail fast.
    max_queue: int = 0

    def breaker_settings(self) -> BreakerSettings:
        return BreakerSettings(
            failure_threshold=self.failure_threshold,
            failure_rate=self.failure_rate,
            window=self.window,
            min_calls=self.min_calls,
            cooldown=self.cooldown,
            probes=self.probes,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


Check = Callable[[Any], bool]
#: setting -> (check, what a good value is)
FIELDS: dict[str, tuple[Check, str]] = {
    "breaker": (lambda v: isinstance(v, bool), "true or false"),
    "failure_threshold": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: off)"),
    "failure_rate": (lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1 (0: off)"),
    "window": (lambda v: _is_int(v) and 1 <= v <= 10_000, "an integer from 1 to 10000"),
    "min_calls": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "cooldown": (lambda v: _is_number(v) and 0 < v <= 86_400, "seconds, > 0"),
    "probes": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "deadline": (lambda v: _is_number(v) and 0 <= v <= 86_400, "seconds, >= 0 (0: off)"),
    "attempt_timeout": (lambda v: _is_number(v) and 0 <= v <= 86_400, "seconds, >= 0 (0: off)"),
    "propagate_deadline": (lambda v: isinstance(v, bool), "true or false"),
    "retries": (lambda v: _is_int(v) and 0 <= v <= 100, "an integer from 0 to 100"),
    "backoff": (lambda v: _is_number(v) and 0 <= v <= 3_600, "seconds, >= 0"),
    "backoff_max": (lambda v: _is_number(v) and 0 <= v <= 3_600, "seconds, >= 0"),
    "idempotent": (lambda v: isinstance(v, bool), "true or false"),
    "max_concurrent": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: off)"),
    "max_queue": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
}


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"bad {OPTION}: {where}{message}")


def _check_policy(policy: Policy, where: str) -> None:
    """Rules between settings, checked on each table as it would apply."""
    if policy.min_calls > policy.window:
        raise _fail(where, f"min_calls ({policy.min_calls}) exceeds window ({policy.window})")
    if policy.backoff_max < policy.backoff:
        raise _fail(where, f"backoff_max ({policy.backoff_max}) is below backoff")
    if policy.breaker and not policy.failure_threshold and not policy.failure_rate:
        raise _fail(
            where, "failure_threshold and failure_rate are both 0: set breaker = false instead"
        )


@attrs.frozen
class Settings:
    """Validated tables: ``default``, per service and per ``(service, verb)``."""

    default: Mapping[str, Any] = attrs.field(factory=dict)
    services: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    verbs: Mapping[tuple[str, str], Mapping[str, Any]] = attrs.field(factory=dict)

    def policy(self, service: str, verb: str) -> Policy:
        """The policy of ``cbs.{service}.{verb}``: defaults, then the tables."""
        values: dict[str, Any] = {
            **self.default,
            **self.services.get(service, {}),
            **self.verbs.get((service, verb), {}),
        }
        return Policy(**values)


def _read(source: Any) -> Mapping[str, Any]:
    if source is None or source == "":
        return {}
    if isinstance(source, Mapping):
        return source
    if not isinstance(source, str):
        raise _fail("", f"expected a file name, a JSON object or a mapping, not {source!r}")
    text = source.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _fail("", f"not a valid JSON object ({exc})") from None
    else:
        path = Path(text)
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail("", f"cannot read {text} ({type(exc).__name__}: {exc})") from None
        import tomllib  # only for a file

        try:
            data = json.loads(content) if path.suffix == ".json" else tomllib.loads(content)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            kind = "JSON" if path.suffix == ".json" else "TOML"
            raise _fail("", f"{text} is not valid {kind} ({exc})") from None
    if not isinstance(data, Mapping):
        raise _fail("", "expected an object of tables")
    return data


def _settings_of(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise _fail(where, "expected a table of settings")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in FIELDS:
            known = ", ".join(FIELDS)
            raise _fail(where, f"unknown setting {key!r} (known: {known})")
        check, expected = FIELDS[key]
        if not check(value):
            raise _fail(where, f"{key} must be {expected}, not {value!r}")
        values[key] = float(value) if key in _SECONDS_OR_RATE else value
    return values


def load_settings(source: Any) -> Settings:
    """Parse and check the ``breaker_config`` option (``ConfigError`` if bad)."""
    data = _read(source)
    default: dict[str, Any] = {}
    services: dict[str, dict[str, Any]] = {}
    verbs: dict[tuple[str, str], dict[str, Any]] = {}

    def add_verb(service: str, verb: str, table: Any, where: str) -> None:
        if (service, verb) in verbs:
            raise _fail(where, "given twice")
        verbs[(service, verb)] = _settings_of(table, where)

    for name, table in data.items():
        where = f'["{name}"] '
        if not isinstance(name, str):
            raise _fail("", f"table name {name!r} is not text")
        if name == "default":
            default = _settings_of(table, where)
            continue
        service, dot, verb = name.partition(".")
        if _NAME.fullmatch(service) is None or (dot and _NAME.fullmatch(verb) is None):
            raise _fail(
                where.rstrip() + " ",
                "is neither 'default', a service nor 'service.verb' (lower snake_case names)",
            )
        if dot:
            add_verb(service, verb, table, where)
            continue
        if not isinstance(table, Mapping):
            raise _fail(where, "expected a table of settings")
        # [service.verb] in TOML nests the verb's table inside the service's.
        nested = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        for verb_name, verb_table in nested.items():
            inner = f'["{name}.{verb_name}"] '
            if _NAME.fullmatch(verb_name) is None:
                raise _fail(inner, "is not a verb name (lower snake_case)")
            add_verb(service, verb_name, verb_table, inner)
        services[service] = _settings_of({k: v for k, v in table.items() if k not in nested}, where)

    settings = Settings(default, services, verbs)
    # Check each table as it applies: over the defaults, and over its service's.
    _check_policy(settings.policy("", ""), '["default"] ' if default else "")
    for service in services:
        _check_policy(settings.policy(service, ""), f'["{service}"] ')
    for service, verb in verbs:
        _check_policy(settings.policy(service, verb), f'["{service}.{verb}"] ')
    return settings
