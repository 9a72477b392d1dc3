"""Overload from outside: a raw nats-py client floods a real body (its own
process, on a real nats-server) with 3000 requests of 64 KiB for a verb that
takes 1 s and runs 8 at a time. The body's memory stays bounded and comes
back down, and every request is answered: a reply, or ``Unavailable`` at once
with ``details.retry_after``; none is dropped without an answer."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson

from cbs.contracts import Envelope, codec

SCRIPT = Path(__file__).with_name("overload_body.py")
REQUESTS = 3000
BLOB = 64 * 1024
CONCURRENCY = 8
MB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident set size of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def start_body(url: str, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), url, str(CONCURRENCY)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until ready (or the process ends)
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
    return proc


async def test_a_flood_is_refused_with_retry_after_and_memory_stays_bounded(
    nats_server: Any,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}
    env["CBS_MAX_PENDING_BYTES"] = str(2 * MB)  # about 30 requests of 64 KiB wait
    proc = start_body(nats_server.url, env)
    try:
        before = rss(proc.pid)
        peak = before
        nc = await nats.connect(nats_server.url, pending_size=256 * MB)
        flooding = True

        async def sample() -> None:
            nonlocal peak
            while flooding:
                peak = max(peak, rss(proc.pid))
                await asyncio.sleep(0.02)

        sampler = asyncio.ensure_future(sample())

        async def one(n: int) -> tuple[str, Any]:
            request = Envelope.request(
                "slow", "work", {"n": n, "blob": "x" * BLOB}, schema="overload/v1/Work"
            )
            try:
                msg = await nc.request("cbs.slow.work", codec.encode(request), timeout=25)
            except nats.errors.TimeoutError:
                return "no answer", None
            reply = orjson.loads(msg.data)
            assert reply["id"] == request.id
            if "error" in reply:
                return reply["error"]["code"], reply["error"].get("details", {})
            return "ok", reply["payload"]

        try:
            results = await asyncio.gather(*(one(n) for n in range(REQUESTS)))
        finally:
            flooding = False
            await sampler
            await nc.close()
        kinds: dict[str, int] = {}
        for kind, _ in results:
            kinds[kind] = kinds.get(kind, 0) + 1
        print(f"replies {kinds}; RSS before {before / MB:.1f} MB, peak {peak / MB:.1f} MB")
        assert set(kinds) == {"ok", "Unavailable"}, kinds  # none without an answer
        assert kinds["ok"] >= CONCURRENCY
        retry_after = [d["retry_after"] for k, d in results if k == "Unavailable"]
        assert all(isinstance(r, float | int) and r > 0 for r in retry_after)
        assert peak - before <= 50 * MB, f"RSS rose by {(peak - before) / MB:.1f} MB"

        # ... and settles back near where it started once the flood is over.
        deadline = time.monotonic() + 10
        while (after := rss(proc.pid)) > before + min((peak - before) / 2, 10 * MB) + 4 * MB:
            assert time.monotonic() < deadline, f"RSS still {after / MB:.1f} MB"
            await asyncio.sleep(0.1)
        print(f"RSS after {after / MB:.1f} MB")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "requests refused (Unavailable) in the last" in err, err
