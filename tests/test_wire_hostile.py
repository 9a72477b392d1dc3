"""The wire path never looks at bytes, and a stranger cannot fail a request:

* a reply whose id does not match (sent first by a raw nats-py client that
  watches the requests) is dropped and counted, never fails the request and
  never reaches the caller's circuit breaker;
* a future envelope field (placed before ``error`` in the bytes) and an unknown
  header do not make a failing durable handler's message look like a success:
  it is still dead-lettered, and replies with such a field still decode;
* ``cbs call`` works from a body that does not have the cell installed, with
  the schema that the serving cell advertises."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
from typing import Any

import nats
import pytest
from jetstream_kit import FAST, SCHEMA, Sink, eventually
from nats_kit import server_has_it

from cbs.breaker import plugin as breaker_plugin
from cbs.contracts import Envelope, codec
from cbs.jetstream import plugin as jetstream_plugin
from cbs.jetstream import store
from cbs.jetstream.plugin import RUNTIME
from cbs.kernel import Cell, TransportState
from cbs.metrics import plugin as metrics_plugin
from cbs.nats import plugin as nats_plugin
from cbs.testing import CellsPlugin


def slow_cell() -> Cell:
    cell = Cell("slow", category="logic", version="1.0.0", purpose="answers late")

    @cell.verb("work", schema="test/v1/Job")
    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.05)  # the forger answers first
        return {"n": payload["n"]}

    return cell


async def test_forged_replies_with_a_wrong_id_are_dropped(nats_server: Any, make_body: Any) -> None:
    config = {"transport": "nats", "nats_url": nats_server.url}
    server = make_body(nats_plugin, CellsPlugin(slow_cell()), config=config)
    await server.start()
    caller = make_body(
        nats_plugin,
        breaker_plugin,
        metrics_plugin,
        CellsPlugin(slow_cell()),
        config={**config, "breaker_config": json.dumps({"slow": {"failure_threshold": 2}})},
    )
    await caller.start(serve=False)

    forger = await nats.connect(nats_server.url)
    forged = 0

    async def forge(msg: Any) -> None:
        nonlocal forged
        if not msg.reply:
            return
        wrong = Envelope.request("slow", "work", {}, schema="test/v1/Job")
        for data in (
            codec.encode(wrong.reply({"n": -1})),  # another id, a success
            codec.encode(wrong.error_reply(__import__("cbs.contracts").contracts.Internal())),
            b"\xff garbage",
            b'{"id": "not even an envelope"}',
        ):
            await forger.publish(msg.reply, data)
            forged += 1

    await forger.subscribe("cbs.slow.work", cb=forge)  # sees every request, no queue group
    await server_has_it(forger)
    try:
        replies = await asyncio.gather(
            *(caller.request("slow", "work", {"n": i}, timeout=5) for i in range(40))
        )
    finally:
        await forger.close()
    assert [r["n"] for r in replies] == list(range(40))
    assert forged == 160
    state = caller.capabilities.require(TransportState, needed_by="this test")
    import cbs.metrics

    # The last forgeries may still be on their way when the last real reply
    # has arrived; late real replies are never counted as accepted twice.
    await eventually(lambda: state.wrong_replies >= 160, 10, "every forged reply dropped")
    exported = cbs.metrics.registry(caller).get_sample_value("cbs_client_wrong_replies_total")
    assert exported == state.wrong_replies
    import cbs.breaker

    assert cbs.breaker.states(caller) == {("slow", "work"): "closed"}


def future_encode(original: Any, envelope: Envelope, **kwargs: Any) -> bytes:
    """Replies as a newer peer would write them: an extra field that sorts
    before every known one, and one after. (The replies of this test are the
    error replies and the ``ask`` verb's; requests stay as they are.)"""
    if envelope.error is None and "asked" not in (envelope.payload or {}):
        return original(envelope, **kwargs)
    return original(envelope, extra={"aaa_future": {"v": 2}, "zzz_future": 1})


async def test_a_future_field_and_an_unknown_header_still_dead_letter(
    nats_server: Any, make_body: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "encode", functools.partial(future_encode, codec.encode))
    config = {"transport": "nats", "nats_url": nats_server.url, **FAST}
    sink = Sink()
    body = make_body(nats_plugin, jetstream_plugin, sink, config=config)
    await body.start()
    # A reply with the future fields decodes at the caller.
    assert await body.request("sink", "ask", {"n": 3}) == {"asked": 3}
    reply = await body.bus.request(  # type: ignore[union-attr]
        "cbs.sink.ask",
        codec.encode(Envelope.request("sink", "ask", {"n": 4}, schema=SCHEMA)),
        timeout=5,
    )
    assert reply.startswith(b'{"aaa_future"')  # the old byte check would have seen success

    headers = {"Aaa-Unknown": "x", "Cbs-Unknown-Later": "y"}
    strict = await body.send("sink", "strict", {"n": 1}, schema=SCHEMA, headers=headers)
    flaky = await body.send("sink", "flaky", {"fail": -1}, schema=SCHEMA, headers=headers)
    rt = body.stash[RUNTIME]
    letters: list[dict[str, Any]] = []

    async def dead() -> None:
        letters[:] = await store.dlq_list(rt, "sink")

    async def both() -> bool:
        await dead()
        return {letter["id"] for letter in letters} == {strict, flaky}

    for _ in range(200):
        if await both():
            break
        await asyncio.sleep(0.05)
    assert {letter["id"] for letter in letters} == {strict, flaky}
    assert sink.seen[strict] == 1  # BadRequest: at once, no retry
    await eventually(lambda: sink.seen[flaky] == FAST["jetstream_max_deliveries"])


def test_cbs_call_uses_the_advertised_schema_without_the_cell(
    nats_server: Any, tmp_path: Any
) -> None:
    """The caller has only the core and the nats plugin (every other plugin
    blocked); the greeter runs in another process."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    cbs = [sys.executable, "-m", "cbs.kernel.cli"]
    serving = subprocess.Popen(
        [
            *cbs,
            "run",
            "--cells",
            "greet",
            "--nats-url",
            nats_server.url,
            "-p",
            "nats",
            "-p",
            "greeter",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serving.stderr is not None
        for line in serving.stderr:  # bounded: the process prints this line at once
            if "serving cells" in line:
                break
        call = [*cbs, "call", "greeter.say_hello", '{"name": "Ada"}', "--nats-url", nats_server.url]
        done = subprocess.run(
            [*call, "--disable-plugin-autoload", "-p", "nats"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"message": "Hello Ada!"}
        plugins = subprocess.run(
            [*cbs, "plugins", "--json", "--disable-plugin-autoload", "-p", "nats"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "greeter" not in {p["name"] for p in json.loads(plugins.stdout)}
    finally:
        serving.terminate()
        serving.wait(timeout=30)
