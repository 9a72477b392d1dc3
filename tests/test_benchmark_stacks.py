"""The benchmark's every-plugin stack (``benchmarks.stacks.full_plugins``) is
what a user who follows the Quick start gets: every first-party plugin."""

from __future__ import annotations

from importlib.metadata import entry_points

from benchmarks.stacks import full_plugins


def test_the_every_plugin_stack_is_every_installed_first_party_plugin() -> None:
    installed = {e.value for e in entry_points(group="cbs") if e.value.startswith("cbs.")}
    assert {plugin.__name__ for plugin in full_plugins()} == installed
