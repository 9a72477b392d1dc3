"""A flush returns once the server has every command sent before it.

nats-py 2.16 writes flush's PING straight to the socket while a SUB queued
just before waits for the flusher task, so the PONG can come before the
server has the subscription (and a message sent right after is missed). The
transport's client queues the PING behind what is pending. A real
nats-server throughout; what reaches the socket is recorded in order."""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client

from cbs.nats._header_fix import ORDERED_PING, TolerantClient


def record_writes(nc: Client) -> list[bytes]:
    """Every chunk the client hands its socket from now on, in order."""
    written: list[bytes] = []
    transport = nc._transport
    assert transport is not None
    write, writelines = transport.write, transport.writelines

    def recording_write(data: bytes) -> None:
        written.append(bytes(data))
        write(data)

    def recording_writelines(data: list[bytes]) -> None:
        written.extend(bytes(d) for d in data)
        writelines(data)

    transport.write = recording_write  # type: ignore[method-assign]
    transport.writelines = recording_writelines  # type: ignore[method-assign]
    return written


async def sub_then_flush(nc: Client, subject: str) -> list[bytes]:
    written = record_writes(nc)
    await nc.subscribe(subject)
    await nc.flush()
    return [chunk for chunk in written if chunk.startswith((b"SUB ", b"PING"))]


async def test_the_pong_of_a_flush_comes_after_the_server_has_the_subscription(
    nats_server: Any,
) -> None:
    nc = TolerantClient()
    await nc.connect(nats_server.url)
    try:
        order = await sub_then_flush(nc, "order.a")
        assert [c.split()[0] for c in order] == [b"SUB", b"PING"]
        # and so a message published by another client right after is there
        other = await nats.connect(nats_server.url)
        sub = await nc.subscribe("order.b")
        await nc.flush()
        await other.publish("order.b", b"x")
        await other.flush()
        assert (await sub.next_msg(timeout=5)).data == b"x"
        await other.close()
        # the keep-alive and rtt use the same PING
        assert await nc.rtt() >= 0
    finally:
        await nc.close()


async def test_the_fix_is_on_while_nats_py_sends_its_ping_first(nats_server: Any) -> None:
    plain = await nats.connect(nats_server.url)
    try:
        order = await sub_then_flush(plain, "order.plain")
    finally:
        await plain.close()
    overtakes = [c.split()[0] for c in order] == [b"PING", b"SUB"]
    # A nats-py whose _send_ping changed turns the fix off: it must then be
    # one whose flush no longer overtakes what is pending.
    assert ORDERED_PING or not overtakes
