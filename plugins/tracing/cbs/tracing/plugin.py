"""Entry point ``tracing``: a CLIENT span per request, a SERVER span per
handling, W3C trace context in message headers, trace ids in log records.

Only hook implementations live here. The middleware factories import
OpenTelemetry when a chain is composed (at start-up), never per message and
never for ``cbs plugins``. The ``TracerProvider`` is the body's, chosen when
it starts (:mod:`cbs.tracing.otel`) and forgotten when it has stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cbs.kernel import (
    ConfigError,
    hookimpl,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from cbs.kernel import (
        Body,
        ClientHandler,
        ClientMiddleware,
        Config,
        MiddlewareRegistry,
        OptionRegistry,
        Served,
        ServerHandler,
        ServerMiddleware,
        Target,
    )
    from cbs.tracing.otel import HeadSampling

#: Middleware order: outside the other middleware, so a span covers them
#: (and a breaker's or metrics' log lines carry the trace id).
ORDER = 0


@hookimpl
def cbs_add_options(options: OptionRegistry) -> None:
    options.add(
        "tracing_file",
        help="also write every finished span to this file, one JSON object a line (debugging)",
        env="CBS_TRACING_FILE",
        metavar="PATH",
    )
    options.add(
        "tracing_log_ids",
        help="append trace and envelope ids to plain-text log lines (default: on)",
        default=True,
        type=bool,
        env="CBS_TRACING_LOG_IDS",
    )


@hookimpl
def cbs_configured(config: Config, body: Body) -> None:
    # A span file that cannot be written is one line now, not a traceback later.
    path = config.get("tracing_file")
    if path:
        try:
            with open(path, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"bad tracing_file: cannot write spans to {path} ({exc.strerror})"
            ) from None


def _system(body: Body | None) -> str:
    """``messaging.system``: the transport's name, once the body has one."""
    bus = body.bus if body is not None else None
    return bus.name if bus is not None else "cbs"


def _tracer(body: Body | None) -> Tracer | None:
    """The tracer of the body's provider, chosen when the body started, or
    the recorder that stands in for it (without a body: OpenTelemetry's
    global provider, if one is installed)."""
    from cbs.tracing.middleware import tracer_of

    if body is not None:
        from cbs.tracing.otel import provider, recorder

        return recorder(body) or tracer_of(provider(body))
    from opentelemetry import trace

    return tracer_of(trace.get_tracer_provider())


def _head(body: Body | None) -> HeadSampling | None:
    """How the middleware samples: for the body's own provider only."""
    if body is None:
        return None
    from cbs.tracing.otel import head_sampling

    return head_sampling(body)


def client_factory(body: Body | None = None) -> ClientMiddleware:
    def factory(target: Target, call_next: ClientHandler) -> ClientHandler:
        from cbs.tracing.middleware import traced_client

        return traced_client(
            target, call_next, system=_system(body), tracer=_tracer(body), head=_head(body)
        )

    return factory


def server_factory(body: Body | None = None) -> ServerMiddleware:
    def factory(served: Served, call_next: ServerHandler) -> ServerHandler:
        from cbs.tracing.middleware import traced_server

        return traced_server(
            served, call_next, system=_system(body), tracer=_tracer(body), head=_head(body)
        )

    return factory


@hookimpl
def cbs_register_middleware(middleware: MiddlewareRegistry, body: Body) -> None:
    middleware.add_client("tracing", client_factory(body), phase="observe", order=ORDER)
    middleware.add_server("tracing", server_factory(body), phase="observe", order=ORDER)


@hookimpl
def cbs_body_starting(body: Body) -> None:
    from cbs.tracing import logs, otel

    otel.start(body)
    logs.hold(body, ids_in_text=bool(body.config.get("tracing_log_ids")))


@hookimpl
async def cbs_body_stopped(body: Body) -> None:
    from cbs.tracing import logs, otel

    logs.release(body)
    await otel.stop(body)
