"""cbs-breaker on the local bus: the order of the layers and what each one
sees, retries, deadlines, the bulkhead, the server's deadline guard,
visibility (states, logs, metric, ``cbs cells``)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from breaker_cells import SCHEMA, Flaky

import cbs.breaker
from cbs.breaker import HEADER, BulkheadFull, CircuitOpen, layers, plugin, report
from cbs.contracts import (
    BadRequest,
    CbsError,
    Envelope,
    NoResponders,
    NotFound,
    Timeout,
    Unavailable,
)
from cbs.kernel import (
    Body,
    Cell,
    CellRegistry,
    ClientHandler,
    Config,
    MiddlewareRegistry,
    Target,
    hookimpl,
)
from cbs.kernel.commands import add_cell_fields, cells_report
from cbs.testing import call_cell_envelope

MakeBody = Callable[..., Body]


class Probe:
    """Client middleware at the default order 0: it runs once per attempt,
    between the breaker and the attempt timeout."""

    name = "probe"

    def __init__(self) -> None:
        self.attempts: list[tuple[str, float]] = []  # verb, timeout given
        self.errors: list[str] = []

    @hookimpl
    def cbs_register_middleware(self, middleware: MiddlewareRegistry) -> None:
        def factory(target: Target, call_next: ClientHandler) -> ClientHandler:
            async def handler(
                request: Envelope, headers: dict[str, str], timeout: float
            ) -> Envelope:
                self.attempts.append((target.verb, timeout))
                try:
                    return await call_next(request, headers, timeout)
                except CbsError as exc:
                    self.errors.append(type(exc).__name__)
                    raise

            return handler

        middleware.add_client("probe", factory, phase="attempt", order=-10)  # once per attempt


def body_with(
    make_body: MakeBody, config: dict[str, Any], *plugins: Any
) -> tuple[Body, Flaky, Probe]:
    flaky, probe = Flaky(), Probe()
    body = make_body(plugin, flaky, probe, *plugins, config={"breaker_config": config})
    return body, flaky, probe


async def test_layers_are_composed_in_the_documented_order(make_body: MakeBody) -> None:
    body, _, _ = body_with(make_body, {})
    client = [p for p in body.middleware.placements() if p["side"] == "client"]
    assert [p["name"] for p in client] == [
        "deadline",
        "bulkhead",
        "retry",
        "circuit_breaker",
        "probe",
        "attempt_timeout",
    ]
    assert body.middleware.server.names() == ["deadline_guard"]


async def test_a_timeout_counts_as_a_breaker_failure(make_body: MakeBody) -> None:
    body, flaky, probe = body_with(
        make_body, {"flaky": {"failure_threshold": 2, "attempt_timeout": 0.05}}
    )
    await body.start()
    flaky.mode = "slow"
    for _ in range(2):
        with pytest.raises(Timeout):
            await body.request("flaky", "work", {}, timeout=2)
    assert cbs.breaker.states(body) == {("flaky", "work"): "open"}
    began = time.monotonic()
    with pytest.raises(CircuitOpen) as info:
        await body.request("flaky", "work", {}, timeout=2)
    assert time.monotonic() - began < 0.5  # fails fast, no wait for a timeout
    assert isinstance(info.value, Unavailable) and info.value.code == "Unavailable"
    assert info.value.details is not None and info.value.details["state"] == "open"
    assert flaky.calls["work"] == 2 and len(probe.attempts) == 2  # nothing went through


async def test_retries_do_not_hide_failures_from_the_breaker(make_body: MakeBody) -> None:
    body, flaky, probe = body_with(
        make_body,
        {"flaky": {"failure_threshold": 3, "attempt_timeout": 0.05, "retries": 2, "backoff": 0}},
    )
    await body.start()
    flaky.mode = "slow"
    with pytest.raises(Timeout):
        await body.request("flaky", "read", {}, timeout=2)  # one call, three attempts
    assert flaky.calls["read"] == 3
    assert probe.errors == ["Timeout"] * 3  # each attempt failed on its own
    assert cbs.breaker.states(body)[("flaky", "read")] == "open"
    with pytest.raises(CircuitOpen):
        await body.request("flaky", "read", {})
    assert flaky.calls["read"] == 3


async def test_an_opening_breaker_stops_the_retries(make_body: MakeBody) -> None:
    body, flaky, probe = body_with(
        make_body,
        {"flaky": {"failure_threshold": 2, "attempt_timeout": 0.05, "retries": 5, "backoff": 0}},
    )
    await body.start()
    flaky.script = ["slow", "slow", "ok"]
    with pytest.raises(CircuitOpen):  # the third attempt met the open breaker
        await body.request("flaky", "read", {}, timeout=2)
    assert flaky.calls["read"] == 2
    assert probe.errors == ["Timeout", "Timeout"]


async def test_bad_request_is_no_failure_and_never_retried(make_body: MakeBody) -> None:
    body, flaky, _ = body_with(make_body, {"default": {"failure_threshold": 1, "backoff": 0}})
    await body.start()
    flaky.mode = "bad"
    for _ in range(3):
        with pytest.raises(BadRequest):
            await body.request("flaky", "read", {})
    assert flaky.calls["read"] == 3  # one attempt each
    assert cbs.breaker.states(body)[("flaky", "read")] == "closed"


async def test_a_cells_not_found_is_an_answer_no_responders_a_failure(
    make_body: MakeBody,
) -> None:
    config = {
        "default": {"failure_threshold": 3, "backoff": 0},
        "ghost.read": {"idempotent": True, "retries": 2},
    }
    body, flaky, probe = body_with(make_body, config)
    await body.start()
    flaky.mode = "missing"
    with pytest.raises(NotFound) as info:
        await body.request("flaky", "read", {})
    assert type(info.value) is NotFound  # the cell's answer: no retry, no failure
    assert flaky.calls["read"] == 1
    assert cbs.breaker.states(body)[("flaky", "read")] == "closed"

    with pytest.raises(NoResponders):  # nobody serves cbs.ghost.read
        await body.request("ghost", "read", {})
    assert [verb for verb, _ in probe.attempts].count("read") == 1 + 3
    assert cbs.breaker.states(body)[("ghost", "read")] == "open"


async def test_internal_counts_and_unavailable_does_not(make_body: MakeBody) -> None:
    body, flaky, _ = body_with(make_body, {"flaky": {"failure_threshold": 2}})
    await body.start()
    flaky.script = ["unavailable", "unavailable", "unavailable", "fail"]
    for error in (Unavailable, Unavailable, Unavailable, CbsError):
        with pytest.raises(error):
            await body.request("flaky", "work", {})
    assert cbs.breaker.states(body)[("flaky", "work")] == "closed"
    flaky.mode = "internal"
    with pytest.raises(CbsError, match="Internal"):
        await body.request("flaky", "work", {})
    assert cbs.breaker.states(body)[("flaky", "work")] == "open"


async def test_only_idempotent_verbs_are_retried(make_body: MakeBody) -> None:
    body, flaky, _ = body_with(make_body, {"default": {"backoff": 0, "retries": 3}})
    await body.start()
    flaky.script = ["unavailable", "unavailable"]
    assert await body.request("flaky", "read", {}) == {"verb": "read", "n": 3}

    flaky.mode = "unavailable"
    with pytest.raises(Unavailable):
        await body.request("flaky", "work", {})
    assert flaky.calls["work"] == 1


async def test_idempotency_declared_in_the_configuration(make_body: MakeBody) -> None:
    config = {
        "default": {"backoff": 0, "retries": 2},
        "flaky": {"work": {"idempotent": True}, "read": {"idempotent": False}},
    }
    body, flaky, _ = body_with(make_body, config)
    await body.start()
    flaky.mode = "unavailable"
    with pytest.raises(Unavailable):
        await body.request("flaky", "work", {})
    with pytest.raises(Unavailable):
        await body.request("flaky", "read", {})
    assert flaky.calls == {"work": 3, "read": 1}


async def test_retries_stay_within_the_budget(make_body: MakeBody) -> None:
    config = {"flaky": {"retries": 100, "backoff": 0.01, "backoff_max": 0.04}}
    body, flaky, probe = body_with(make_body, config)
    await body.start()
    flaky.mode = "unavailable"
    began = time.time()
    # The last failure, or Timeout when the last attempt began with so little
    # of the budget left that the deadline passed before the cell ran.
    with pytest.raises((Unavailable, Timeout)):
        await body.request("flaky", "read", {}, timeout=0.3)
    ended = time.time()
    assert 2 <= flaky.calls["read"] < 101
    assert ended - began < 0.3 + 0.5  # generous: the budget plus scheduling slack
    # No attempt was given time beyond the call's budget (header: millisecond precision).
    assert all(float(headers[HEADER]) <= began + 0.3 + 0.002 for _, _, headers in flaky.seen)
    # Each attempt is given what is left of the budget, never more.
    timeouts = [t for _, t in probe.attempts]
    assert timeouts == sorted(timeouts, reverse=True) and timeouts[0] <= 0.3


async def test_backoff_is_exponential_with_full_jitter() -> None:
    slept: list[float] = []
    now = [0.0]
    draws = iter([1.0, 0.5, 1.0, 1.0, 0.25, 1.0])

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def unavailable(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
        raise Unavailable()

    handler = layers.retry_layer(
        6, 0.1, 1.0, rng=lambda: next(draws), sleep=sleep, clock=lambda: now[0]
    )(Target("svc", "verb"), unavailable)
    with pytest.raises(Unavailable):
        await handler(Envelope.request("svc", "verb", {}, schema=SCHEMA), {}, 100.0)
    # base * 2**n, capped at 1.0, times the draw
    assert slept == pytest.approx([0.1, 0.1, 0.4, 0.8, 0.25, 1.0])


async def test_retry_gives_up_when_the_backoff_would_pass_the_deadline() -> None:
    now = [0.0]
    calls = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def timeout(request: Envelope, headers: dict[str, str], t: float) -> Envelope:
        calls.append(t)
        now[0] += 0.3
        raise Timeout()

    handler = layers.retry_layer(10, 0.2, 0.2, rng=lambda: 1.0, sleep=sleep, clock=lambda: now[0])(
        Target("svc", "verb"), timeout
    )
    with pytest.raises(Timeout):
        await handler(Envelope.request("svc", "verb", {}, schema=SCHEMA), {}, 1.0)
    # 0.3 + 0.2 + 0.3 = 0.8 used; another 0.2 of backoff would reach 1.0
    assert calls == pytest.approx([1.0, 0.5])


async def test_the_deadline_header_reaches_the_cell(make_body: MakeBody) -> None:
    config = {"flaky": {"read": {"attempt_timeout": 0.5}}, "other": {"deadline": 1.0}}
    body, flaky, _ = body_with(make_body, config)
    await body.start()
    await body.request("flaky", "work", {}, timeout=2.0)
    await body.request("flaky", "read", {}, timeout=2.0)
    (_, at_work, work), (_, at_read, read) = flaky.seen
    assert float(work[HEADER]) - at_work == pytest.approx(2.0, abs=0.5)
    assert float(read[HEADER]) - at_read == pytest.approx(0.5, abs=0.3)
    assert cbs.breaker.remaining() is None  # not inside a handler


async def test_deadline_propagation_can_be_turned_off(make_body: MakeBody) -> None:
    config = {"flaky": {"propagate_deadline": False, "read": {"attempt_timeout": 0.05}}}
    body, flaky, _ = body_with(make_body, config)
    await body.start()
    await body.request("flaky", "work", {})
    flaky.mode = "slow"
    with pytest.raises(Timeout):  # the attempt timeout still applies
        await body.request("flaky", "read", {}, timeout=5)
    assert [headers for _, _, headers in flaky.seen] == [{}] * 4  # work, read with 2 retries


async def test_a_configured_deadline_caps_the_call(make_body: MakeBody) -> None:
    body, flaky, _ = body_with(make_body, {"flaky": {"deadline": 0.2}})
    await body.start()
    flaky.mode = "slow"
    began = time.monotonic()
    with pytest.raises(Timeout):
        await body.request("flaky", "work", {}, timeout=5)
    assert time.monotonic() - began < 2
    assert float(flaky.seen[0][2][HEADER]) - flaky.seen[0][1] == pytest.approx(0.2, abs=0.15)


async def test_a_passed_deadline_is_not_sent(make_body: MakeBody) -> None:
    body, flaky, probe = body_with(make_body, {})
    await body.start()
    with pytest.raises(Timeout, match="Deadline passed"):
        await body.request("flaky", "work", {}, headers={HEADER: f"{time.time() - 1:.3f}"})
    assert flaky.calls["work"] == 0 and probe.attempts == []


class Relay:
    """A cell that calls flaky.read from its handler, with a long timeout."""

    name = "relay"

    def __init__(self) -> None:
        self.body: Body | None = None
        self.cell = Cell("relay", category="logic", version="1.0.0", purpose="Calls on")
        self.cell.add_verb("go", self.go, schema=SCHEMA)
        self.left: list[float | None] = []

    async def go(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.body is not None
        self.left.append(cbs.breaker.remaining())
        return await self.body.request("flaky", "read", {}, timeout=30)

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cells.add(self.cell)


async def test_a_handler_calling_on_inherits_its_deadline(make_body: MakeBody) -> None:
    relay = Relay()
    body, flaky, _ = body_with(make_body, {}, relay)
    relay.body = body
    await body.start()
    await body.request("relay", "go", {}, timeout=1.0)
    left = relay.left[0]
    assert left is not None and 0 < left <= 1.001  # the header has millisecond precision
    _, at, headers = flaky.seen[0]
    assert float(headers[HEADER]) - at <= 1.001  # not the 30 s the handler asked for


# -- the bulkhead ------------------------------------------------------------------------------


class Gate:
    """A cell whose calls wait until the test opens the gate."""

    name = "gate"

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.inside = 0
        self.most = 0
        self.cell = Cell("gate", category="logic", version="1.0.0", purpose="Waits")
        self.cell.add_verb("wait", self.wait, schema=SCHEMA)

    async def wait(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await self.open.wait()
        finally:
            self.inside -= 1
        return {}

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cells.add(self.cell)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 2 s")


async def test_bulkhead_bounds_calls_in_flight_and_queues(make_body: MakeBody) -> None:
    gate = Gate()
    config = {"gate": {"max_concurrent": 2, "max_queue": 1, "failure_threshold": 1}}
    body, _, _ = body_with(make_body, config, gate)
    await body.start()
    calls = [asyncio.ensure_future(body.request("gate", "wait", {})) for _ in range(3)]
    await until(lambda: gate.inside == 2)
    with pytest.raises(BulkheadFull):  # two in flight, one waiting: the fourth fails fast
        await body.request("gate", "wait", {})
    gate.open.set()
    assert await asyncio.gather(*calls) == [{}, {}, {}]
    assert gate.most == 2
    # Refusals are not the target's fault: the breaker (threshold 1) stays closed.
    assert cbs.breaker.states(body)[("gate", "wait")] == "closed"


async def test_bulkhead_wait_is_bounded_by_the_deadline(make_body: MakeBody) -> None:
    gate = Gate()
    body, _, _ = body_with(make_body, {"gate": {"max_concurrent": 1, "max_queue": 5}}, gate)
    await body.start()
    first = asyncio.ensure_future(body.request("gate", "wait", {}))
    await until(lambda: gate.inside == 1)
    with pytest.raises(Timeout, match="No free slot"):
        await body.request("gate", "wait", {}, timeout=0.1)
    waiter = asyncio.ensure_future(body.request("gate", "wait", {}))
    await asyncio.sleep(0.05)
    waiter.cancel()  # leaves the line
    gate.open.set()
    assert await first == {}
    assert await body.request("gate", "wait", {}) == {}  # the slot came back


def test_bulkhead_hands_slots_over_in_order() -> None:
    async def scenario() -> list[int]:
        bulkhead = layers.Bulkhead(1, 3)
        order: list[int] = []
        assert bulkhead.try_acquire()

        async def take(i: int) -> None:
            await bulkhead.wait(5, "x")
            order.append(i)
            bulkhead.release()

        tasks = [asyncio.ensure_future(take(i)) for i in range(3)]
        await asyncio.sleep(0)
        bulkhead.release()
        await asyncio.gather(*tasks)
        assert bulkhead.active == 0 and not bulkhead.waiters
        return order

    assert asyncio.run(scenario()) == [0, 1, 2]


# -- the server's deadline guard ---------------------------------------------------------------


async def test_guard_refuses_work_whose_deadline_passed() -> None:
    flaky = Flaky()
    reply = await call_cell_envelope(
        flaky.cell,
        "work",
        {},
        headers={HEADER: f"{time.time() - 0.01:.3f}"},
        middleware=[layers.deadline_guard],
    )
    assert reply.error is not None and reply.error["code"] == "Timeout"
    assert flaky.calls["work"] == 0


async def test_guard_cancels_work_still_running_at_the_deadline() -> None:
    flaky = Flaky()
    flaky.mode = "slow"
    began = time.monotonic()
    reply = await call_cell_envelope(
        flaky.cell,
        "work",
        {},
        headers={HEADER: f"{time.time() + 0.1:.3f}"},
        middleware=[layers.deadline_guard],
    )
    assert reply.error is not None and reply.error["code"] == "Timeout"
    assert flaky.cancelled == 1
    assert time.monotonic() - began < 2


async def test_guard_lets_work_within_the_deadline_through() -> None:
    flaky = Flaky()
    for mode, delay in (("ok", 0.0), ("slow", 0.02)):
        flaky.mode, flaky.delay = mode, delay
        reply = await call_cell_envelope(
            flaky.cell,
            "work",
            {},
            headers={HEADER: f"{time.time() + 5:.3f}"},
            middleware=[layers.deadline_guard],
        )
        assert reply.payload is not None and reply.payload["verb"] == "work"
    for headers in ({}, {HEADER: "soon"}, {HEADER: "inf"}):
        reply = await call_cell_envelope(
            flaky.cell, "work", {}, headers=headers, middleware=[layers.deadline_guard]
        )
        assert reply.error is None


async def test_guard_cancels_a_blocking_handler_and_answers() -> None:
    cell = Cell("sync_slow", category="logic", version="1.0.0", purpose="Blocks")

    @cell.verb("block", schema=SCHEMA)
    def block(payload: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.3)  # a plain def: runs in a worker thread
        return {}

    reply = await call_cell_envelope(
        cell,
        "block",
        {},
        headers={HEADER: f"{time.time() + 0.05:.3f}"},
        middleware=[layers.deadline_guard],
    )
    assert reply.error is not None and reply.error["code"] == "Timeout"


async def test_guard_passes_its_own_cancellation_on() -> None:
    flaky = Flaky()
    flaky.mode = "slow"
    call = asyncio.ensure_future(
        call_cell_envelope(
            flaky.cell,
            "work",
            {},
            headers={HEADER: f"{time.time() + 5:.3f}"},
            middleware=[layers.deadline_guard],
        )
    )
    await until(lambda: flaky.calls["work"] == 1)
    await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert flaky.cancelled == 1


# -- visibility --------------------------------------------------------------------------------


async def test_each_transition_is_logged_once(
    make_body: MakeBody, caplog: pytest.LogCaptureFixture
) -> None:
    body, flaky, _ = body_with(make_body, {"flaky": {"failure_threshold": 1, "cooldown": 0.05}})
    await body.start()
    caplog.set_level(logging.INFO, logger="cbs.breaker")
    flaky.mode = "fail"
    with pytest.raises(CbsError):
        await body.request("flaky", "work", {})
    for _ in range(3):
        with pytest.raises(CircuitOpen):
            await body.request("flaky", "work", {})
    await asyncio.sleep(0.06)
    for _ in range(3):
        assert cbs.breaker.states(body)[("flaky", "work")] == "half-open"
    flaky.mode = "ok"
    await body.request("flaky", "work", {})
    await body.request("flaky", "work", {})
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "cbs.breaker"]
    assert messages == [
        ("WARNING", "breaker flaky.work: closed -> open"),
        ("INFO", "breaker flaky.work: open -> half-open"),
        ("INFO", "breaker flaky.work: half-open -> closed"),
    ]


async def test_states_and_the_gauge(make_body: MakeBody) -> None:
    metrics = pytest.importorskip("cbs.metrics")
    from cbs.metrics import plugin as metrics_plugin

    body, flaky, _ = body_with(make_body, {"flaky": {"failure_threshold": 1}}, metrics_plugin)
    assert cbs.breaker.states(body) == {}
    await body.start()
    await body.request("flaky", "read", {})
    flaky.mode = "fail"
    with pytest.raises(CbsError):
        await body.request("flaky", "work", {})
    assert cbs.breaker.states(body) == {("flaky", "read"): "closed", ("flaky", "work"): "open"}
    own = metrics.registry(body)
    assert own is not None

    def value(verb: str) -> float | None:
        labels = {"service": "flaky", "verb": verb}
        sample: float | None = own.get_sample_value("cbs_breaker_state", labels)
        return sample

    assert (value("read"), value("work")) == (0.0, 2.0)


async def test_cells_field_shows_the_breakers_of_this_process(make_body: MakeBody) -> None:
    body, flaky, _ = body_with(make_body, {"flaky": {"failure_threshold": 1}})
    await body.start()  # the local bus: no other process to ask
    flaky.mode = "fail"
    with pytest.raises(CbsError):
        await body.request("flaky", "work", {})
    rows = cells_report(body)
    fields = await add_cell_fields(body, rows)
    assert [f.name for f in fields] == ["breaker"]
    row = next(r for r in rows if r["id"] == "flaky")
    assert row["breaker"] == {"work": {"open": 1}}
    assert fields[0].item.text(row["breaker"]) == "work:open"
    assert report.format_field({"work": {"closed": 2, "open": 1}}) == "work:open(1/3)"


async def test_a_body_without_the_plugin_has_no_breakers(make_body: MakeBody) -> None:
    flaky = Flaky()
    body = make_body(flaky)
    await body.start()
    flaky.mode = "slow"
    with pytest.raises(Timeout):
        await body.request("flaky", "work", {}, timeout=0.05)
    assert cbs.breaker.states(body) == {}
    assert flaky.seen[0][2] == {}  # and sends no deadline header


async def test_no_hook_runs_per_message(make_body: MakeBody, hook_recorder: Any) -> None:
    body, flaky, _ = body_with(make_body, {"default": {"backoff": 0}})
    await body.start()
    hook_recorder(body)
    flaky.script = ["unavailable"]
    for _ in range(5):
        await body.request("flaky", "read", {})
    assert hook_recorder.calls == []


PROBE_IMPORTS = """
import asyncio, importlib.util, sys
real = importlib.util.find_spec
if sys.argv[1] == "absent":
    def find_spec(name, *args):
        return None if name == "prometheus_client" else real(name, *args)
    importlib.util.find_spec = find_spec
