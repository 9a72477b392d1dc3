"""Options declared by plugins and the resolved configuration of a body.

A value comes from, first to last: what the caller passed (CLI flag or the
``config`` mapping of ``Body``), the option's environment variable, its default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

from cbs.kernel.errors import ConfigError

__all__ = ["Option", "Config", "number", "resolve"]

N = TypeVar("N", int, float)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE - {''})}")


class _BadNumber(ValueError, argparse.ArgumentTypeError):
    """Both: ``Option.convert`` and argparse each show the message as is."""


def number(
    kind: Callable[[str], N],
    *,
    above: N | None = None,
    at_least: N | None = None,
    at_most: N | None = None,
) -> Callable[[str], N]:
    """A converter from text to ``kind`` (``int`` or ``float``) within bounds, for
    an option's ``type`` or an argparse ``type``: ``number(float, above=0)`` for a
    timeout, ``number(int, at_least=0, at_most=65535)`` for a port."""
    whole = kind is int

    def convert(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise _BadNumber("not a whole number" if whole else "not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise _BadNumber("not a finite number")
        if above is not None and not value > above:
            raise _BadNumber(f"must be > {above}")
        if at_least is not None and value < at_least:
            raise _BadNumber(f"must be >= {at_least}")
        if at_most is not None and value > at_most:
            raise _BadNumber(f"must be <= {at_most}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


@attrs.frozen
class Option:
    """One configuration option. ``type`` converts text (env, CLI) to a value."""

    name: str
    help: str
    default: Any = None
    type: Callable[[str], Any] = str
    env: str | None = None
    flag: str | None = None
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None
    plugin: str = ""

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def convert(self, value: Any, source: str) -> Any:
        if isinstance(value, str) and self.type is not str:
            try:
                value = _to_bool(value) if self.type is bool else self.type(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"bad value for {source}: {value!r} ({exc})") from None
        if self.choices is not None and value not in self.choices:
            choices = ", ".join(map(str, self.choices))
            raise ConfigError(f"bad value for {source}: {value!r} (choose from {choices})")
        return value


class Config(Mapping[str, Any]):
    """Read-only resolved options: ``config["transport"]``."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"no option {name!r} is declared by any loaded plugin") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Config({self._values!r})"


def resolve(
    options: Mapping[str, Option],
    given: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve every option from ``given``, then the environment, then defaults."""
    environ = os.environ if environ is None else environ
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} (no loaded plugin declares it)")
    values: dict[str, Any] = {}
    for name, option in options.items():
        if given.get(name) is not None:
            values[name] = option.convert(given[name], option.cli_flag)
        elif option.env and environ.get(option.env):
            values[name] = option.convert(environ[option.env], option.env)
        else:
            values[name] = option.default
    return Config(values)
