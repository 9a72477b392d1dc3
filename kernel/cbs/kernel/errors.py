"""Errors of the kernel itself (not of the wire): each is one line for a user."""

from __future__ import annotations

__all__ = ["UsageError", "PluginError", "ConfigError"]


class UsageError(Exception):
    """Something the user can fix: the CLI prints it as one line, exit code 2."""


class PluginError(UsageError):
    """A plugin failed to load or to register (names the plugin)."""


class ConfigError(UsageError):
    """An option has a bad value, or an unknown option was given."""
