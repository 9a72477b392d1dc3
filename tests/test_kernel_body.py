"""Component tests: cells served on the local bus through a real Body."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import pytest

from cbs.contracts import BadRequest, Internal, NotFound, Timeout, Unavailable, codec
from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import Body, Cell, Config, MiddlewareRegistry, hookimpl
from cbs.kernel.middleware import current_request
from cbs.testing import CellsPlugin


async def test_greeting_flow_on_local_bus(make_body: Any) -> None:
    body: Body = make_body(greeter_plugin)
    await body.start()
    reply = await body.request("greeter", "say_hello", {"name": "Ada"})
    assert reply == {"message": "Hello Ada!"}
    assert body.bus is not None and body.bus.name == "local"


@pytest.mark.parametrize("payload", [{}, {"name": ""}, {"name": 42}, {"name": "   "}])
async def test_say_hello_rejects_bad_names(make_body: Any, payload: dict[str, Any]) -> None:
    body = make_body(greeter_plugin)
    await body.start()
    with pytest.raises(BadRequest) as info:
        await body.request("greeter", "say_hello", payload)
    assert info.value.details is not None and info.value.details["field"] == "name"


async def test_unknown_subject_is_not_found(make_body: Any) -> None:
    body = make_body()
    await body.start()
    with pytest.raises(NotFound, match=r"cbs\.nope\.nothing"):
        await body.request("nope", "nothing", {})


async def test_request_before_start_is_unavailable(make_body: Any) -> None:
    with pytest.raises(Unavailable):
        await make_body().request("greeter", "say_hello", {"name": "x"})


async def test_crashing_handler_gives_internal_without_traceback(
    make_body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cell = Cell("crashy", category="logic", version="1.0.0", purpose="fails")

    @cell.verb("boom", schema="test/v1/Any")
    async def boom(payload: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("secret-token-123 leaked?")

    @cell.verb("fine", schema="test/v1/Any")
    async def fine(payload: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    body = make_body(CellsPlugin(cell))
    await body.start()
    assert body.bus is not None
    request = codec.Envelope.request("crashy", "boom", {}, schema="test/v1/Any")
    with caplog.at_level(logging.ERROR):
        raw = await body.bus.request("cbs.crashy.boom", codec.encode(request), timeout=2)
    reply = codec.decode(raw)
    assert reply.error == {"code": "Internal", "message": "Internal error"}
    assert b"secret" not in raw and b"Traceback" not in raw
    assert request.id in caplog.text and "secret-token-123" in caplog.text  # log has it
    # ... and the cell keeps serving.
    assert await body.request("crashy", "fine", {}) == {"ok": True}


async def test_a_handler_raising_cancelled_error_itself_gets_internal(make_body: Any) -> None:
    cell = Cell("canceller", category="logic", version="1.0.0", purpose="cancels itself")

    @cell.verb("now", schema="test/v1/Any")
    async def now(payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("after_a_wait"):
            await asyncio.sleep(0.01)
        raise asyncio.CancelledError  # nobody cancelled it: a crash

    body = make_body(CellsPlugin(cell))
    await body.start()
    for payload in ({}, {"after_a_wait": True}):
        with pytest.raises(Internal):
            await body.request("canceller", "now", payload, timeout=5)


async def test_malformed_request_gets_bad_request_reply(make_body: Any) -> None:
    body = make_body(greeter_plugin)
    await body.start()
    assert body.bus is not None
    for junk in [b"", b"not json", b"[1,2]", b'{"id": "x"}', b"\xff\xfe"]:
        reply = codec.decode(await body.bus.request("cbs.greeter.say_hello", junk, timeout=2))
        assert reply.error is not None and reply.error["code"] == "BadRequest"
        assert (reply.service, reply.verb) == ("greeter", "say_hello")
    # An envelope addressed to another subject is refused too.
    other = codec.Envelope.request("printer", "write", {"message": "x"}, schema="demo/v1/Greeting")
    reply = codec.decode(
        await body.bus.request("cbs.greeter.say_hello", codec.encode(other), timeout=2)
    )
    assert reply.error is not None and reply.error["code"] == "BadRequest"
    assert reply.id == other.id
    assert await body.request("greeter", "say_hello", {"name": "Ada"}) == {"message": "Hello Ada!"}


async def test_unsupported_schema_is_bad_request(make_body: Any) -> None:
    body = make_body(greeter_plugin)
    await body.start()
    with pytest.raises(BadRequest, match="Unsupported schema"):
        await body.request("greeter", "say_hello", {"name": "x"}, schema="demo/v2/Name")


async def test_timeout(make_body: Any) -> None:
    cell = Cell("slow", category="logic", version="1.0.0", purpose="sleeps")

    @cell.verb("sleep", schema="test/v1/Any")
    async def sleep(payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(5)
        return {}

    body = make_body(CellsPlugin(cell))
    await body.start()
    with pytest.raises(Timeout) as info:
        await body.request("slow", "sleep", {}, timeout=0.05)
    assert isinstance(info.value, TimeoutError)


async def test_handlers_run_concurrently_up_to_the_cell_limit(make_body: Any) -> None:
    running = 0
    peak = 0
    cell = Cell("busy", category="logic", version="1.0.0", purpose="waits", max_concurrency=3)

    @cell.verb("work", schema="test/v1/Any")
    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return {}

    body = make_body(CellsPlugin(cell))
    await body.start()
    await asyncio.gather(*(body.request("busy", "work", {}) for _ in range(10)))
    assert peak == 3


async def test_sync_handlers_run_in_a_thread(make_body: Any) -> None:
    cell = Cell("blocking", category="io", version="1.0.0", purpose="blocks")
    import threading
    import time

    @cell.verb("wait", schema="test/v1/Any")
    def wait(payload: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.05)
        return {"thread": threading.current_thread() is not threading.main_thread()}

    body = make_body(CellsPlugin(cell))
    await body.start()
    replies = await asyncio.gather(*(body.request("blocking", "wait", {}) for _ in range(4)))
    assert all(r == {"thread": True} for r in replies)


async def test_current_request_gives_envelope_and_headers(make_body: Any) -> None:
    cell = Cell("echo", category="logic", version="1.0.0", purpose="echoes")

    @cell.verb("meta", schema="test/v1/Any")
    async def meta(payload: dict[str, Any]) -> dict[str, Any]:
        request = current_request()
        return {"id": request.envelope.id, "tenant": request.headers.get("tenant")}

    body = make_body(CellsPlugin(cell))
    await body.start()
    reply = await body.request("echo", "meta", {}, headers={"tenant": "t1"})
    assert reply["tenant"] == "t1" and len(reply["id"]) == 36


async def test_queue_group_round_robin_between_instances(make_body: Any) -> None:
    hits: list[str] = []

    def instance(tag: str) -> Cell:
        cell = Cell("shared", category="logic", version="1.0.0", purpose="counts")

        @cell.verb("hit", schema="test/v1/Any")
        async def hit(payload: dict[str, Any]) -> dict[str, Any]:
            hits.append(tag)
            return {}

        return cell

    first = make_body(CellsPlugin(instance("a")))
    await first.start()
    assert first.bus is not None
    # A second instance of the same service joins the same bus and queue group.
    second_cell = instance("b")
    from cbs.kernel.middleware import Served
    from cbs.kernel.transport import endpoint_handler

    served = Served(second_cell, second_cell.endpoints[0])
    await first.bus.serve(
        served.subject, "shared", endpoint_handler(served, []), max_concurrency=10
    )
    for _ in range(10):
        await first.request("shared", "hit", {})
    assert hits.count("a") == 5 and hits.count("b") == 5


async def test_no_hook_call_per_message(make_body: Any, hook_recorder: Any) -> None:
    calls = 0

    def counting_client(target: Any, call_next: Any) -> Any:
        async def handler(request: Any, headers: Any, timeout: float) -> Any:
            nonlocal calls
            calls += 1
            return await call_next(request, headers, timeout)

        return handler

    class MiddlewarePlugin:
        name = "counting"

        @hookimpl
        def cbs_register_middleware(self, middleware: MiddlewareRegistry, config: Config) -> None:
            middleware.add_client("counting", counting_client)

        @hookimpl
        def cbs_body_stopping(self, body: Body) -> None:
            pass

    body = make_body(greeter_plugin, MiddlewarePlugin())
    await body.start()
    await body.request("greeter", "say_hello", {"name": "warm-up"})
    recorder = hook_recorder(body)
    for i in range(1000):
        await body.request("greeter", "say_hello", {"name": f"n{i}"})
    assert calls == 1001  # the middleware ran on every message...
    assert recorder.calls == []  # ...but no pluggy hook did
    await body.stop()
    assert "cbs_body_stopping" in recorder.calls  # the recorder does see hook calls


async def test_middleware_composed_once_per_endpoint_in_order(make_body: Any) -> None:
    built: list[str] = []
    seen: list[str] = []

    def server_mw(tag: str) -> Any:
        def factory(served: Any, call_next: Any) -> Any:
            built.append(f"{tag}:{served.subject}")

            async def handler(request: Any, headers: Any) -> Any:
                seen.append(tag)
                return await call_next(request, headers)

            return handler

        return factory

    class Plugin:
        name = "mw"

        @hookimpl
        def cbs_register_middleware(self, middleware: MiddlewareRegistry, config: Config) -> None:
            middleware.add_server("inner", server_mw("inner"), order=10)
            middleware.add_server("outer", server_mw("outer"), order=-10)

    body = make_body(greeter_plugin, Plugin())
    await body.start(serve=["greet"])
    for _ in range(5):
        await body.request("greeter", "say_hello", {"name": "x"})
    # Built once, inside out: the innermost factory wraps the cell first.
    assert built == ["inner:cbs.greeter.say_hello", "outer:cbs.greeter.say_hello"]
    assert seen == ["outer", "inner"] * 5


async def test_drain_finishes_in_flight_and_refuses_new(make_body: Any) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    cell = Cell("drainy", category="logic", version="1.0.0", purpose="waits")

    @cell.verb("work", schema="test/v1/Any")
    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await release.wait()
        return {"done": True}

    body = make_body(CellsPlugin(cell))
    await body.start()
    in_flight = asyncio.create_task(body.request("drainy", "work", {}))
    await started.wait()
    stopping = asyncio.create_task(body.stop())
    await asyncio.sleep(0.01)
    assert body.state == "stopping"
    assert body.bus is not None
    with pytest.raises(NotFound):  # new requests no longer reach the cell
        await body.request("drainy", "work", {})
    release.set()
    assert await in_flight == {"done": True}
    await stopping
    assert body.state == "stopped"


async def test_serve_selected_cells_only(make_body: Any) -> None:
    body = make_body(greeter_plugin)
    await body.start(serve=["greet"])
    assert [c.id for c in body.served_cells] == ["greet"]
    with pytest.raises(NotFound):
        await body.request("printer", "write", {"message": "x"})


async def test_handler_returning_non_mapping_is_internal(make_body: Any) -> None:
    cell = Cell("odd", category="logic", version="1.0.0", purpose="returns junk")

    @cell.verb("junk", schema="test/v1/Any")
    async def junk(payload: dict[str, Any]) -> Any:
        return ["not", "a", "dict"]

    @cell.verb("nan", schema="test/v1/Any")
    async def nan(payload: dict[str, Any]) -> Any:
        return {"x": float("nan")}

    body = make_body(CellsPlugin(cell))
    await body.start()
    with pytest.raises(Internal):
        await body.request("odd", "junk", {})
    with pytest.raises(Internal):
        await body.request("odd", "nan", {})


async def test_send_without_a_persistence_plugin_is_unavailable(make_body: Any) -> None:
    body = make_body(greeter_plugin)
    await body.start()
    with pytest.raises(Unavailable, match="cbs-jetstream"):
        await body.send("printer", "write", {"message": "x"})


async def test_a_signal_while_starting_drains_once_started(make_body: Any) -> None:
    # Without the handlers in place during the start, SIGTERM would end this
    # test process: the default action.
    body = make_body(greeter_plugin)
    began = asyncio.Event()
    finish = asyncio.Event()

    async def starting() -> None:
        began.set()
        await finish.wait()  # a slow start (a spec adding its cells)
        await body.start()

    serving = asyncio.ensure_future(body.run_until_signal(starting=starting()))
    await began.wait()  # the handlers are in place before the start begins
    os.kill(os.getpid(), signal.SIGTERM)
    finish.set()
    await asyncio.wait_for(serving, 10)  # returns only after a signal: it came during the start
    assert body.state == "stopped"  # started, then drained


class _Failing:
    name = "failing"

    @hookimpl
    async def cbs_cell_started(self, body: Body, cell: Cell) -> None:
        raise RuntimeError("cannot start")


class _Later:
    name = "later"

    @hookimpl
    async def cbs_cell_started(self, body: Body, cell: Cell) -> None:
        pass


async def test_a_failing_async_hook_leaves_no_coroutine_unawaited(make_body: Any) -> None:
    import gc
    import warnings

    # LIFO: _Failing (registered last) runs first; _Later's coroutine is made too.
    body = make_body(greeter_plugin, _Later(), _Failing())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Exception, match="cannot start"):
            await body.start()
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
