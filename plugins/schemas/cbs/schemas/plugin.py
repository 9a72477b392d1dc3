"""Entry point ``schemas``: the endpoint options ``json_schema``,
``reply_json_schema`` and ``upcasts``, the validating server middleware,
the schema registry and the ``schema`` and ``asyncapi`` commands.

Only hook implementations live here; jsonschema-rs and nats-py are imported
when they are needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel import (
    hookimpl,
)
from cbs.nats import NatsConnection

if TYPE_CHECKING:
    from cbs.contracts import Cell, Endpoint
    from cbs.kernel import (
        Body,
        CommandRegistry,
        Config,
        EndpointOptionRegistry,
        MiddlewareRegistry,
        Served,
        ServerHandler,
    )

#: The endpoint options that give a verb schemas.
_OPTION_NAMES = ("json_schema", "reply_json_schema", "upcasts")


def _declares_schemas(endpoint: Endpoint) -> bool:
    return any(name in endpoint.options for name in _OPTION_NAMES)


@hookimpl
def cbs_add_endpoint_options(options: EndpointOptionRegistry) -> None:
    from cbs.schemas.options import JSON_SCHEMA, REPLY_JSON_SCHEMA, UPCASTS

    options.add(JSON_SCHEMA)
    options.add(REPLY_JSON_SCHEMA)
    options.add(UPCASTS)


@hookimpl
def cbs_register_middleware(middleware: MiddlewareRegistry, config: Config, body: Body) -> None:
    middleware.add_server("json_schema", _schema_middleware, phase="transport", order=0)


def _schema_middleware(served: Served, call_next: ServerHandler) -> ServerHandler:
    # The validator (jsonschema-rs) is imported when a chain is composed.
    from cbs.schemas.validation import schema_middleware

    return schema_middleware(served, call_next)


@hookimpl
def cbs_add_commands(commands: CommandRegistry) -> None:
    commands.add(
        "schema",
        help="JSON Schemas of verbs: check compatibility, get them from the registry",
        run="cbs.schemas.commands:run_schema",
        configure="cbs.schemas.commands:configure_schema",
    )
    commands.add(
        "asyncapi",
        help="print an AsyncAPI 3.0 document of the installed (or, with --nats-url, served) cells",
        run="cbs.schemas.asyncapi:run",
        configure="cbs.schemas.asyncapi:configure",
    )


@hookimpl
def cbs_cell_started(body: Body, cell: Cell) -> None:
    # Publish in the background: serving never waits for the registry.
    conn = body.capabilities.get(NatsConnection)
    if conn is None or not any(_declares_schemas(e) for e in cell.endpoints):
        return
    import asyncio

    from cbs.schemas.registry import TASKS, publish_cell

    tasks = body.stash.setdefault(TASKS, set())
    task = asyncio.get_running_loop().create_task(
        publish_cell(conn.jetstream(timeout=2.0), cell, timeout=5.0)
    )
    tasks.add(task)
    task.add_done_callback(tasks.discard)


@hookimpl
async def cbs_body_stopping(body: Body) -> None:
    from cbs.schemas.registry import TASKS, published

    for task in body.stash.get(TASKS, set()):
        task.cancel()
    await published(body)
