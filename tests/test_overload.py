"""Overload gets an answer, on the local bus and on NATS alike:

* past ``max_concurrency`` running and ``max_pending`` waiting, a request is
  answered ``Unavailable`` at once, with ``details.retry_after``; refusals
  are counted (``TransportState.refused_requests``, exported by cbs-metrics)
  and logged, one WARNING line per second and subject at most;
* a waiting request whose ``cbs-deadline`` has passed is answered ``Timeout``
  without running; on the local bus a caller that gives up leaves the queue;
* on NATS, a reply over the server's max_payload becomes an ``Internal``
  error reply, and handlers still running at the drain timeout are cancelled
  and their callers (and those still waiting) answered ``Unavailable``."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from cbs.contracts import CbsError, Internal, Timeout, Unavailable
from cbs.kernel import DEADLINE_HEADER, Cell, TransportState
from cbs.metrics import plugin as metrics_plugin
from cbs.nats import plugin as nats_plugin
from cbs.testing import CellsPlugin

SCHEMA = "overload/v1/Job"


class Slow:
    """A cell whose ``work`` verb sleeps ``seconds`` and counts its runs."""

    def __init__(self, **limits: Any) -> None:
        self.runs: list[Any] = []
        self.cancelled = 0
        self.cell = Cell("slow", category="logic", version="1.0.0", purpose="slow", **limits)

        @self.cell.verb("work", schema=SCHEMA)
        async def work(payload: dict[str, Any]) -> dict[str, Any]:
            self.runs.append(payload.get("n"))
            try:
                await asyncio.sleep(float(payload.get("seconds", 0.3)))
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return {"n": payload.get("n"), "blob": "x" * int(payload.get("reply_bytes", 0))}


async def eventually(check: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds:g} s"
        await asyncio.sleep(0.01)


@pytest.fixture(params=["local", "nats"])
def transport(request: pytest.FixtureRequest) -> tuple[list[Any], dict[str, Any]]:
    if request.param == "nats":
        server: Any = request.getfixturevalue("nats_server")
        return [nats_plugin], {"transport": "nats", "nats_url": server.url}
    return [], {"transport": "local"}


async def outcome(call: Any) -> Any:
    try:
        return await call
    except CbsError as exc:
        return exc


async def test_past_the_queue_a_request_is_refused_at_once_with_retry_after(
    transport: tuple[list[Any], dict[str, Any]], make_body: Any, caplog: Any
) -> None:
    plugins, config = transport
    slow = Slow(max_concurrency=1, max_pending=1)
    body = make_body(*plugins, metrics_plugin, CellsPlugin(slow.cell), config=config)
    await body.start()
    caplog.set_level(logging.WARNING, logger="cbs.transport")
    state = body.capabilities.require(TransportState, needed_by="this test")
    first = asyncio.ensure_future(body.request("slow", "work", {"n": 1, "seconds": 1.0}))
    await eventually(lambda: slow.runs == [1])
    # While 1 runs, one of 2 and 3 may wait (max_pending=1); the other is refused.
    rest = await asyncio.gather(
        *(outcome(body.request("slow", "work", {"n": n, "seconds": 0})) for n in (2, 3))
    )
    refused = [r for r in rest if isinstance(r, Unavailable)]
    assert len(refused) == 1, rest
    details = refused[0].details
    assert details is not None and details["retry_after"] > 0
    served = [r["n"] for r in rest if isinstance(r, dict)]
    assert (await first)["n"] == 1 and len(served) == 1
    assert slow.runs == [1, *served]  # the refused one never ran
    assert state.refused_requests == 1
    import cbs.metrics

    exported = cbs.metrics.registry(body).get_sample_value("cbs_server_refused_requests_total")
    assert exported == 1
    warnings = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        "cbs.slow.work: 1 requests refused (Unavailable) in the last 1.0 s, queue full (1 pending, "
    ), warnings
    assert warnings[0].endswith(" bytes)")


async def test_a_waiting_request_past_its_deadline_is_not_run(
    transport: tuple[list[Any], dict[str, Any]], make_body: Any
) -> None:
    plugins, config = transport
    slow = Slow(max_concurrency=1)
    body = make_body(*plugins, CellsPlugin(slow.cell), config=config)
    await body.start()
    first = asyncio.ensure_future(body.request("slow", "work", {"n": 1, "seconds": 0.4}))
    await eventually(lambda: slow.runs == [1])
    headers = {DEADLINE_HEADER: f"{time.time() + 0.1:.3f}"}
    late = await outcome(body.request("slow", "work", {"n": 2}, headers=headers, timeout=5))
    assert isinstance(late, Timeout) and late.message == "Deadline passed while waiting", late
    assert (await first)["n"] == 1
    assert (await body.request("slow", "work", {"n": 3, "seconds": 0}))["n"] == 3
    assert slow.runs == [1, 3]


async def test_a_local_caller_that_gives_up_leaves_the_queue(make_body: Any) -> None:
    slow = Slow(max_concurrency=1)
    body = make_body(CellsPlugin(slow.cell), config={"transport": "local"})
    await body.start()
    first = asyncio.ensure_future(body.request("slow", "work", {"n": 1, "seconds": 0.3}))
    await eventually(lambda: slow.runs == [1])
    gone = await outcome(body.request("slow", "work", {"n": 2}, timeout=0.05))
    assert isinstance(gone, Timeout)
    assert (await first)["n"] == 1
    assert (await body.request("slow", "work", {"n": 3, "seconds": 0}))["n"] == 3
    assert slow.runs == [1, 3]  # FIFO: had 2 stayed queued, it would have run before 3


async def test_a_reply_over_max_payload_is_an_internal_error(
    nats_server: Any, make_body: Any
) -> None:
    slow = Slow()
    config = {"transport": "nats", "nats_url": nats_server.url}
    body = make_body(nats_plugin, CellsPlugin(slow.cell), config=config)
    await body.start()
    assert body.bus is not None
    limit = body.bus.client.max_payload
    big = {"n": 1, "seconds": 0, "reply_bytes": limit + 1}
    error = await outcome(body.request("slow", "work", big))
    assert isinstance(error, Internal), error
    assert error.message == "Reply too large for the bus"
    assert error.details is not None and error.details["max_payload"] == limit
    assert error.details["reply_bytes"] > limit
    # Just under the limit still goes through, and the cell keeps serving.
    fits = {"n": 2, "seconds": 0, "reply_bytes": limit - 200}
    assert (await body.request("slow", "work", fits))["n"] == 2


async def test_handlers_cut_off_at_the_drain_timeout_answer_unavailable(
    nats_server: Any, make_body: Any
) -> None:
    slow = Slow(max_concurrency=1)
    config = {"transport": "nats", "nats_url": nats_server.url}
    server = make_body(nats_plugin, CellsPlugin(slow.cell), config={**config, "drain_timeout": 0.3})
    await server.start()
    caller = make_body(nats_plugin, config=config)
    await caller.start(serve=False)
    calls = [
        asyncio.ensure_future(
            outcome(
                caller.request("slow", "work", {"n": n, "seconds": 60}, schema=SCHEMA, timeout=20)
            )
        )
        for n in (1, 2)
    ]
    await eventually(lambda: len(slow.runs) == 1)  # one runs, the other waits
    # The second was sent right after the first on one connection: give it
    # time to reach the server's queue (not observable from outside).
    await asyncio.sleep(0.2)
    await server.stop()
    answers = await asyncio.gather(*calls)
    assert all(isinstance(a, Unavailable) for a in answers), answers
    assert slow.cancelled == 1 and len(slow.runs) == 1
