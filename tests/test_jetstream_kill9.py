"""cbs-jetstream: ``kill -9`` of the nats-server while 1000 durable sends are in
flight, then a restart on the same port and store. Every acknowledged send
must reach the cell at least once; duplicates are recognisable by envelope id.

Runs once by default; ``CBS_KILL9_RUNS=5 python -m pytest tests/test_jetstream_kill9.py``
runs it five times in a row (each run on a fresh server and store).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import nats
import pytest
from jetstream_kit import SCHEMA, Sink, eventually

from cbs.contracts import CbsError
from cbs.contracts.envelope import new_id
from cbs.jetstream import plugin as jetstream_plugin
from cbs.nats import plugin as nats_plugin

RUNS = int(os.environ.get("CBS_KILL9_RUNS", "1"))
SENDS = 1000
IN_FLIGHT = 64


@pytest.mark.parametrize("run", range(RUNS))
async def test_kill_9_while_durable_sends_are_in_flight_loses_no_acked_send(
    nats_server: Any, make_body: Any, run: int
) -> None:
    config = {
        "nats_url": nats_server.url,
        "jetstream_publish_timeout": 30.0,
        "jetstream_backoff": 0.05,
        "drain_timeout": 5.0,
    }
    sink = Sink()
    await make_body(nats_plugin, jetstream_plugin, sink, config=config).start()
    sender = make_body(nats_plugin, jetstream_plugin, config=config)
    await sender.start(serve=False)

    ids = [new_id() for _ in range(SENDS)]  # known up front, so a failed send can be resent
    acked: list[str] = []
    failed: dict[int, CbsError] = {}
    window = asyncio.Semaphore(IN_FLIGHT)

    async def send(i: int) -> None:
        async with window:
            try:
                await sender.send("sink", "record", {"n": i}, schema=SCHEMA, id=ids[i])
            except CbsError as exc:  # not acknowledged: no promise was made
                failed[i] = exc
                return
            acked.append(ids[i])

    async def kill_and_restart() -> int:
        await eventually(lambda: len(acked) >= SENDS // 4, seconds=30, what="a quarter acked")
        acked_before = len(acked)
        nats_server.kill()  # SIGKILL: no flush, no goodbye
        await asyncio.sleep(0.3)
        await asyncio.to_thread(nats_server.start)  # same port, same store
        return acked_before

    acked_before, *_ = await asyncio.gather(kill_and_restart(), *(send(i) for i in range(SENDS)))
    assert acked_before < SENDS, "the kill came after every send was acknowledged"

    # Every acknowledged id reaches the cell at least once: none is lost.
    await eventually(
        lambda: all(sink.seen[i] for i in acked), seconds=60, what="every acked id delivered"
    )
    lost = [i for i in acked if not sink.seen[i]]
    assert lost == []
    # Duplicates are recognisable: every delivery carries one of the ids we sent.
    assert set(sink.seen) <= set(ids)
    duplicates = sum(n - 1 for n in sink.seen.values())

    # Sends that failed are resent with the same id: stored once, delivered.
    for i in failed:
        await sender.send("sink", "record", {"n": i}, schema=SCHEMA, id=ids[i])
    await eventually(lambda: all(sink.seen[i] for i in ids), seconds=60, what="every id")
    assert all(sink.payloads[ids[i]] == {"n": i} for i in range(SENDS))

    # Inside the duplicate window every id is stored exactly once, restart or not.
    nc = await nats.connect(nats_server.url)
    try:
        info = await nc.jetstream().stream_info("CBS_sink")
    finally:
        await nc.close()
    assert info.state.messages == SENDS
    print(
        f"\nkill -9 run {run + 1}/{RUNS}: {acked_before} acked before the kill,"
        f" {len(acked)} acked in all, {len(failed)} failed and resent,"
        f" {duplicates} duplicate deliveries, {info.state.messages} stored"
    )
