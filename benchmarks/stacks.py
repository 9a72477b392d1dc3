"""What is measured: each stack offers a responder and a ``call(payload)``.

Every stack encodes and decodes the same ~100-byte JSON payload on both sides,
with orjson, the JSON library CBS's codec uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson

from cbs.kernel import Body, Cell, CellRegistry, Config, hookimpl

PAYLOAD: dict[str, Any] = {
    "name": "Ada Lovelace",
    "id": 1815,
    "tags": ["math", "engine"],
    "score": 0.97,
    "active": True,
    "note": "first program",
}
SUBJECT_RAW = "bench.echo"
SCHEMA = "bench/v1/Echo"

Call = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def echo_handler(payload: dict[str, Any]) -> dict[str, Any]:
    return {"echo": payload["name"], "n": payload["id"] + 1}


#: The JSON Schema of PAYLOAD, for the ``schemas`` scenario (cbs-schemas).
ECHO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "id": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 16},
        "score": {"type": "number"},
        "active": {"type": "boolean"},
        "note": {"type": "string"},
    },
    "required": ["name", "id"],
    "additionalProperties": False,
}


def bench_cell(service: str = "bench", **options: Any) -> Cell:
    cell = Cell(
        f"{service}_echo",
        service=service,
        category="logic",
        version="1.0.0",
        purpose="Benchmark echo",
        max_concurrency=256,
    )
    cell.add_verb("echo", echo_handler, schema=SCHEMA, **options)
    return cell


class BenchPlugin:
    """Registers the benchmark cell (of service ``service``, with endpoint
    options, e.g. ``json_schema``). Its verb ``flush`` returns once the spans
    the body recorded so far are exported (see :class:`Settled`)."""

    name = "bench"

    def __init__(self, service: str = "bench", **options: Any) -> None:
        self.service = service
        self.options = options
        self.body: Body | None = None

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cell = bench_cell(self.service, **self.options)
        cell.add_verb("flush", self._flush, schema="bench/v1/Flush")
        cells.add(cell)

    @hookimpl
    def cbs_body_starting(self, body: Body) -> None:
        self.body = body

    async def _flush(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.body is not None
        await flush_spans(self.body)
        return {}


async def flush_spans(body: Body) -> None:
    """Wait until every span ``body`` recorded has been exported."""
    from cbs.tracing import tracer_provider

    provider = tracer_provider(body)
    force_flush = getattr(provider, "force_flush", None)  # an SDK provider's
    if force_flush is not None:
        await asyncio.to_thread(force_flush, 30_000)


class Settled:
    """A stack whose work is not over when its replies are: its spans are
    still to be exported, in the background, by both processes. Measured, the
    time until both have exported what the requests recorded is counted."""

    def __init__(self, body: Body, service: str) -> None:
        self.body = body
        self.service = service

    async def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.body.request(self.service, "echo", payload, timeout=10)

    async def settle(self) -> None:
        await flush_spans(self.body)  # the caller's spans
        await self.body.request(self.service, "flush", {}, timeout=60)  # the responder's


# -- raw nats-py ---------------------------------------------------------------------------


async def raw_responder(nc: Any) -> Any:
    """A queue-group subscriber replying with ``msg.respond``."""

    async def on_message(msg: Any) -> None:
        reply = await echo_handler(orjson.loads(msg.data))
        await msg.respond(orjson.dumps(reply))

    return await nc.subscribe(SUBJECT_RAW, queue="bench", cb=on_message)


def raw_call(nc: Any) -> Call:
    async def call(payload: dict[str, Any]) -> dict[str, Any]:
        msg = await nc.request(SUBJECT_RAW, orjson.dumps(payload), timeout=10)
        result: dict[str, Any] = orjson.loads(msg.data)
        return result

    return call


# -- CBS ---------------------------------------------------------------------------------------


def cbs_call(body: Body, service: str = "bench") -> Call:
    async def call(payload: dict[str, Any]) -> dict[str, Any]:
        return await body.request(service, "echo", payload, timeout=10)

    return call


def direct_call() -> Call:
    """The baseline of the local bus: a direct await, encoding both ways."""

    async def call(payload: dict[str, Any]) -> dict[str, Any]:
        request = orjson.loads(orjson.dumps(payload))
        reply = await echo_handler(request)
        result: dict[str, Any] = orjson.loads(orjson.dumps(reply))
        return result

    return call


def make_body(
    *extra: Any, service: str = "bench", cells: BenchPlugin | None = None, **config: Any
) -> Body:
    return Body(config, plugins=[cells or BenchPlugin(service), *extra], autoload=False)


#: The service of the bench cell on bodies with every first-party plugin (its
#: own queue group, so its requests never reach a nats-only responder).
FULL_SERVICE = "benchfull"
#: Every first-party plugin, every span exported over OTLP; and 10 % sampled.
EXPORTED_SERVICE = "benchspans"
SAMPLED_SERVICE = "benchsampled"
SAMPLED_RATIO = "0.1"


@contextlib.contextmanager
def exporting(sink_url: str, ratio: str | None = None) -> Iterator[None]:
    """OTEL_* variables, while a body starts, that make its TracerProvider
    export every span (or ``ratio`` of new traces) over OTLP/HTTP to ``sink_url``."""
    names = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink_url
    if ratio is not None:
        os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        os.environ["OTEL_TRACES_SAMPLER_ARG"] = ratio
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def full_plugins() -> list[Any]:
    """Every first-party plugin, as the README's Quick start installs them,
    with default settings (nats; jetstream; tracing without an exporter;
    metrics; breaker with its deadline; chaos with no rule; schemas, pool,
    spec and kubernetes idle; the greeter's cells)."""
    from cbs.breaker import plugin as breaker_plugin
    from cbs.chaos import plugin as chaos_plugin
    from cbs.greeter import plugin as greeter_plugin
    from cbs.jetstream import plugin as jetstream_plugin
    from cbs.kubernetes import plugin as kubernetes_plugin
    from cbs.metrics import plugin as metrics_plugin
    from cbs.nats import plugin as nats_plugin
    from cbs.pool import plugin as pool_plugin
    from cbs.schemas import plugin as schemas_plugin
    from cbs.spec import plugin as spec_plugin
    from cbs.tracing import plugin as tracing_plugin

    return [
        nats_plugin,
        jetstream_plugin,
        tracing_plugin,
        metrics_plugin,
        breaker_plugin,
        chaos_plugin,
        schemas_plugin,
        pool_plugin,
        spec_plugin,
        kubernetes_plugin,
        greeter_plugin,
    ]


# -- FastStream (optional: pip install 'cell-body-system[bench]') ----------------------------

SUBJECT_FASTSTREAM = "bench.faststream.echo"


def faststream_missing() -> str | None:
    """Why the FastStream stack cannot run (``None``: it can)."""
    try:
        import faststream.nats  # noqa: F401
    except ImportError:
        return "FastStream not installed (pip install 'cell-body-system[bench]'): stack skipped"
    return None


async def faststream_responder(url: str) -> Any:
    """A FastStream NatsBroker subscriber in a queue group, returning the reply."""
    from faststream.nats import NatsBroker

    broker = NatsBroker(url, logger=None)

    @broker.subscriber(SUBJECT_FASTSTREAM, queue="bench")
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return await echo_handler(payload)

    await broker.start()
    return broker


async def faststream_caller(url: str) -> tuple[Any, Call]:
    from faststream.nats import NatsBroker

    broker = NatsBroker(url, logger=None)
    await broker.start()

    async def call(payload: dict[str, Any]) -> dict[str, Any]:
        msg = await broker.request(payload, SUBJECT_FASTSTREAM, timeout=10)
        result: dict[str, Any] = await msg.decode()
        return result

    return broker, call
