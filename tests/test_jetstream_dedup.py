"""cbs-jetstream: durable deliveries deduplicated by envelope id in the bucket
``CBS_DONE_{service}``, and ``Cbs-Redelivered``. Real nats-server; the kill -9
version is tests/test_jetstream_kill9_dedup.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
import orjson
import pytest
from jetstream_kit import FAST, SCHEMA, Sink, eventually

from cbs.contracts.envelope import new_id
from cbs.jetstream import plugin as jetstream_plugin
from cbs.jetstream.inbox import REDELIVERED_HEADER
from cbs.jetstream.plugin import RUNTIME
from cbs.jetstream.settings import Settings
from cbs.kernel import Body, ConfigError
from cbs.nats import plugin as nats_plugin


def serve_sink(make_body: Any, url: str, sink: Sink, **config: Any) -> Any:
    return make_body(
        nats_plugin, jetstream_plugin, sink, config={"nats_url": url, **FAST, **config}
    )


async def client(make_body: Any, url: str, **config: Any) -> Any:
    body = make_body(nats_plugin, jetstream_plugin, config={"nats_url": url, **FAST, **config})
    await body.start(serve=False)
    return body


async def record(url: str, ident: str) -> dict[str, Any] | None:
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value("CBS_DONE_sink")
        try:
            entry = await kv.get(ident)
        except nats.js.errors.KeyNotFoundError:
            return None
        value: dict[str, Any] = orjson.loads(entry.value or b"{}")
        return value
    finally:
        await nc.close()


async def stored(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info("CBS_sink")).state.messages
    finally:
        await nc.close()


def test_the_dedup_window_defaults_to_the_duplicate_window_and_zero_turns_it_off() -> None:
    def settings(**config: Any) -> Settings:
        return Settings.from_config(Body(config, plugins=[jetstream_plugin], autoload=False).config)

    assert settings().dedup_window == 120
    assert settings(jetstream_duplicate_window="30s").dedup_window == 30
    assert settings(jetstream_dedup_window="1h").dedup_window == 3600
    assert settings(jetstream_dedup_window="0").dedup_window == 0
    with pytest.raises(ConfigError, match="--jetstream-dedup-window"):
        settings(jetstream_dedup_window=-1.0)


def inbox(body: Any, verb: str) -> Any:
    """The body's inbox of ``sink.{verb}``."""
    runtime = body.stash[RUNTIME]
    return next(i for group in runtime.inboxes.values() for i in group if i.verb == verb)


async def test_a_request_stored_again_after_the_duplicate_window_does_not_run_again(
    nats_server: Any, make_body: Any
) -> None:
    # The stream forgets the id after 1 s and stores the resend; the inbox does not run it.
    config = {"jetstream_duplicate_window": 1.0, "jetstream_dedup_window": 60.0}
    sink = Sink()
    server = serve_sink(make_body, nats_server.url, sink, **config)
    await server.start()
    sender = await client(make_body, nats_server.url, **config)
    ident = new_id()
    await sender.send("sink", "record", {"n": 1}, schema=SCHEMA, id=ident)
    await eventually(lambda: sink.seen[ident] == 1, what="the first run")
    await eventually(lambda: inbox(server, "record").busy == 0, what="the first ack")
    assert (await record(nats_server.url, ident) or {}).get("s") == "done"
    deadline = time.monotonic() + 10
    while await stored(nats_server.url) < 2:  # resend until the stream takes it again
        assert time.monotonic() < deadline, "the stream never stored the resend"
        await sender.send("sink", "record", {"n": 1}, schema=SCHEMA, id=ident)
        await asyncio.sleep(0.1)
    served = inbox(server, "record")
    await eventually(lambda: served.skipped == 1, what="the stored copy settled without running")
    assert sink.seen[ident] == 1
    assert sink.headers[ident][0].get(REDELIVERED_HEADER) is None


