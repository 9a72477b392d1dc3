"""Direct subscriptions hand each message to a plain function as it is read:
in order, counted as nats-py counts them, never through nats-py's queue;
what arrives while the subscription is made is handed over first; a failing
function is an async error, not the end of the read loop; draining and
unsubscribing work as for any subscription. A real nats-server throughout,
with plain nats-py clients publishing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats_kit import server_has_it

from cbs.nats._direct import subscribe_direct
from cbs.nats._header_fix import DIRECT_DELIVERY, TolerantClient

pytestmark = pytest.mark.skipif(
    not DIRECT_DELIVERY, reason="this nats-py's message path is not the one checked against"
)


class Collected:
    """What a direct subscription was handed, and a way to wait for it."""

    def __init__(self) -> None:
        self.msgs: list[Msg] = []
        self.grown = asyncio.Event()

    def __call__(self, msg: Msg) -> None:
        self.msgs.append(msg)
        self.grown.set()

    async def until(self, count: int) -> list[Msg]:
        async with asyncio.timeout(5):
            while len(self.msgs) < count:
                self.grown.clear()
                await self.grown.wait()
        return self.msgs


@contextlib.asynccontextmanager
async def _clients(url: str, **options: Any) -> AsyncIterator[tuple[TolerantClient, Client]]:
    """CBS's client (connected with ``options``) and a plain nats-py one,
    both closed at the end."""
    ours = TolerantClient()
    await ours.connect(url, **options)
    other = await nats.connect(url)
    try:
        yield ours, other
    finally:
        await other.close()
        await ours.close()


async def test_messages_are_handed_over_in_order_and_never_queued(nats_server: Any) -> None:
    async with _clients(nats_server.url) as (ours, other):
        got = Collected()
        sub = await subscribe_direct(ours, "direct.a", got, queue="q")
        await ours.flush()
        for i in range(200):
            await other.publish("direct.a", str(i).encode(), headers={"n": str(i)})
        msgs = await got.until(200)
        assert [m.data for m in msgs] == [str(i).encode() for i in range(200)]
        assert [m.headers for m in msgs] == [{"n": str(i)} for i in range(200)]
        assert all(m.subject == "direct.a" for m in msgs)
        assert sub._wait_for_msgs_task is None  # no callback task: nothing queued
        assert sub._pending_queue.qsize() == 0 and sub._received == 200
        assert ours.stats["in_msgs"] >= 200


async def test_what_came_while_subscribing_is_handed_over_first(
    nats_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _clients(nats_server.url) as (ours, other):
        subscribe = ours.subscribe

        async def subscribe_and_receive(*args: Any, **kwargs: Any) -> Any:
            # As if messages were read while subscribe waited on the socket:
            # nats-py queued them for the subscription.
            sub = await subscribe(*args, **kwargs)
            for i in range(2):
                msg = ours._build_message(sub._id, b"direct.b", b"", b"early%d" % i, None)
                sub._pending_size += len(msg.data)
                sub._pending_queue.put_nowait(msg)
            return sub

        monkeypatch.setattr(ours, "subscribe", subscribe_and_receive)
        got = Collected()
        sub = await subscribe_direct(ours, "direct.b", got)
        monkeypatch.undo()
        await ours.flush()
        await other.publish("direct.b", b"late")
        msgs = await got.until(3)
        assert [m.data for m in msgs] == [b"early0", b"early1", b"late"]
        assert sub._pending_size == 0
        async with asyncio.timeout(5):
            await sub.drain()  # joins the queue the early ones were taken from
        assert sub._id not in ours._direct


async def test_a_failing_function_is_an_async_error_and_reading_goes_on(
    nats_server: Any,
) -> None:
    errors: list[Exception] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(exc)

    async with _clients(nats_server.url, error_cb=error_cb) as (ours, other):
        got = Collected()

        def deliver(msg: Msg) -> None:
            if msg.data == b"boom":
                raise RuntimeError("the function failed")
            got(msg)

        await subscribe_direct(ours, "direct.c", deliver)
        await ours.flush()
        for data in (b"one", b"boom", b"two"):
            await other.publish("direct.c", data)
        assert [m.data for m in await got.until(2)] == [b"one", b"two"]
        assert [str(e) for e in errors] == ["the function failed"]
        assert ours.malformed_messages == 0 and ours.is_connected


async def test_unsubscribed_it_is_handed_nothing_more(nats_server: Any) -> None:
    async with _clients(nats_server.url) as (ours, other):
        got = Collected()
        sub = await subscribe_direct(ours, "direct.d", got)
        await ours.flush()
        await other.publish("direct.d", b"before")
        await got.until(1)
        await sub.unsubscribe()
        assert sub._id not in ours._direct
        # A subscription made after it still gets its messages; the old one none.
        later = Collected()
        await subscribe_direct(ours, "direct.d", later)
        await ours.flush()
        await other.publish("direct.d", b"after")
        assert [m.data for m in await later.until(1)] == [b"after"]
        assert [m.data for m in got.msgs] == [b"before"]


async def test_a_plain_nats_py_client_gets_the_same_through_its_callback_task(
    nats_server: Any,
) -> None:
    plain, other = await nats.connect(nats_server.url), await nats.connect(nats_server.url)
    try:
        got = Collected()
        sub = await subscribe_direct(plain, "direct.e", got, pending_msgs_limit=10)
        assert sub._pending_msgs_limit == 10 and sub._wait_for_msgs_task is not None
        await server_has_it(plain)
        for i in range(5):
            await other.publish("direct.e", b"%d" % i)
        assert [m.data for m in await got.until(5)] == [b"%d" % i for i in range(5)]
    finally:
        await other.close()
        await plain.close()


async def test_an_answer_is_what_publish_sends_with_its_connection_checks(
    nats_server: Any,
) -> None:
    async with _clients(nats_server.url) as (ours, plain):
        got: asyncio.Queue[Msg] = asyncio.Queue()
        await plain.subscribe("_INBOX.answer", cb=got.put)
        await server_has_it(plain)
        await ours.answer("_INBOX.answer", b"the reply")
        async with asyncio.timeout(5):
            msg = await got.get()
        assert (msg.data, msg.headers) == (b"the reply", None)
        assert ours.stats["out_msgs"] == 1
        with pytest.raises(nats.errors.MaxPayloadError):
            await ours.answer("_INBOX.answer", b"x" * (ours.max_payload + 1))
    with pytest.raises(nats.errors.ConnectionClosedError):  # closed by now
        await ours.answer("_INBOX.answer", b"late")
