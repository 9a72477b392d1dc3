"""cbs-jetstream: replay delivers exactly the requested range; ``cbs send``,
``cbs replay`` and ``cbs dlq`` against the demo cells in real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from jetstream_kit import FAST, SCHEMA, Sink, eventually
from nats_kit import server_has_it

from cbs.jetstream import plugin as jetstream_plugin
from cbs.jetstream.plugin import RUNTIME
from cbs.jetstream.store import Range, replay
from cbs.nats import plugin as nats_plugin


async def started(make_body: Any, url: str, sink: Sink | None = None) -> Any:
    plugins = [nats_plugin, jetstream_plugin, *([sink] if sink else [])]
    body = make_body(*plugins, config={"nats_url": url, **FAST})
    await body.start(serve=bool(sink))
    return body


async def send_all(body: Any, count: int, verb: str = "record", **payload: Any) -> list[str]:
    return [await body.send("sink", verb, {"n": i, **payload}, schema=SCHEMA) for i in range(count)]


async def test_replay_by_sequence_delivers_exactly_that_range(
    nats_server: Any, make_body: Any
) -> None:
    sink = Sink()
    await started(make_body, nats_server.url, sink)
    sender = await started(make_body, nats_server.url)
    ids = await send_all(sender, 10)  # stream sequences 1..10
    await eventually(lambda: all(sink.seen[i] == 1 for i in ids), what="first deliveries")
    result = await replay(sender.stash[RUNTIME], "sink", Range(from_seq=3, to_seq=6))
    assert result.replayed == [(seq, ids[seq - 1]) for seq in range(3, 7)]
    await eventually(lambda: sum(sink.seen.values()) == 14, what="4 replays")
    await asyncio.sleep(0.3)
    assert [sink.seen[i] for i in ids] == [1, 1, 2, 2, 2, 2, 1, 1, 1, 1]
    replayed = sink.headers[ids[2]][1]
    assert replayed["Cbs-Replay-Of"] == "3"
    assert replayed["Nats-Msg-Id"].startswith(f"{ids[2]}.replay.3.")
    # The replays were stored (sequences 11..14) but are not read back by it.
    result = await replay(sender.stash[RUNTIME], "sink", Range(from_seq=9))
    assert [seq for seq, _ in result.replayed] == [9, 10, 11, 12, 13, 14]


async def test_replay_by_time_and_verb(nats_server: Any, make_body: Any) -> None:
    sink = Sink()
    await started(make_body, nats_server.url, sink)
    sender = await started(make_body, nats_server.url)
    before = await send_all(sender, 3)
    await asyncio.sleep(0.3)
    since = datetime.now(UTC)
    await asyncio.sleep(0.05)
    middle = await send_all(sender, 4)
    others = await send_all(sender, 2, verb="flaky", fail=0)  # succeed at once
    await asyncio.sleep(0.05)
    until = datetime.now(UTC)
    await asyncio.sleep(0.3)
    after = await send_all(sender, 3)
    everything = before + middle + others + after
    await eventually(lambda: all(sink.seen[i] == 1 for i in everything), what="deliveries")
    rt = sender.stash[RUNTIME]
    result = await replay(rt, "sink", Range(since=since, until=until), verb="record")
    assert [ident for _, ident in result.replayed] == middle
    result = await replay(rt, "sink", Range(since=since, until=until), dry_run=True)
    assert [ident for _, ident in result.replayed] == middle + others
    await eventually(lambda: all(sink.seen[i] == 2 for i in middle), what="replays")
    await asyncio.sleep(0.3)
    assert all(sink.seen[i] == 1 for i in before + others + after)


async def test_replay_to_another_subject(nats_server: Any, make_body: Any) -> None:
    sender = await started(make_body, nats_server.url)
    ids = await send_all(sender, 3)
    nc = await nats.connect(nats_server.url)
    got: list[Any] = []

    async def collect(msg: Any) -> None:
        got.append(msg)

    try:
        sub = await nc.subscribe("audit.sink", cb=collect)
        await server_has_it(nc)
        result = await replay(sender.stash[RUNTIME], "sink", Range(to_seq=2), to="audit.sink")
        assert result.target == "audit.sink"
        await eventually(lambda: len(got) == 2, what="2 plain messages")
        await sub.unsubscribe()
    finally:
        await nc.close()
    assert [json.loads(m.data)["id"] for m in got] == ids[:2]
    assert got[0].headers["Cbs-Replay-Of"] == "1"


# -- the command line, against the demo cells ---------------------------------------------

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}
ENV["CBS_PLUGINS"] = "greeter,nats,jetstream"
CLI = [sys.executable, "-m", "cbs.kernel.cli"]


def cbs(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--nats-url", url] if url else []
    return subprocess.run(
        [*CLI, *args, *extra], env=ENV, capture_output=True, text=True, timeout=60, check=False
    )


class Printer:
    """``cbs run`` of the demo cells with printer.write durable; collects stdout."""

    def __init__(self, url: str) -> None:
        env = {**ENV, "CBS_DURABLE": "printer.write", "CBS_JETSTREAM_BACKOFF": "50ms"}
        self.popen = subprocess.Popen(
            [*CLI, "run", "--nats-url", url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.popen.stdout, self.out), (self.popen.stderr, self.err)):
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _collect(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, lines: list[str], text: str, count: int = 1, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while sum(text in line for line in lines) < count:
            if time.monotonic() > deadline or self.popen.poll() is not None:
                raise AssertionError(f"{count}x {text!r} not in {lines} / {self.err}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


@pytest.fixture
def printer(nats_server: Any) -> Iterator[Printer]:
    proc = Printer(nats_server.url)
    try:
        proc.wait_for(proc.err, "serving cells")
        yield proc
    finally:
        proc.stop()


def test_send_replay_and_dlq_on_the_command_line(nats_server: Any, printer: Printer) -> None:
    url = nats_server.url
    sent = cbs("send", "printer.write", '{"message": "Hello durable Ada!"}', url=url)
    assert sent.returncode == 0, sent.stderr
    ident = sent.stdout.strip()
    printer.wait_for(printer.out, "Hello durable Ada!")
    # Request/reply is untouched: cbs call still answers.
    called = cbs("call", "greeter.say_hello", '{"name": "Ada"}', url=url)
    assert called.returncode == 0 and json.loads(called.stdout) == {"message": "Hello Ada!"}

    replayed = cbs("replay", "printer", "--since", "10m", url=url)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines() == [
        f"1\t{ident}",
        "replayed 1 envelope(s) (sequences 1-1) to cbsd.printer.*",
    ]
    printer.wait_for(printer.out, "Hello durable Ada!", count=2)

    # A request the cell refuses (no message): straight to the dead letters.
    bad = cbs("send", "printer.write", "{}", url=url)
    assert bad.returncode == 0, bad.stderr
    bad_id = bad.stdout.strip()
    deadline = time.monotonic() + 20
    while True:
        listed = cbs("dlq", "list", "printer", "--json", url=url)
        assert listed.returncode == 0, listed.stderr
        letters = json.loads(listed.stdout)
        if letters or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    [letter] = letters
    assert letter["id"] == bad_id and letter["deliveries"] == 1
    assert letter["error"]["code"] == "BadRequest"
    assert letter["error"]["message"] == "Missing required field 'message'"
    text = cbs("dlq", "list", "printer", url=url)
    assert "BadRequest: Missing required field 'message'" in text.stdout
    assert "1 dead letter(s) for printer" in text.stdout
    shown = cbs("dlq", "show", "printer", str(letter["seq"]), "--json", url=url)
    assert json.loads(shown.stdout)["request"]["id"] == bad_id

    retried = cbs("dlq", "retry", "printer", str(letter["seq"]), url=url)
    assert retried.returncode == 0, retried.stderr
    assert f"{letter['seq']}\t{bad_id}" in retried.stdout
    deadline = time.monotonic() + 20
    while True:  # delivered again, refused again: a new dead letter
        again = json.loads(cbs("dlq", "list", "printer", "--json", url=url).stdout)
        if (again and again[0]["seq"] != letter["seq"]) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [a["id"] for a in again] == [bad_id] and again[0]["seq"] != letter["seq"]
    purged = cbs("dlq", "purge", "printer", "--yes", url=url)
    assert purged.stdout.strip() == "purged 1 dead letter(s) for printer"
    assert json.loads(cbs("dlq", "list", "printer", "--json", url=url).stdout) == []


def test_the_commands_need_a_shared_nats() -> None:
    for args in (("replay", "printer"), ("dlq", "list", "printer"), ("send", "printer.write")):
        done = cbs(*args)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            f"cbs: error: cbs {args[0]} needs a shared NATS server:"
            " give --nats-url URL (or set NATS_URL)"
        ]


def test_dlq_usage_errors() -> None:
    done = cbs("dlq", "retry", "printer", url="nats://127.0.0.1:1")
    assert done.returncode == 2
    assert "give SEQ... or --all" in done.stderr


def test_demo_and_call_are_unchanged_with_the_plugin_installed() -> None:
    done = subprocess.run(
        [*CLI, "demo", "--name", "Ada"],
        env={**ENV, "CBS_DURABLE": "printer.write"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello Ada!\n"
    called = cbs("call", "greeter.say_hello", '{"name": "Bob"}')
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"message": "Hello Bob!"}
