"""cbs-metrics: the values in a body's metrics registry after N requests, on
the client and the server side, errors by code included."""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any

import pytest

from cbs.contracts import BadRequest, Internal, NotFound, Timeout
from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import Body, Cell, CellRegistry, Config, hookimpl
from cbs.metrics import plugin as metrics_plugin
from cbs.metrics import registry
from cbs.metrics.stats import BUCKETS, BodyStats, EndpointStats
from cbs.nats import plugin as nats_plugin
from cbs.tracing import plugin as tracing_plugin


async def wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


GREET = {"service": "greeter", "verb": "say_hello", "subject": "cbs.greeter.say_hello"}


class FlakyPlugin:
    """A cell ``flaky`` whose verbs answer, crash, or take their time."""

    name = "flaky"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cell = Cell("flaky", category="logic", version="2.0.0", purpose="Fails on purpose")
        self.cell.add_verb("ok", self._ok, schema="flaky/v1/Any")
        self.cell.add_verb("boom", self._boom, schema="flaky/v1/Any")
        self.cell.add_verb("slow", self._slow, schema="flaky/v1/Any")

    async def _ok(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def _boom(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")

    async def _slow(self, payload: dict[str, Any]) -> dict[str, Any]:
        await self.release.wait()
        return {}

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cells.add(self.cell)


def read(body: Body) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The ``cbs_*`` samples of the body's metrics registry."""
    found = registry(body)
    assert found is not None
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in found.collect()
        if metric.name.startswith("cbs_")
        for s in metric.samples
    }


class Samples:
    """Reads samples of a body's registry as differences from a start."""

    def __init__(self, body: Body) -> None:
        self.body = body
        self.start: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.start = self.read()

    def read(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return read(self.body)

    def delta(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        now = self.read()
        assert key in now, f"no sample {name}{labels}"
        return now[key] - self.start.get(key, 0.0)

    def value(self, name: str, **labels: str) -> float | None:
        return self.read().get((name, tuple(sorted(labels.items()))))


async def test_counts_after_n_requests_with_errors_by_code(
    nats_server: Any, make_body: Any
) -> None:
    flaky = FlakyPlugin()
    config = {"nats_url": nats_server.url}
    responder = make_body(nats_plugin, greeter_plugin, metrics_plugin, flaky, config=config)
    await responder.start()
    caller = make_body(nats_plugin, greeter_plugin, metrics_plugin, flaky, config=config)
    await caller.start(serve=False)
    sent, handled = Samples(caller), Samples(responder)

    n = 25
    await asyncio.gather(
        *(caller.request("greeter", "say_hello", {"name": f"n{i}"}) for i in range(n))
    )
    for payload in ({}, {"name": ""}, {"name": 7}):
        with pytest.raises(BadRequest):
            await caller.request("greeter", "say_hello", payload)
    with pytest.raises(Internal):
        await caller.request("flaky", "boom", {})
    with pytest.raises(NotFound):
        await caller.request("nobody", "home", {})
    with pytest.raises(Timeout):
        await caller.request("flaky", "slow", {}, timeout=0.2)

    assert sent.delta("cbs_client_requests_total", **GREET) == n + 3
    assert sent.delta("cbs_client_errors_total", code="BadRequest", **GREET) == 3
    assert sent.delta("cbs_client_request_duration_seconds_count", **GREET) == n + 3
    assert sent.delta("cbs_client_request_duration_seconds_sum", **GREET) > 0
    served = {"cell": "greet", **GREET}
    assert handled.delta("cbs_server_requests_total", **served) == n + 3
    assert handled.delta("cbs_server_errors_total", code="BadRequest", **served) == 3
    assert handled.delta("cbs_server_request_duration_seconds_count", **served) == n + 3
    inf = handled.delta("cbs_server_request_duration_seconds_bucket", le="+Inf", **served)
    assert inf == n + 3
    # Each body counts its own side only.
    assert handled.value("cbs_client_requests_total", **GREET) is None
    assert sent.value("cbs_server_requests_total", **served) is None

    boom = {"service": "flaky", "verb": "boom", "subject": "cbs.flaky.boom"}
    assert sent.delta("cbs_client_errors_total", code="Internal", **boom) == 1
    assert handled.delta("cbs_server_errors_total", code="Internal", cell="flaky", **boom) == 1
    nobody = {"service": "nobody", "verb": "home", "subject": "cbs.nobody.home"}
    assert sent.delta("cbs_client_errors_total", code="NotFound", **nobody) == 1
    slow = {"service": "flaky", "verb": "slow", "subject": "cbs.flaky.slow"}
    assert sent.delta("cbs_client_errors_total", code="Timeout", **slow) == 1
    # The slow request is still being handled: in flight on the server side.
    assert handled.value("cbs_server_requests_in_flight", cell="flaky", **slow) == 1
    assert sent.value("cbs_client_requests_in_flight", **slow) == 0
    flaky.release.set()
    in_flight = {"cell": "flaky", **slow}
    await wait_for(lambda: handled.value("cbs_server_requests_in_flight", **in_flight) == 0)
    assert handled.delta("cbs_server_requests_total", cell="flaky", **slow) == 1

    greet = {"cell": "greet", "service": "greeter", "version": "1.0.0"}
    assert handled.value("cbs_cell_instances_up", **greet) == 1
    assert handled.value("cbs_cells_up") == 4  # the greeter's three and flaky
    assert sent.value("cbs_cells_up") == 0  # the caller serves none
    flaky_cell = {"cell": "flaky", "service": "flaky", "version": "2.0.0"}
    assert handled.value("cbs_cell_instances_up", **flaky_cell) == 1
    await responder.stop()
    # A stopped body's series are gone from its registry.
    assert read(responder) == {}
    assert sent.delta("cbs_client_requests_total", **GREET) == n + 3


async def test_tracing_and_metrics_together_run_no_hook_per_message(
    make_body: Any, hook_recorder: Any
) -> None:
    body = make_body(greeter_plugin, tracing_plugin, metrics_plugin)
    await body.start()
    await body.request("greeter", "say_hello", {"name": "warm"})
    samples = Samples(body)
    hook_recorder(body)
    await asyncio.gather(*(body.request("greeter", "say_hello", {"name": "x"}) for _ in range(50)))
    assert hook_recorder.calls == []
    assert samples.delta("cbs_server_requests_total", cell="greet", **GREET) == 50


def test_histogram_buckets_are_cumulative_and_bounded() -> None:
    from cbs.metrics.collector import _families

    endpoint = EndpointStats(("s", "v", "cbs.s.v"))
    for seconds in (0.00005, 0.0001, 0.0003, 2.0, 99.0):
        endpoint.buckets[bisect_left(BUCKETS, seconds)] += 1
        endpoint.seconds += seconds
        endpoint.requests += 1
    _, _, latency, _ = _families("client", list(BodyStats.CLIENT_LABELS), [endpoint])
    buckets = {s.labels["le"]: s.value for s in latency.samples if s.name.endswith("_bucket")}
    assert buckets["0.0001"] == 2  # le is inclusive
    assert buckets["0.00025"] == 2
    assert buckets["0.0005"] == 3
    assert buckets["2.5"] == 4
    assert buckets["10.0"] == 4
    assert buckets["+Inf"] == 5
    values = list(buckets.values())
    assert values == sorted(values)
