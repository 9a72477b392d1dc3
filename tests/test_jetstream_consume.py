"""cbs-jetstream: durable inboxes. Work-queue delivery across instances, acks,
redelivery with backoff, dead letters (after the last delivery, at once for
BadRequest), dlq retry, bounded concurrency. Real nats-server."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import nats
import pytest
from jetstream_kit import FAST, SCHEMA, Sink, eventually

from cbs.greeter import plugin as greeter_plugin
from cbs.jetstream import plugin as jetstream_plugin
from cbs.jetstream import store
from cbs.jetstream.plugin import RUNTIME
from cbs.nats import plugin as nats_plugin


def serve_sink(make_body: Any, url: str, sink: Sink | None = None, **config: Any) -> Any:
    return make_body(
        nats_plugin, jetstream_plugin, sink or Sink(), config={"nats_url": url, **FAST, **config}
    )


async def client(make_body: Any, url: str, **config: Any) -> Any:
    body = make_body(nats_plugin, jetstream_plugin, config={"nats_url": url, **FAST, **config})
    await body.start(serve=False)
    return body


async def test_instances_share_the_inbox_and_each_request_is_handled_once(
    nats_server: Any, make_body: Any
) -> None:
    one, two = Sink(), Sink()
    await serve_sink(make_body, nats_server.url, one).start()
    await serve_sink(make_body, nats_server.url, two).start()
    sender = await client(make_body, nats_server.url)
    sent = await asyncio.gather(
        *(sender.send("sink", "record", {"n": i}, schema=SCHEMA) for i in range(300))
    )
    total = lambda: sum(one.seen.values()) + sum(two.seen.values())  # noqa: E731
    await eventually(lambda: total() >= 300, what="300 deliveries")
    await asyncio.sleep(0.3)  # nothing more comes: every one was acked
    assert total() == 300
    assert set(one.seen) | set(two.seen) == set(sent)
    assert not set(one.seen) & set(two.seen)
    assert one.seen and two.seen  # both instances took a share


async def test_a_request_sent_while_the_cell_is_down_arrives_when_it_starts(
    nats_server: Any, make_body: Any
) -> None:
    sender = await client(make_body, nats_server.url)
    ident = await sender.send("sink", "record", {"n": 1}, schema=SCHEMA)
    sink = Sink()
    await serve_sink(make_body, nats_server.url, sink).start()
    await eventually(lambda: sink.seen[ident] == 1, what="the stored request")
    headers = sink.headers[ident][0]
    assert headers["Nats-Msg-Id"] == ident
    assert headers["Cbs-Delivery"] == "1"
    assert headers["Cbs-Stream-Seq"] == "1"


async def test_a_failing_handler_is_retried_with_exponential_backoff(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    await serve_sink(
        make_body, nats_server.url, sink, jetstream_backoff=0.2, jetstream_backoff_max=0.5
    ).start()
    sender = await client(make_body, nats_server.url)
    ident = await sender.send("sink", "flaky", {"fail": 3}, schema=SCHEMA)
    await eventually(lambda: sink.seen[ident] == 4, what="4 deliveries")
    await asyncio.sleep(0.6)
    assert sink.seen[ident] == 4  # the 4th succeeded and was acked
    assert [h["Cbs-Delivery"] for h in sink.headers[ident]] == ["1", "2", "3", "4"]
    times = sink.times[ident]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Delays 0.2, 0.4, then 0.8 capped at 0.5 s (a little scheduling slack below).
    for gap, delay in zip(gaps, (0.2, 0.4, 0.5), strict=True):
        assert delay - 0.03 <= gap <= delay + 1.0, gaps
    rt = sender.stash[RUNTIME]
    assert await store.dlq_list(rt, "sink") == []


async def test_a_poison_message_is_dead_lettered_after_the_last_delivery(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    await serve_sink(make_body, nats_server.url, sink).start()
    sender = await client(make_body, nats_server.url)
    ident = await sender.send("sink", "flaky", {"fail": -1}, schema=SCHEMA, headers={"x-t": "1"})
    rt = sender.stash[RUNTIME]
    await eventually(lambda: sink.seen[ident] == 4, what="4 deliveries")
    letters: list[dict[str, Any]] = []

    async def dead() -> None:
        letters[:] = await store.dlq_list(rt, "sink")

    for _ in range(100):
        await dead()
        if letters:
            break
        await asyncio.sleep(0.05)
    [letter] = letters
    assert letter["id"] == ident
    assert letter["verb"] == "flaky"
    assert letter["deliveries"] == 4
    assert letter["stream_seq"] == 1
    assert letter["subject"] == "cbsd.sink.flaky"
    assert letter["error"] == {"code": "Internal", "message": "Not now"}
    assert letter["error_reply"]["id"] == ident
    assert letter["request"]["payload"] == {"fail": -1}
    assert letter["headers"]["x-t"] == "1"  # the sender's headers travel along
    await asyncio.sleep(0.5)
    assert sink.seen[ident] == 4  # no delivery after the dead letter


async def test_bad_request_goes_to_the_dead_letters_at_once_and_retry_delivers_again(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    await serve_sink(make_body, nats_server.url, sink).start()
    sender = await client(make_body, nats_server.url)
    rt = sender.stash[RUNTIME]
    ident = await sender.send("sink", "strict", {"n": 1}, schema=SCHEMA)

    async def letters() -> list[dict[str, Any]]:
        for _ in range(100):
            found = await store.dlq_list(rt, "sink")
            if found:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError("no dead letter")

    [letter] = await letters()
    assert sink.seen[ident] == 1  # terminal: no retry
    assert letter["error"]["code"] == "BadRequest"
    assert letter["deliveries"] == 1
    shown = await store.dlq_show(rt, "sink", letter["seq"])
    assert shown["error_reply"]["error"]["details"] == {"field": "anything"}
    # Retry: stored again on cbsd.sink.strict, delivered again, dead again.
    assert await store.dlq_retry(rt, "sink", [letter["seq"]]) == [(letter["seq"], ident)]
    await eventually(lambda: sink.seen[ident] == 2, what="the retried delivery")
    assert sink.headers[ident][1]["Cbs-Retry-Of"] == str(letter["seq"])
    [again] = await letters()
    assert again["seq"] != letter["seq"] and again["id"] == ident
    assert await store.dlq_purge(rt, "sink") == 1
    assert await store.dlq_list(rt, "sink") == []


async def test_dlq_retry_of_a_message_that_now_succeeds(nats_server: Any, make_body: Any) -> None:
    sink = Sink()
    await serve_sink(make_body, nats_server.url, sink).start()
    sender = await client(make_body, nats_server.url)
    rt = sender.stash[RUNTIME]
    ident = await sender.send("sink", "flaky", {"fail": 4}, schema=SCHEMA)  # fails 4 times
    await eventually(lambda: sink.seen[ident] == 4, what="4 deliveries")
    for _ in range(100):
        if await store.dlq_list(rt, "sink"):
            break
        await asyncio.sleep(0.05)
    assert [seq for seq, _ in await store.dlq_retry(rt, "sink")] == [1]
    await eventually(lambda: sink.seen[ident] == 5, what="the retried delivery")
    await asyncio.sleep(0.3)
    assert sink.seen[ident] == 5
    assert await store.dlq_list(rt, "sink") == []


async def test_undecodable_bytes_in_the_stream_are_dead_lettered(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    await serve_sink(make_body, nats_server.url, sink).start()
    rt = (await client(make_body, nats_server.url)).stash[RUNTIME]
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().publish("cbsd.sink.record", b"not json")
    finally:
        await nc.close()
    for _ in range(100):
        letters = await store.dlq_list(rt, "sink")
        if letters:
            break
        await asyncio.sleep(0.05)
    assert letters[0]["error"]["code"] == "BadRequest"
    assert letters[0]["request"] == "not json"
    assert not sink.seen


async def test_handler_concurrency_per_instance_is_bounded(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    server = serve_sink(make_body, nats_server.url, sink, jetstream_concurrency=5)
    await server.start()
    sender = await client(make_body, nats_server.url)
    sent = await asyncio.gather(
        *(sender.send("sink", "slow", {"sleep": 0.03}, schema=SCHEMA) for _ in range(60))
    )
    await eventually(lambda: all(sink.seen[i] for i in sent), seconds=20, what="60 deliveries")
    assert sink.peak == 5


async def test_a_handler_longer_than_ack_wait_is_not_redelivered(
    nats_server: Any, make_body: Any
) -> None:
    one, two = Sink(), Sink()
    await serve_sink(make_body, nats_server.url, one, jetstream_ack_wait=0.6).start()
    await serve_sink(make_body, nats_server.url, two, jetstream_ack_wait=0.6).start()
    sender = await client(make_body, nats_server.url, jetstream_ack_wait=0.6)
    ident = await sender.send("sink", "slow", {"sleep": 2.0}, schema=SCHEMA)
    await eventually(lambda: one.seen[ident] + two.seen[ident] == 1, what="a delivery")
    await asyncio.sleep(2.5)  # in-progress signals kept the server from redelivering
    assert one.seen[ident] + two.seen[ident] == 1


async def test_stop_lets_running_durable_handlers_finish_and_ack(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    server = serve_sink(make_body, nats_server.url, sink)
    await server.start()
    sender = await client(make_body, nats_server.url)
    ident = await sender.send("sink", "slow", {"sleep": 0.5}, schema=SCHEMA)
    await eventually(lambda: sink.running == 1, what="the handler running")
    await server.stop()
    assert sink.seen[ident] == 1 and sink.running == 0
    later = Sink()
    await serve_sink(make_body, nats_server.url, later).start()
    await asyncio.sleep(0.5)
    assert not later.seen  # it was acked before the stop returned


async def test_existing_cells_become_durable_by_configuration(
    nats_server: Any, make_body: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    server = make_body(
        nats_plugin,
        jetstream_plugin,
        greeter_plugin,
        config={"nats_url": nats_server.url, "durable": "printer.write, greeter.*"},
    )
    await server.start()
    inboxes = server.stash[RUNTIME].inboxes
    assert sorted(i.consumer for group in inboxes.values() for i in group) == [
        "CBS_greeter_say_hello",
        "CBS_printer_write",
    ]
    sender = await client(make_body, nats_server.url)
    await sender.send(
        "printer", "write", {"message": "Hello durable Ada!"}, schema="demo/v1/Greeting"
    )
    for _ in range(200):
        if "Hello durable Ada!" in capsys.readouterr().out:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the printer did not print")


async def test_the_idempotency_example_of_the_docs_handles_a_redelivery_once(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re
    from pathlib import Path

    from cbs.contracts import Envelope, codec
    from cbs.kernel import Served
    from cbs.kernel.transport import endpoint_handler

    text = (Path(__file__).parents[1] / "docs" / "jetstream.md").read_text()
    [example] = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "sqlite3" in b]
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(example, "docs/jetstream.md", "exec"), scope)
    db = scope["db"]
    db.execute("CREATE TABLE accounts (id TEXT PRIMARY KEY, balance INTEGER)")
    db.execute("INSERT INTO accounts VALUES ('a', 0)")
    db.commit()
    cell = scope["ledger"]
    handle = endpoint_handler(Served(cell, cell.endpoints[0]), [])
    request = Envelope.request(
        "ledger", "credit", {"account": "a", "amount": 5}, schema="bank/v1/Credit"
    )
    for _ in range(2):  # the first delivery and a redelivery of the same envelope
        reply = codec.decode((await handle(codec.encode(request), {})).data)
        assert reply.payload == {"ok": True}
    assert db.execute("SELECT balance FROM accounts").fetchone() == (5,)
    db.close()
