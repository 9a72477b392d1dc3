"""The ``nats`` transport against a real nats-server (one process)."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from jetstream_kit import eventually

from cbs.contracts import BadRequest, Envelope, Internal, NotFound, Timeout, Unavailable, codec
from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import Body, Cell
from cbs.kernel.middleware import current_request
from cbs.nats import plugin as nats_plugin
from cbs.testing import CellsPlugin


def test_cells() -> Cell:
    cell = Cell("tester", category="logic", version="1.0.0", purpose="test verbs")

    @cell.verb("sleep", schema="test/v1/Any")
    async def sleep(payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(payload.get("seconds", 0))
        return {"slept": payload.get("seconds", 0)}

    @cell.verb("fail", schema="test/v1/Any")
    async def fail(payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("bad"):
            raise BadRequest("Field 'x' is wrong", details={"field": "x"})
        raise RuntimeError("database password=hunter2")

    @cell.verb("headers", schema="test/v1/Any")
    async def headers(payload: dict[str, Any]) -> dict[str, Any]:
        return {"headers": dict(current_request().headers)}

    @cell.verb("cancel_itself", schema="test/v1/Any")
    async def cancel_itself(payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("after_a_wait"):
            await asyncio.sleep(0.01)  # in a task of its own by now
        raise asyncio.CancelledError  # at once: while the transport reads
        return {}

    return cell


test_cells.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture
async def body(nats_server: Any, make_body: Any) -> Body:
    body: Body = make_body(
        nats_plugin, greeter_plugin, CellsPlugin(test_cells()), config={"nats_url": nats_server.url}
    )
    await body.start()
    return body


async def test_nats_is_the_default_transport_when_installed(body: Body) -> None:
    assert body.bus is not None and body.bus.name == "nats" and body.bus.shared


async def test_request_reply(body: Body) -> None:
    assert await body.request("greeter", "say_hello", {"name": "Ada"}) == {"message": "Hello Ada!"}


async def test_error_replies_propagate(body: Body) -> None:
    with pytest.raises(BadRequest) as info:
        await body.request("greeter", "say_hello", {})
    assert info.value.details == {"field": "name", "constraint": "required"}
    with pytest.raises(BadRequest, match="Field 'x' is wrong"):
        await body.request("tester", "fail", {"bad": True})
    with pytest.raises(Internal) as internal:
        await body.request("tester", "fail", {})
    assert "hunter2" not in str(internal.value)


async def test_a_handler_raising_cancelled_error_itself_is_a_crash(
    body: Body, caplog: pytest.LogCaptureFixture
) -> None:
    # Nobody cancelled it: Internal, like any crash, and the connection reads on.
    assert body.bus is not None
    for payload in ({}, {"after_a_wait": True}, {}):
        with pytest.raises(Internal):
            await body.request("tester", "cancel_itself", payload, timeout=5)
    assert await body.request("greeter", "say_hello", {"name": "Ada"}) == {"message": "Hello Ada!"}
    assert "read loop" not in caplog.text and "reconnect" not in caplog.text
    assert body.bus.receiving


async def test_timeout_and_no_responders(body: Body) -> None:
    with pytest.raises(Timeout):
        await body.request("tester", "sleep", {"seconds": 2}, timeout=0.1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(NotFound):
        await body.request("nobody", "home", {}, timeout=5)
    assert loop.time() - began < 1  # no responders is immediate, not a timeout


async def test_timeouts_share_slots_fire_never_early_and_leave_nothing(body: Body) -> None:
    # Requests timing out at different moments, mixed with requests answered
    # in time: each fails on its own timeout, not before it and at most a
    # slot (plus scheduling) after it; answered requests leave their slot.
    bus: Any = body.bus
    loop = asyncio.get_running_loop()

    async def timed(seconds: float, timeout: float) -> tuple[float, float, bool]:
        began = loop.time()
        try:
            await body.request("tester", "sleep", {"seconds": seconds}, timeout=timeout)
        except Timeout:
            return timeout, loop.time() - began, True
        return timeout, loop.time() - began, False

    runs = [timed(1.0, 0.05 + 0.013 * i) for i in range(12)]
    runs += [timed(0.0, 0.05 + 0.013 * i) for i in range(12)]
    results = await asyncio.gather(*runs)
    for timeout, took, timed_out in results[:12]:
        assert timed_out and timeout <= took < timeout + 0.01 + 0.25, (timeout, took)
    assert not any(timed_out for _, _, timed_out in results[12:])
    assert not bus._replies.waiting
    # Every slot's timer runs (the last one within a slot of the longest
    # timeout), and none is left holding a token.
    await eventually(lambda: not bus._replies.slots, 2.0, "every slot expired")


async def test_headers_reach_the_handler(body: Body) -> None:
    reply = await body.request("tester", "headers", {}, headers={"traceparent": "00-abc-01"})
    assert reply["headers"]["traceparent"] == "00-abc-01"


async def test_handlers_run_concurrently(body: Body) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    replies = await asyncio.gather(
        *(body.request("tester", "sleep", {"seconds": 0.3}) for _ in range(20))
    )
    assert len(replies) == 20
    assert loop.time() - began < 2.0  # 20 x 0.3 s one at a time would be 6 s


async def test_malformed_input_gets_bad_request_and_cell_keeps_serving(
    body: Body, nats_server: Any
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        for junk in [b"", b"{", b"\xff\xfe\x00", b'{"id": 1}', b"[]" * 1000]:
            msg = await nc.request("cbs.greeter.say_hello", junk, timeout=2)
            reply = codec.decode(msg.data)
            assert reply.error is not None and reply.error["code"] == "BadRequest"
        # Without a reply subject nothing can be answered, and nothing breaks.
        await nc.publish("cbs.greeter.say_hello", b"garbage")
        await nc.flush()
    finally:
        await nc.close()
    assert await body.request("greeter", "say_hello", {"name": "Ada"}) == {"message": "Hello Ada!"}


async def test_connect_failure_is_one_clear_error(make_body: Any) -> None:
    from cbs.nats.server import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    body = make_body(nats_plugin, config={"nats_url": url, "nats_connect_timeout": 0.5})
    with pytest.raises(Unavailable, match=r"Cannot connect to NATS at nats://127\.0\.0\.1"):
        await body.start()


async def test_server_restart_mid_traffic(nats_server: Any, make_body: Any) -> None:
    body = make_body(
        greeter_plugin, nats_plugin, CellsPlugin(test_cells()), config={"nats_url": nats_server.url}
    )
    await body.start()
    assert await body.request("greeter", "say_hello", {"name": "a"})
    in_flight = asyncio.create_task(body.request("tester", "sleep", {"seconds": 1}, timeout=2))
    await asyncio.sleep(0.1)
    await asyncio.to_thread(nats_server.kill)
    with pytest.raises((Timeout, Unavailable)):
        await in_flight
    # While the server is away, the wait between reconnect attempts grows.
    options = body.bus.client.options  # type: ignore[union-attr]
    deadline = asyncio.get_running_loop().time() + 10
    while options["reconnect_time_wait"] <= 0.5:
        assert asyncio.get_running_loop().time() < deadline, "no backoff"
        await asyncio.sleep(0.1)
    await asyncio.to_thread(nats_server.start)  # same port, same store
    # The client reconnects by itself; later requests succeed.
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        try:
            reply = await body.request("greeter", "say_hello", {"name": "b"}, timeout=1)
            break
        except (Timeout, Unavailable, NotFound):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
    assert reply == {"message": "Hello b!"}
    assert options["reconnect_time_wait"] == 0.5  # reset once reconnected


async def test_embedded_server_when_no_url(make_body: Any) -> None:
    body = make_body(nats_plugin, greeter_plugin)
    await body.start()
    bus: Any = body.bus
    assert bus.name == "nats" and not bus.shared
    pid = bus.server.pid
    assert await body.request("greeter", "say_hello", {"name": "Ada"})
    await body.stop()
    import os

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_wire_envelope_is_exactly_the_contract(body: Body, nats_server: Any) -> None:
    """A raw request with hand-written JSON gets a reply with the same id."""
    nc = await nats.connect(nats_server.url)
    try:
        raw = (
            b'{"id": "550e8400-e29b-41d4-a716-446655440000", "service": "greeter",'
            b' "verb": "say_hello", "schema": "demo/v1/Name", "payload": {"name": "Ada Lovelace"}}'
        )
        msg = await nc.request("cbs.greeter.say_hello", raw, timeout=2)
    finally:
        await nc.close()
    reply = codec.decode(msg.data)
    assert reply == Envelope(
        id="550e8400-e29b-41d4-a716-446655440000",
        service="greeter",
        verb="say_hello",
        schema="demo/v1/Greeting",
        payload={"message": "Hello Ada Lovelace!"},
    )