from breaker_cells import Flaky
from cbs.breaker import plugin, states
from cbs.kernel import Body

async def main():
    flaky = Flaky()
    plugins = [plugin, flaky]
    if sys.argv[2] == "metrics":
        from cbs.metrics import plugin as metrics_plugin
        plugins.append(metrics_plugin)
    body = Body({"breaker_config": {"default": {"failure_threshold": 1}}},
                plugins=plugins, autoload=False)
    print("built", "prometheus_client" in sys.modules)
    async with body:
        flaky.mode = "fail"
        try:
            await body.request("flaky", "work", {})
        except Exception as exc:
            print(type(exc).__name__)
        print(states(body)[("flaky", "work")], "prometheus_client" in sys.modules)

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("case", "metrics", "imported"),
    [
        ("absent", "", "False"),
        ("installed", "", "False"),  # nobody serves the gauge
        # the gauge waits in the body's metrics registry until something reads
        # it (test_states_and_the_gauge reads it)
        ("installed", "metrics", "False"),
    ],
)
def test_prometheus_is_imported_only_when_there_and_needed(
    case: str, metrics: str, imported: str
) -> None:
    if case == "installed":
        pytest.importorskip("prometheus_client")
    if metrics:
        pytest.importorskip("cbs.metrics")
    tests = Path(__file__).parent
    result = subprocess.run(
        [sys.executable, "-c", PROBE_IMPORTS, case, metrics or "-"],
        cwd=tests,
        env={**os.environ, "PYTHONPATH": str(tests)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["built False", "Internal", f"open {imported}"]
