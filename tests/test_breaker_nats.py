"""cbs-breaker with a real nats-server: a cell in one body fails and recovers
while another body calls it. Requests are counted at the cell."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from breaker_cells import Flaky

import cbs.breaker
from cbs.breaker import HEADER, CircuitOpen
from cbs.breaker import plugin as breaker
from cbs.contracts import CbsError, NoResponders, Timeout, Unavailable
from cbs.kernel import Body
from cbs.nats import plugin as nats

MakeBody = Callable[..., Body]


async def serve_flaky(make_body: MakeBody, url: str) -> Flaky:
    """The cell, served by a body of its own (with the deadline guard)."""
    flaky = Flaky()
    await make_body(nats, breaker, flaky, config={"nats_url": url}).start()
    return flaky


async def caller(
    make_body: MakeBody, url: str, config: dict[str, Any], *, installed: bool = True
) -> Body:
    """A body that only calls; with ``installed`` it knows the cell's verbs
    (so its idempotent flag) without serving them."""
    plugins = (nats, breaker, Flaky()) if installed else (nats, breaker)
    body = make_body(*plugins, config={"nats_url": url, "breaker_config": config})
    await body.start(serve=False)
    return body


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met in {seconds} s")
        await asyncio.sleep(0.01)


async def test_open_breaker_sends_nothing_and_recovers(
    nats_server: Any, make_body: MakeBody
) -> None:
    flaky = await serve_flaky(make_body, nats_server.url)
    body = await caller(
        make_body, nats_server.url, {"flaky": {"failure_threshold": 3, "cooldown": 0.5}}
    )
    assert await body.request("flaky", "work", {}) == {"verb": "work", "n": 1}

    flaky.mode = "fail"
    for _ in range(3):
        with pytest.raises(CbsError, match="Internal"):
            await body.request("flaky", "work", {})
    assert flaky.calls["work"] == 4
    assert cbs.breaker.states(body) == {("flaky", "work"): "open"}

    began = time.monotonic()
    for _ in range(50):
        with pytest.raises(CircuitOpen):
            await body.request("flaky", "work", {})
    assert time.monotonic() - began < 0.4  # fast: nothing waits for the network
    await asyncio.sleep(0.05)
    assert flaky.calls["work"] == 4  # zero requests reached the cell while open

    flaky.mode = "ok"  # the cell heals; after the cool-down one probe goes through
    await asyncio.sleep(0.5)
    assert cbs.breaker.states(body)[("flaky", "work")] == "half-open"
    assert await body.request("flaky", "work", {}) == {"verb": "work", "n": 5}
    assert cbs.breaker.states(body)[("flaky", "work")] == "closed"
    for n in range(6, 9):
        assert await body.request("flaky", "work", {}) == {"verb": "work", "n": n}


async def test_a_failed_probe_opens_again(nats_server: Any, make_body: MakeBody) -> None:
    flaky = await serve_flaky(make_body, nats_server.url)
    body = await caller(
        make_body, nats_server.url, {"flaky": {"failure_threshold": 1, "cooldown": 0.3}}
    )
    flaky.mode = "fail"
    with pytest.raises(CbsError):
        await body.request("flaky", "work", {})
    await asyncio.sleep(0.3)
    with pytest.raises(CbsError, match="Internal"):  # the probe reached the cell and failed
        await body.request("flaky", "work", {})
    assert flaky.calls["work"] == 2
    assert cbs.breaker.states(body)[("flaky", "work")] == "open"
    with pytest.raises(CircuitOpen):
        await body.request("flaky", "work", {})
    assert flaky.calls["work"] == 2


async def test_timeouts_open_it_and_the_callee_gives_up_too(
    nats_server: Any, make_body: MakeBody
) -> None:
    flaky = await serve_flaky(make_body, nats_server.url)
    config = {"flaky": {"failure_threshold": 2, "attempt_timeout": 0.1}}
    body = await caller(make_body, nats_server.url, config)
    flaky.mode = "slow"
    for _ in range(2):
        with pytest.raises(Timeout):
            await body.request("flaky", "work", {}, timeout=5)
    assert cbs.breaker.states(body)[("flaky", "work")] == "open"
    # The cell got the attempt's deadline in a header; its guard cancelled the work.
    await until(lambda: flaky.cancelled == 2)
    for _, at, headers in flaky.seen:
        assert float(headers[HEADER]) - at < 0.5  # the attempt's deadline, not the call's 5 s


async def test_retries_only_idempotent_verbs_within_the_budget(
    nats_server: Any, make_body: MakeBody
) -> None:
    flaky = await serve_flaky(make_body, nats_server.url)
    config = {"flaky": {"retries": 50, "backoff": 0.02, "backoff_max": 0.05}}
    body = await caller(make_body, nats_server.url, config)

    flaky.script = ["unavailable", "unavailable"]
    assert await body.request("flaky", "read", {}) == {"verb": "read", "n": 3}

    flaky.mode = "unavailable"
    with pytest.raises(Unavailable):
        await body.request("flaky", "work", {})
    assert flaky.calls["work"] == 1  # never retried: not idempotent

    before = flaky.calls["read"]
    began = time.time()
    # The last attempt's error, or Timeout when the budget ran out inside an
    # attempt (a slow machine: an attempt then has less than the backoff left).
    with pytest.raises((Unavailable, Timeout)):
        await body.request("flaky", "read", {}, timeout=0.4)
    assert time.time() - began < 0.4 + 1.0
    attempts = [headers for verb, _, headers in flaky.seen if verb == "read"][before:]
    assert 2 <= len(attempts) <= 51
    # No attempt was given time beyond the call's budget (header: millisecond precision).
    assert all(float(headers[HEADER]) <= began + 0.4 + 0.002 for headers in attempts)


async def test_remote_verbs_declared_idempotent_in_config(
    nats_server: Any, make_body: MakeBody
) -> None:
    flaky = await serve_flaky(make_body, nats_server.url)
    flaky.mode = "unavailable"
    unknown = await caller(make_body, nats_server.url, {"default": {"backoff": 0}}, installed=False)
    with pytest.raises(Unavailable):
        await unknown.request("flaky", "read", {}, schema="flaky/v1/Any")
    assert flaky.calls["read"] == 1  # the cell is not installed here: not known idempotent

    declared = await caller(
        make_body,
        nats_server.url,
        {"default": {"backoff": 0}, "flaky.read": {"idempotent": True, "retries": 2}},
        installed=False,
    )
    with pytest.raises(Unavailable):
        await declared.request("flaky", "read", {}, schema="flaky/v1/Any")
    assert flaky.calls["read"] == 1 + 3


async def test_no_responders_is_retried_and_counted(nats_server: Any, make_body: MakeBody) -> None:
    config = {
        "ghost.read": {"idempotent": True, "retries": 2, "backoff": 0, "failure_threshold": 3}
    }
    body = await caller(make_body, nats_server.url, config, installed=False)
    with pytest.raises(NoResponders):
        await body.request("ghost", "read", {})
    assert cbs.breaker.states(body)[("ghost", "read")] == "open"


async def test_the_guard_refuses_a_request_past_its_deadline(
    nats_server: Any, make_body: MakeBody
) -> None:
    flaky = await serve_flaky(make_body, nats_server.url)
    plain = make_body(nats, Flaky(), config={"nats_url": nats_server.url})  # no breaker here
    await plain.start(serve=False)
    with pytest.raises(Timeout, match="Deadline passed before the work started"):
        await plain.request("flaky", "work", {}, headers={HEADER: f"{time.time() - 1:.3f}"})
    assert flaky.calls["work"] == 0


async def test_cbs_cells_shows_the_breakers_of_callers(
    nats_server: Any, make_body: MakeBody
) -> None:
    flaky = await serve_flaky(make_body, nats_server.url)
    body = await caller(make_body, nats_server.url, {"flaky": {"failure_threshold": 1}})
    await body.request("flaky", "read", {})
    flaky.mode = "fail"
    with pytest.raises(CbsError):
        await body.request("flaky", "work", {})

    env = {**os.environ, "CBS_PLUGINS": "nats,breaker", "NATS_URL": nats_server.url}
    command = [sys.executable, "-m", "cbs.kernel.cli", "cells"]
    outputs = []
    for extra in (["--json"], []):
        process = await asyncio.create_subprocess_exec(
            *command,
            *extra,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        outputs.append(out.decode())
    rows = {row["id"]: row for row in json.loads(outputs[0])}
    assert rows["flaky"]["breaker"] == {"read": {"closed": 1}, "work": {"open": 1}}
    line = next(line for line in outputs[1].splitlines() if line.startswith("flaky "))
    assert line.endswith("  breaker=work:open,read:closed")