async def test_a_claim_left_by_a_dead_run_is_waited_for_then_taken_over_flagged(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    await serve_sink(make_body, nats_server.url, sink, jetstream_ack_wait=1.5).start()
    ident = new_id()
    nc = await nats.connect(nats_server.url)
    try:  # what an instance killed mid-handler leaves behind
        kv = await nc.jetstream().key_value("CBS_DONE_sink")
        claimed = time.monotonic()
        await kv.create(ident, orjson.dumps({"s": "run", "o": "elsewhere", "t": time.time()}))
    finally:
        await nc.close()
    sender = await client(make_body, nats_server.url)
    await sender.send("sink", "record", {"n": 1}, schema=SCHEMA, id=ident)
    await eventually(lambda: sink.seen[ident] == 1, what="the run after the claim went stale")
    # A claim not refreshed for 2/3 ack_wait (1 s) belongs to a run that died.
    assert sink.times[ident][0] - claimed >= 0.95
    assert sink.headers[ident][0][REDELIVERED_HEADER] == "1"
    deadline = time.monotonic() + 5
    while (await record(nats_server.url, ident) or {}).get("s") != "done":
        assert time.monotonic() < deadline, "never recorded as done"
        await asyncio.sleep(0.05)
    assert sink.seen[ident] == 1


async def test_a_retry_after_a_failure_is_flagged_and_the_first_delivery_is_not(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    await serve_sink(make_body, nats_server.url, sink).start()
    sender = await client(make_body, nats_server.url)
    ident = await sender.send("sink", "flaky", {"fail": 1}, schema=SCHEMA)
    await eventually(lambda: sink.seen[ident] == 2, what="the retry")
    first, retry = sink.headers[ident]
    assert REDELIVERED_HEADER not in first
    assert retry[REDELIVERED_HEADER] == "1"
    deadline = time.monotonic() + 5
    while (await record(nats_server.url, ident) or {}).get("s") != "done":
        assert time.monotonic() < deadline, "never recorded as done"
        await asyncio.sleep(0.05)


async def test_without_dedup_no_bucket_is_made_and_retries_are_still_flagged(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    await serve_sink(make_body, nats_server.url, sink, jetstream_dedup_window=0).start()
    sender = await client(make_body, nats_server.url)
    ident = await sender.send("sink", "flaky", {"fail": 1}, schema=SCHEMA)
    await eventually(lambda: sink.seen[ident] == 2, what="the retry")
    assert [REDELIVERED_HEADER in h for h in sink.headers[ident]] == [False, True]
    nc = await nats.connect(nats_server.url)
    try:
        names = await nc.jetstream().streams_info()
    finally:
        await nc.close()
    assert "KV_CBS_DONE_sink" not in {info.config.name for info in names}


async def test_two_instances_never_run_one_id_at_once_across_a_server_kill(
    nats_server: Any, make_body: Any
) -> None:
    # Slow handlers on two instances; the server dies with all of them running
    # and forgets what it delivered: the redeliveries must wait for the claims.
    # A claim goes stale 2/3 ack_wait after its last refresh, and the holders
    # cannot refresh while the server is down and until they reconnect: the
    # guarantee holds for outages shorter than that (docs/jetstream.md), so
    # ack_wait leaves the restart below 2 s.
    sinks = [Sink(), Sink()]
    config = {"jetstream_ack_wait": 3.0, "jetstream_publish_timeout": 20.0}
    for sink in sinks:
        await serve_sink(make_body, nats_server.url, sink, **config).start()
    sender = await client(make_body, nats_server.url, **config)
    ids = [await sender.send("sink", "slow", {"sleep": 4.0}, schema=SCHEMA) for _ in range(20)]
    await eventually(lambda: sum(s.running for s in sinks) == 20, what="all running")
    nats_server.kill()
    await asyncio.sleep(0.3)
    await asyncio.to_thread(nats_server.start)

    def runs(ident: str) -> int:
        return sum(s.seen[ident] for s in sinks)

    await eventually(lambda: all(runs(i) >= 1 for i in ids), seconds=20, what="all ran")
    deadline = time.monotonic() + 20
    while not all([(await record(nats_server.url, i) or {}).get("s") == "done" for i in ids]):
        assert time.monotonic() < deadline, "not all recorded as done"
        await asyncio.sleep(0.1)
    nc = await nats.connect(nats_server.url)
    try:  # everything acked: nothing more can come
        deadline = time.monotonic() + 20
        while True:
            info = await nc.jetstream().consumer_info("CBS_sink", "CBS_sink_slow")
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            assert time.monotonic() < deadline, f"not settled: {info}"
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
    assert {i: runs(i) for i in ids if runs(i) != 1} == {}
    assert sum(s.peak for s in sinks) >= 20


async def test_a_deleted_bucket_is_made_again_and_deliveries_go_on(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    await serve_sink(make_body, nats_server.url, sink).start()
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().delete_stream("KV_CBS_DONE_sink")
        sender = await client(make_body, nats_server.url)
        ident = await sender.send("sink", "record", {"n": 1}, schema=SCHEMA)
        await eventually(lambda: sink.seen[ident] == 1, what="handled after the bucket is back")
        await nc.jetstream().stream_info("KV_CBS_DONE_sink")  # raises if it is not
    finally:
        await nc.close()
    assert sink.seen[ident] == 1
