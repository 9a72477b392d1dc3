"""The CBS microkernel: hook specs, plugin loading, middleware, the body.

Public API for plugin and cell authors::

    from cbs.kernel import Body, Cell, hookimpl

Transport authors also use ``cbs.kernel.transport`` (the transport kit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel.lazy import lazy_exports

if TYPE_CHECKING:
    from cbs.kernel.arguments import PAYLOAD_HELP, parse_target, read_payload
    from cbs.kernel.body import ANY_SCHEMA, Body
    from cbs.kernel.capabilities import (
        Capabilities,
        Capability,
        Directory,
        DurableSender,
        Runner,
        Scaler,
        SpecServer,
        TransportState,
    )
    from cbs.kernel.cell import CATEGORIES, Cell
    from cbs.kernel.config import Config, Option, number
    from cbs.kernel.errors import ConfigError, PluginError, UsageError
    from cbs.kernel.middleware import (
        DEADLINE_HEADER,
        PHASES,
        ClientHandler,
        ClientMiddleware,
        Request,
        Served,
        ServerHandler,
        ServerMiddleware,
        Target,
        current_request,
        deadline_left,
    )
    from cbs.kernel.plugins import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, PluginInfo, hookimpl
    from cbs.kernel.registries import (
        CellFieldRegistry,
        CellRegistry,
        CommandRegistry,
        EndpointOption,
        EndpointOptionRegistry,
        MiddlewareRegistry,
        OptionRegistry,
        TransportRegistry,
    )
    from cbs.kernel.stash import Stash, StashKey

__all__ = [
    "ANY_SCHEMA",
    "BUILTIN_PLUGINS",
    "CATEGORIES",
    "ENTRY_POINT_GROUP",
    "Body",
    "Capabilities",
    "Capability",
    "Cell",
    "CellFieldRegistry",
    "CellRegistry",
    "ClientHandler",
    "ClientMiddleware",
    "CommandRegistry",
    "Config",
    "DEADLINE_HEADER",
    "ConfigError",
    "Directory",
    "DurableSender",
    "EndpointOption",
    "EndpointOptionRegistry",
    "MiddlewareRegistry",
    "Option",
    "OptionRegistry",
    "PHASES",
    "PAYLOAD_HELP",
    "PluginError",
    "PluginInfo",
    "Request",
    "Runner",
    "Scaler",
    "Served",
    "SpecServer",
    "ServerHandler",
    "ServerMiddleware",
    "Stash",
    "StashKey",
    "Target",
    "TransportRegistry",
    "TransportState",
    "UsageError",
    "current_request",
    "deadline_left",
    "hookimpl",
    "lazy_exports",
    "number",
    "parse_target",
    "read_payload",
]
# Each name is imported from its module when first read (see cbs.kernel.lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(("PAYLOAD_HELP", "parse_target", "read_payload"), "cbs.kernel.arguments"),
        **dict.fromkeys(("ANY_SCHEMA", "Body"), "cbs.kernel.body"),
        **dict.fromkeys(
            (
                "Capabilities",
                "Capability",
                "Directory",
                "DurableSender",
                "Runner",
                "Scaler",
                "SpecServer",
                "TransportState",
            ),
            "cbs.kernel.capabilities",
        ),
        **dict.fromkeys(("CATEGORIES", "Cell"), "cbs.kernel.cell"),
        **dict.fromkeys(("Config", "Option", "number"), "cbs.kernel.config"),
        **dict.fromkeys(("ConfigError", "PluginError", "UsageError"), "cbs.kernel.errors"),
        **dict.fromkeys(
            (
                "DEADLINE_HEADER",
                "ClientHandler",
                "ClientMiddleware",
                "Request",
                "Served",
                "ServerHandler",
                "ServerMiddleware",
                "Target",
                "current_request",
                "deadline_left",
            ),
            "cbs.kernel.middleware",
        ),
        **dict.fromkeys(
            ("BUILTIN_PLUGINS", "ENTRY_POINT_GROUP", "PluginInfo", "hookimpl"), "cbs.kernel.plugins"
        ),
        **dict.fromkeys(
            (
                "PHASES",
                "CellFieldRegistry",
                "CellRegistry",
                "CommandRegistry",
                "EndpointOption",
                "EndpointOptionRegistry",
                "MiddlewareRegistry",
                "OptionRegistry",
                "TransportRegistry",
            ),
            "cbs.kernel.registries",
        ),
        **dict.fromkeys(("Stash", "StashKey"), "cbs.kernel.stash"),
    },
)
