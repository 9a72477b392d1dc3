"""cbs-jetstream: durable sends, deduplication by envelope id, idempotent
stream set-up, and request/reply untouched beside it. Real nats-server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from jetstream_kit import FAST, SCHEMA, Sink, eventually

from cbs.contracts import Unavailable
from cbs.jetstream import plugin as jetstream_plugin
from cbs.kernel import ConfigError
from cbs.nats import plugin as nats_plugin


@pytest.fixture
async def js(nats_server: Any) -> AsyncIterator[Any]:
    """A plain nats-py JetStream context on the test server, to look inside."""
    nc = await nats.connect(nats_server.url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


def sender(make_body: Any, url: str, **config: Any) -> Any:
    return make_body(nats_plugin, jetstream_plugin, config={"nats_url": url, **config})


async def test_send_stores_once_per_id_and_returns_after_the_puback(
    nats_server: Any, make_body: Any, js: Any
) -> None:
    body = sender(make_body, nats_server.url)
    await body.start(serve=False)
    ident = await body.send("sink", "record", {"n": 1}, schema=SCHEMA, headers={"x-trace": "t1"})
    info = await js.stream_info("CBS_sink")
    assert info.state.messages == 1  # stored before send() returned
    assert info.config.subjects == ["cbsd.sink.*"]
    assert info.config.storage == "file"
    assert info.config.retention == "limits"
    assert info.config.duplicate_window == 120.0
    assert info.config.max_age == 7 * 86400.0
    stored = await js.get_msg("CBS_sink", 1)
    assert stored.subject == "cbsd.sink.record"
    assert stored.headers["Nats-Msg-Id"] == ident
    assert stored.headers["x-trace"] == "t1"
    # The same id again, inside the duplicate window: stored once.
    assert await body.send("sink", "record", {"n": 1}, schema=SCHEMA, id=ident) == ident
    assert (await js.stream_info("CBS_sink")).state.messages == 1
    other = await body.send("sink", "record", {"n": 2}, schema=SCHEMA)
    assert other != ident
    assert (await js.stream_info("CBS_sink")).state.messages == 2


async def test_two_raw_publishes_of_one_id_inside_the_window_store_one(
    nats_server: Any, make_body: Any, js: Any
) -> None:
    body = sender(make_body, nats_server.url)
    await body.start(serve=False)
    await body.send("sink", "record", {}, schema=SCHEMA)  # creates CBS_sink
    headers = {"Nats-Msg-Id": "0b5f6c52-7f5e-4c3e-9a51-5f0d8a7c1e11"}
    first = await js.publish("cbsd.sink.record", b"{}", headers=dict(headers))
    again = await js.publish("cbsd.sink.record", b"{}", headers=dict(headers))
    assert again.duplicate and again.seq == first.seq


async def test_outside_the_duplicate_window_the_same_id_is_stored_again(
    nats_server: Any, make_body: Any, js: Any
) -> None:
    body = sender(make_body, nats_server.url, jetstream_duplicate_window=0.5)
    await body.start(serve=False)
    ident = await body.send("sink", "record", {}, schema=SCHEMA)
    assert (await js.stream_info("CBS_sink")).config.duplicate_window == 0.5
    await body.send("sink", "record", {}, schema=SCHEMA, id=ident)
    assert (await js.stream_info("CBS_sink")).state.messages == 1
    await asyncio.sleep(0.8)
    await body.send("sink", "record", {}, schema=SCHEMA, id=ident)
    assert (await js.stream_info("CBS_sink")).state.messages == 2


async def test_request_reply_keeps_working_beside_durable_verbs(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    server = make_body(nats_plugin, jetstream_plugin, sink, config={"nats_url": nats_server.url})
    await server.start()
    client = sender(make_body, nats_server.url)
    await client.start(serve=False)
    # A durable verb still answers on cbs.sink.record, and a plain verb as ever.
    assert await client.request("sink", "record", {"n": 1}, schema=SCHEMA) == {"ok": True}
    assert await client.request("sink", "ask", {"n": 2}, schema=SCHEMA) == {"asked": 2}
    ident = await client.send("sink", "record", {"n": 3}, schema=SCHEMA)
    await eventually(lambda: sink.seen[ident] == 1, what="durable delivery")


async def test_send_needs_the_nats_transport(make_body: Any) -> None:
    body = make_body(jetstream_plugin, config={"transport": "local"})
    await body.start(serve=False)
    with pytest.raises(Unavailable):
        await body.send("sink", "record", {}, schema=SCHEMA)


async def test_durable_verbs_on_the_local_bus_are_served_by_request_reply(
    make_body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink()
    body = make_body(jetstream_plugin, sink, config={"transport": "local"})
    await body.start()
    assert await body.request("sink", "record", {}, schema=SCHEMA) == {"ok": True}
    assert "served by request/reply only" in caplog.text


async def test_streams_are_created_once_and_updated_when_the_settings_change(
    nats_server: Any, make_body: Any, js: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = nats_server.url
    first = make_body(nats_plugin, jetstream_plugin, Sink(), config={"nats_url": url, **FAST})
    await first.start()
    consumer = await js.consumer_info("CBS_sink", "CBS_sink_record")
    assert consumer.config.filter_subject == "cbsd.sink.record"
    assert consumer.config.ack_policy == "explicit"
    assert consumer.config.max_deliver == -1
    await first.stop()
    caplog.clear()
    # Same settings: nothing changes.
    again = make_body(nats_plugin, jetstream_plugin, Sink(), config={"nats_url": url, **FAST})
    await again.start()
    await again.stop()
    assert "updated" not in caplog.text
    # Changed settings: the streams and consumers are updated in place.
    changed = {"nats_url": url, **FAST, "jetstream_max_age": 3600.0, "jetstream_ack_wait": 5.0}
    third = make_body(nats_plugin, jetstream_plugin, Sink(), config=changed)
    await third.start()
    assert (await js.stream_info("CBS_sink")).config.max_age == 3600.0
    assert (await js.stream_info("CBS_DLQ_sink")).config.max_age == 3600.0
    assert (await js.consumer_info("CBS_sink", "CBS_sink_slow")).config.ack_wait == 5.0
    assert "stream CBS_sink updated: max_age 604800.0 -> 3600.0" in caplog.text


async def test_a_change_the_server_refuses_is_one_clear_line(
    nats_server: Any, make_body: Any, js: Any
) -> None:
    # Somebody made CBS_sink a memory stream; the plugin wants file storage.
    await js.add_stream(name="CBS_sink", subjects=["cbsd.sink.*"], storage="memory")
    body = sender(make_body, nats_server.url)
    await body.start(serve=False)
    with pytest.raises(ConfigError) as refused:
        await body.send("sink", "record", {}, schema=SCHEMA)
    message = str(refused.value)
    assert message.startswith("stream CBS_sink: the server refuses to change storage")
    assert "'memory' -> 'file'" in message
    assert "\n" not in message


async def test_replicas_beyond_a_single_server_fail_the_start(
    nats_server: Any, make_body: Any
) -> None:
    body = make_body(
        nats_plugin,
        jetstream_plugin,
        Sink(),
        config={"nats_url": nats_server.url, "jetstream_replicas": 3},
    )
    with pytest.raises(ConfigError, match="stream CBS_sink: cannot create it: replicas > 1"):
        await body.start()
    assert body.state == "stopped"


async def test_bad_option_values_fail_before_connecting(make_body: Any) -> None:
    body = make_body(jetstream_plugin, config={"transport": "local", "durable": "printer"})
    with pytest.raises(ConfigError, match="bad value for durable: 'printer'"):
        await body.start()
    body = make_body(jetstream_plugin, config={"transport": "local", "jetstream_batch": 0})
    with pytest.raises(ConfigError, match="--jetstream-batch"):
        await body.start()


def test_the_entry_point_imports_no_nats_client() -> None:
    code = (
        "import sys, cbs.jetstream.plugin;"
        "print(sorted(m for m in sys.modules if m == 'nats' or m.startswith('nats.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_without_jetstream_send_and_durable_verbs_fail_with_one_line(
    make_body: Any,
) -> None:
    from cbs.nats.server import NatsServer

    with NatsServer(jetstream=False) as plain:
        body = sender(make_body, plain.url)
        await body.start(serve=False)
        with pytest.raises(Unavailable, match="JetStream does not answer on nats://"):
            await body.send("sink", "record", {}, schema=SCHEMA)
        await body.stop()
        served = make_body(nats_plugin, jetstream_plugin, Sink(), config={"nats_url": plain.url})
        with pytest.raises(ConfigError, match=r"durable verb sink\.record cannot be served"):
            await served.start()
        # Without durable verbs, a body starts and serves as ever.
        plain_cells = make_body(nats_plugin, jetstream_plugin, config={"nats_url": plain.url})
        await plain_cells.start()
        await plain_cells.stop()


async def test_send_many_stores_each_request_once_and_returns_their_ids(
    nats_server: Any, make_body: Any, js: Any
) -> None:
    body = sender(make_body, nats_server.url)
    await body.start(serve=False)
    payloads = [{"n": i} for i in range(300)]
    ids = await body.send_many("sink", "record", payloads, schema=SCHEMA, headers={"x-b": "1"})
    assert len(set(ids)) == 300
    info = await js.stream_info("CBS_sink")
    assert info.state.messages == 300  # all stored before send_many() returned
    first, last = await js.get_msg("CBS_sink", 1), await js.get_msg("CBS_sink", 300)
    assert first.headers["Nats-Msg-Id"] in ids and last.headers["Nats-Msg-Id"] in ids
    assert first.headers["x-b"] == "1"
    # Sending some again with the same ids (a retry) stores nothing new.
    for ident in ids[:5]:
        await body.send("sink", "record", {"n": 0}, schema=SCHEMA, id=ident)
    assert (await js.stream_info("CBS_sink")).state.messages == 300


async def test_send_many_without_a_durable_transport_is_unavailable(make_body: Any) -> None:
    body = make_body(config={"transport": "local"})
    await body.start(serve=False)
    with pytest.raises(Unavailable):
        await body.send_many("sink", "record", [{}], schema=SCHEMA)
