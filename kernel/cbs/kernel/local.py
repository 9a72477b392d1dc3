"""Built-in plugin ``local``: an in-process bus (:mod:`cbs.kernel.local_bus`).

It is the transport when no other is installed. This module holds only the
hook: every ``cbs`` command loads it, and only a body that connects to the
local bus imports the bus (and asyncio).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel.plugins import hookimpl

if TYPE_CHECKING:
    from cbs.kernel.config import Config
    from cbs.kernel.local_bus import LocalBus
    from cbs.kernel.registries import TransportRegistry

# No public names: pluggy reads every attribute of a plugin module when it
# registers it, so a lazy LocalBus here would import the bus on every command.
__all__: list[str] = []


def _make_local_bus(config: Config) -> LocalBus:
    from cbs.kernel.local_bus import LocalBus

    return LocalBus()


@hookimpl
def cbs_register_transports(transports: TransportRegistry) -> None:
    transports.add("local", _make_local_bus, priority=0)
