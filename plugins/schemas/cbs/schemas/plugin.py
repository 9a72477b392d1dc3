"""Entry point ``schemas``: the endpoint options ``json_schema``,
``reply_json_schema`` and ``upcasts``, the validating server middleware,
the schema registry and the ``schema`` and ``asyncapi`` commands.

Only hook implementations live here; jsonschema-rs and nats-py are imported
when they are needed.
"""

from __future__ import annotations

from cbs.kernel import Body, Config, EndpointOptionRegistry, MiddlewareRegistry, hookimpl


@hookimpl
def cbs_add_endpoint_options(options: EndpointOptionRegistry) -> None:
    from cbs.schemas.validation import JSON_SCHEMA, REPLY_JSON_SCHEMA, UPCASTS

    options.add(JSON_SCHEMA)
    options.add(REPLY_JSON_SCHEMA)
    options.add(UPCASTS)


@hookimpl
def cbs_register_middleware(middleware: MiddlewareRegistry, config: Config, body: Body) -> None:
    from cbs.schemas.validation import schema_middleware

    middleware.add_server("json_schema", schema_middleware, phase="transport", order=0)
