"""Publishes made in one turn of the event loop reach the socket in chunks of
``EARLY_WRITE`` (not only all at once when nats-py's flusher runs after the
turn), in order, never while the connection is down, and never past a full
send buffer. A real nats-server throughout."""

from __future__ import annotations

from typing import Any

import nats
import pytest
from jetstream_kit import eventually
from nats.aio.client import Client

from cbs.nats import _header_fix
from cbs.nats._header_fix import EARLY_WRITE, FAST_HEADERS, TolerantClient
from cbs.nats.server import NatsServer

pytestmark = pytest.mark.skipif(not FAST_HEADERS, reason="nats-py's publish path changed")


def count_writes(nc: Client) -> list[int]:
    """How many commands each write to the socket carries, from now on."""
    writes: list[int] = []
    transport = nc._transport
    assert transport is not None
    writelines = transport.writelines

    def counting(data: list[bytes]) -> None:
        writes.append(len(data))
        writelines(data)

    transport.writelines = counting  # type: ignore[method-assign]
    return writes


async def connected(url: str, **options: Any) -> TolerantClient:
    nc = TolerantClient()
    await nc.connect(url, **options)
    return nc


async def burst(nc: Client, subject: str, count: int) -> None:
    """``count`` publishes in one turn of the loop (publish does not yield)."""
    for i in range(count):
        await nc.publish(subject, str(i).encode())


async def test_a_burst_goes_out_in_chunks_in_order(nats_server: Any) -> None:
    ours = await connected(nats_server.url)
    reader = await nats.connect(nats_server.url)
    try:
        sub = await reader.subscribe("early.burst")
        await reader.flush()
        writes = count_writes(ours)
        await burst(ours, "early.burst", 1000)
        # Written during the turn: every full chunk but what is left for the flusher.
        assert writes[: 1000 // EARLY_WRITE] == [EARLY_WRITE] * (1000 // EARLY_WRITE)
        await ours.flush()
        assert sum(writes) >= 1000
        got = [int((await sub.next_msg(timeout=5)).data) for _ in range(1000)]
        assert got == list(range(1000))
    finally:
        await reader.close()
        await ours.close()


async def test_a_full_send_buffer_leaves_the_writing_to_the_flusher(
    nats_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_header_fix, "EARLY_WRITE_BUFFER", -1)  # always "full"
    ours = await connected(nats_server.url)
    try:
        writes = count_writes(ours)
        await burst(ours, "early.full", 200)
        assert writes == [] and len(ours._pending) == 200
        await ours.flush()
        assert writes[0] == 201  # one write, by the flusher (and flush's PING)
    finally:
        await ours.close()


async def test_nothing_is_written_early_while_the_connection_is_down() -> None:
    server = NatsServer(jetstream=False)
    server.start()
    again = None
    try:
        ours = await connected(server.url, reconnect_time_wait=0.05, max_reconnect_attempts=-1)
        try:
            server.stop()  # by pid
            await eventually(lambda: ours.is_reconnecting, 10, "the client saw the loss")
            await burst(ours, "early.down", 100)
            # Kept for the new connection, not written to the dead one.
            assert sum(c.startswith(b"PUB early.down") for c in ours._pending) == 100
            again = NatsServer(port=server.port, jetstream=False)
            again.start()
            await eventually(lambda: ours.is_connected and not ours._pending, 10, "sent")
        finally:
            await ours.close()
    finally:
        server.stop()
        if again is not None:
            again.stop()
