"""The CBS microkernel: hook specs, plugin loading, middleware, the body.

Public API for plugin and cell authors::

    from cbs.kernel import Body, Cell, hookimpl
"""

from cbs.kernel.arguments import PAYLOAD_HELP, parse_target, read_payload
from cbs.kernel.body import ANY_SCHEMA, DURABLE_SENDER, Body, DurableSender
from cbs.kernel.cell import CATEGORIES, Cell
from cbs.kernel.config import Config, Option, number
from cbs.kernel.errors import ConfigError, PluginError, UsageError
from cbs.kernel.middleware import (
    ClientHandler,
    ClientMiddleware,
    Request,
    Served,
    ServerHandler,
    ServerMiddleware,
    Target,
    current_request,
)
from cbs.kernel.plugins import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, PluginInfo, hookimpl
from cbs.kernel.registries import (
    CellFieldRegistry,
    CellRegistry,
    CommandRegistry,
    MiddlewareRegistry,
    OptionRegistry,
    TransportRegistry,
)
from cbs.kernel.stash import Stash, StashKey

__all__ = [
    "ANY_SCHEMA",
    "DURABLE_SENDER",
    "DurableSender",
    "BUILTIN_PLUGINS",
    "CATEGORIES",
    "ENTRY_POINT_GROUP",
    "Body",
    "Cell",
    "CellFieldRegistry",
    "CellRegistry",
    "ClientHandler",
    "ClientMiddleware",
    "CommandRegistry",
    "Config",
    "ConfigError",
    "MiddlewareRegistry",
    "Option",
    "OptionRegistry",
    "PAYLOAD_HELP",
    "PluginError",
    "PluginInfo",
    "Request",
    "Served",
    "ServerHandler",
    "ServerMiddleware",
    "Stash",
    "StashKey",
    "Target",
    "TransportRegistry",
    "UsageError",
    "current_request",
    "hookimpl",
    "number",
    "parse_target",
    "read_payload",
]
