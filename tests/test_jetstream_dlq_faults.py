"""``cbs dlq`` on missing things: one-line ``NotFound``/``BadRequest``, never a
NATS error; ``purge`` and ``retry`` all-or-nothing; ``purge`` confirms. Real
nats-server, dead letters made by a real durable cell, ``cbs`` subprocesses."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
from typing import Any

from jetstream_kit import FAST, SCHEMA, Sink, eventually

from cbs.jetstream import plugin as jetstream_plugin
from cbs.jetstream import store
from cbs.jetstream.plugin import RUNTIME
from cbs.nats import plugin as nats_plugin

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}
ENV["CBS_PLUGINS"] = "nats,jetstream"
CLI = [sys.executable, "-m", "cbs.kernel.cli"]


async def cbs(url: str, *args: str, stdin: Any = subprocess.DEVNULL) -> tuple[int, str, list[str]]:
    """``cbs ARGS --nats-url URL``: exit code, stdout, stderr lines."""
    done = await asyncio.to_thread(
        subprocess.run,
        [*CLI, *args, "--nats-url", url],
        env=ENV,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr.splitlines()


async def dead_letters(make_body: Any, url: str, count: int) -> tuple[Sink, Any]:
    """A served sink and ``count`` dead letters of it (sequences 1..count)."""
    sink = Sink()
    config = {"nats_url": url, **FAST}
    await make_body(nats_plugin, jetstream_plugin, sink, config=config).start()
    sender = make_body(nats_plugin, jetstream_plugin, config=config)
    await sender.start(serve=False)
    for n in range(count):
        await sender.send("sink", "strict", {"n": n}, schema=SCHEMA)  # BadRequest: dead at once
    rt = sender.stash[RUNTIME]
    letters: list[Any] = []

    async def all_dead() -> None:
        letters[:] = await store.dlq_list(rt, "sink")

    await eventually(lambda: sum(sink.seen.values()) == count, what="deliveries")
    for _ in range(200):
        await all_dead()
        if len(letters) == count:
            break
        await asyncio.sleep(0.05)
    assert [letter["seq"] for letter in letters] == list(range(1, count + 1))
    return sink, rt


async def seqs(rt: Any) -> list[int]:
    return [letter["seq"] for letter in await store.dlq_list(rt, "sink")]


async def test_missing_dead_letters_are_one_line_and_change_nothing(
    nats_server: Any, make_body: Any
) -> None:
    url = nats_server.url
    sink, rt = await dead_letters(make_body, url, 3)

    assert await cbs(url, "dlq", "show", "sink", "99") == (
        1,
        "",
        ["NotFound: No dead letter 99 for service sink"],
    )
    assert await cbs(url, "dlq", "show", "nobody", "1") == (
        1,
        "",
        ["NotFound: No dead letter 1 for service nobody"],
    )
    assert await cbs(url, "dlq", "purge", "sink", "1", "99", "--yes") == (
        1,
        "",
        ["NotFound: No dead letter 99 for service sink: nothing purged"],
    )
    assert await seqs(rt) == [1, 2, 3]
    code, _, err = await cbs(url, "dlq", "retry", "sink", "3", "98", "99")
    assert code == 1
    assert err == ["NotFound: No dead letters 98, 99 for service sink: nothing retried"]
    assert await seqs(rt) == [1, 2, 3] and sum(sink.seen.values()) == 3  # nothing delivered
    code, _, err = await cbs(url, "dlq", "list", "Bad.Name")
    assert (code, err) == (1, ["BadRequest: Service name 'Bad.Name' must be lower snake_case"])

    # Off a terminal, purge needs --yes.
    code, out, err = await cbs(url, "dlq", "purge", "sink", "1")
    assert (code, out) == (2, "") and len(err) == 1
    assert err[0].startswith("cbs: error: cbs dlq purge removes dead letter(s) 1 of sink")
    assert "--yes" in err[0]
    code, _, err = await cbs(url, "dlq", "purge", "sink")
    assert code == 2 and len(err) == 1 and "every dead letter" in err[0]
    assert await seqs(rt) == [1, 2, 3]

    assert await cbs(url, "dlq", "purge", "sink", "1", "2", "2", "--yes") == (
        0,
        "purged 2 dead letter(s) for sink\n",
        [],
    )
    assert await seqs(rt) == [3]
    assert await cbs(url, "dlq", "purge", "sink", "1", "--yes") == (
        1,
        "",
        ["NotFound: No dead letter 1 for service sink: nothing purged"],
    )
    assert await cbs(url, "dlq", "retry", "sink", "2") == (
        1,
        "",
        ["NotFound: No dead letter 2 for service sink: nothing retried"],
    )
    assert await cbs(url, "dlq", "retry", "nobody", "--all") == (
        0,
        "retried 0 dead letter(s) for nobody\n",
        [],
    )
    assert await cbs(url, "dlq", "purge", "nobody", "-y") == (
        0,
        "purged 0 dead letter(s) for nobody\n",
        [],
    )
    assert await seqs(rt) == [3]


async def test_purge_on_a_terminal_asks_first(nats_server: Any, make_body: Any) -> None:
    url = nats_server.url
    _, rt = await dead_letters(make_body, url, 2)

    async def purge_answering(answer: str, *args: str) -> tuple[int, str, list[str]]:
        main, terminal = pty.openpty()
        try:
            os.write(main, answer.encode() + b"\n")
            return await cbs(url, "dlq", "purge", "sink", *args, stdin=terminal)
        finally:
            os.close(terminal)
            os.close(main)

    code, out, err = await purge_answering("n", "1")
    assert (code, out) == (1, "")
    assert err == ["remove dead letter(s) 1 of sink for good? [y/N] nothing purged"]
    assert await seqs(rt) == [1, 2]
    code, out, err = await purge_answering("y")
    assert (code, out) == (0, "purged 2 dead letter(s) for sink\n")
    assert err == ["remove every dead letter of sink for good? [y/N] "]
    assert await seqs(rt) == []
