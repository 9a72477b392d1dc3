"""cbs-jetstream: duplicates never run twice. 2000 durable sends while both the
nats-server and the consuming body are killed with SIGKILL and restarted (the
server on the same port and store, the body as a new process). The handler
records every run in sqlite; afterwards:

* no acknowledged send is lost (each has a run that applied its effect);
* no envelope id ran twice unflagged: a second run always carries
  ``Cbs-Redelivered: 1`` (only a run whose first run died before its
  completion was recorded can come back, and it comes flagged);
* no effect was applied twice (the handler, told by the flag, looks first).

Three runs, each on a fresh server and store; ``CBS_KILL9_RUNS`` changes that.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from jetstream_kit import eventually

from cbs.contracts import CbsError
from cbs.contracts.envelope import new_id
from cbs.jetstream import plugin as jetstream_plugin
from cbs.nats import plugin as nats_plugin

RUNS = int(os.environ.get("CBS_KILL9_RUNS", "3"))
SENDS = 2000
IN_FLIGHT = 64
BODY = Path(__file__).with_name("jetstream_ledger_body.py")
SCHEMA = "ledger/v1/Entry"
#: The consuming body's options: quick redelivery after its death.
OPTIONS = ["jetstream_ack_wait=1.5", "jetstream_backoff=0.05", "jetstream_publish_timeout=30"]


class ConsumingBody:
    """tests/jetstream_ledger_body.py as a child process, killed by pid."""

    def __init__(self, url: str, db: Path) -> None:
        self.url, self.db = url, db
        self.popen: subprocess.Popen[str] | None = None
        self.log = (db.parent / "body.log").open("a")  # its stderr, for a failure's story
        self.pids: list[int] = []

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}
        self.popen = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, str(BODY), self.url, str(self.db), *OPTIONS],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        self.pids.append(self.popen.pid)
        assert self.popen.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.popen.stdout.readline), 30)
        assert line.strip() == "ready", f"the consuming body did not start: {line!r}"

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def runs(db: Path) -> list[tuple[str, int, int, int, int]]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(
            "SELECT id, delivery, redelivered, pid, applied FROM runs ORDER BY rowid"
        ).fetchall()
    finally:
        con.close()


def applied_ids(db: Path) -> set[str]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return {row[0] for row in con.execute("SELECT id FROM runs WHERE applied = 1")}
    finally:
        con.close()


async def settled(url: str) -> bool:
    """Nothing left to deliver and nothing delivered without an ack."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info("CBS_ledger", "CBS_ledger_apply")
    finally:
        await nc.close()
    return info.num_pending == 0 and info.num_ack_pending == 0 and info.num_redelivered == 0


@pytest.mark.parametrize("run", range(RUNS))
async def test_kill_9_of_server_and_body_runs_no_envelope_id_twice(
    nats_server: Any, make_body: Any, tmp_path: Path, run: int
) -> None:
    started = time.monotonic()
    db = tmp_path / "runs.db"
    consumer = ConsumingBody(nats_server.url, db)
    await consumer.start()
    try:
        sender = make_body(
            nats_plugin,
            jetstream_plugin,
            config={"nats_url": nats_server.url, "jetstream_publish_timeout": 30.0},
        )
        await sender.start(serve=False)
        ids = [new_id() for _ in range(SENDS)]
        acked: list[str] = []
        failed: list[int] = []
        window = asyncio.Semaphore(IN_FLIGHT)

        async def send(i: int) -> None:
            async with window:
                try:
                    await sender.send("ledger", "apply", {"n": i}, schema=SCHEMA, id=ids[i])
                except CbsError:  # not acknowledged: resent below with the same id
                    failed.append(i)
                    return
                acked.append(ids[i])

        async def chaos() -> tuple[int, int]:
            await eventually(lambda: len(acked) >= SENDS // 4, seconds=30, what="a quarter acked")
            nats_server.kill()  # SIGKILL: the consumer's ack state is lost
            at_server_kill = len(acked)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(nats_server.start)  # same port, same store
            await eventually(lambda: len(acked) >= SENDS // 2, seconds=30, what="half acked")
            handled = len(applied_ids(db))
            consumer.kill()  # SIGKILL mid-handling: claims and unrecorded runs left behind
            await consumer.start()
            # Once more, the server, while the new body works through the backlog.
            await eventually(lambda: len(acked) >= SENDS * 3 // 4, seconds=30, what="3/4 acked")
            nats_server.kill()
            await asyncio.sleep(0.3)
            await asyncio.to_thread(nats_server.start)
            return at_server_kill, handled

        (at_kill, handled_at_body_kill), *_ = await asyncio.gather(
            chaos(), *(send(i) for i in range(SENDS))
        )
        assert at_kill < SENDS, "the server kill came after every send was acknowledged"
        sent = time.monotonic() - started
        for i in failed:
            await sender.send("ledger", "apply", {"n": i}, schema=SCHEMA, id=ids[i])
            acked.append(ids[i])

        async def all_applied() -> bool:
            return set(acked) <= applied_ids(db)

        deadline = time.monotonic() + 60
        while not await all_applied():
            assert time.monotonic() < deadline, "not every acked send applied in 60 s"
            await asyncio.sleep(0.1)
        applied = time.monotonic() - started
        while not await settled(nats_server.url):
            assert time.monotonic() < deadline, "not settled in 60 s"
            await asyncio.sleep(0.1)
    finally:
        consumer.kill()
        consumer.log.close()

    rows = runs(db)
    by_id: dict[str, list[tuple[str, int, int, int, int]]] = {}
    for row in rows:
        by_id.setdefault(row[0], []).append(row)
    lost = set(acked) - applied_ids(db)
    unflagged_twice = [i for i, rs in by_id.items() if sum(1 for r in rs if not r[2]) > 1]
    applied_twice = [i for i, rs in by_id.items() if sum(r[4] for r in rs) > 1]
    reruns = sum(len(rs) - 1 for rs in by_id.values())
    late_first_runs = [
        i for i, rs in by_id.items() if len(rs) > 1 and not all(r[2] for r in rs[1:])
    ]
    print(
        f"\nkill -9 run {run + 1}/{RUNS}: {len(acked)} acked ({len(failed)} resent),"
        f" {at_kill} acked at the server kill, {handled_at_body_kill} applied at the body kill;"
        f" {len(rows)} handler runs, {len(lost)} lost, {len(unflagged_twice)} ids run twice"
        f" unflagged, {reruns} flagged reruns, {len(applied_twice)} applied twice,"
        f" {len(consumer.pids)} body processes, {time.monotonic() - started:.1f} s"
        f" ({sent:.1f} s to the last PubAck, {applied:.1f} s to the last applied)"
    )
    assert lost == set()
    assert unflagged_twice == []
    assert late_first_runs == []  # every run after the first of its id carries the flag
    assert applied_twice == []
    # A rerun comes only from a run cut off by the kill of the first body,
    # never from the server kills.
    assert {rs[0][3] for rs in by_id.values() if len(rs) > 1} <= {consumer.pids[0]}
    assert set(by_id) == set(ids)
