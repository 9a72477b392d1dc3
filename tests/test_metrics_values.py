"""cbs-metrics: the values in prometheus_client's default registry after N
requests, on the client and the server side, errors by code included."""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any

import pytest
from prometheus_client import REGISTRY

from cbs.contracts import BadRequest, Internal, NotFound, Timeout
from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import Cell, CellRegistry, Config, hookimpl
from cbs.metrics import plugin as metrics_plugin
from cbs.metrics.stats import BUCKETS, BodyStats, EndpointStats
from cbs.nats import plugin as nats_plugin
from cbs.tracing import plugin as tracing_plugin

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


class Samples:
    """Reads samples of the default registry as differences from a start."""

    def __init__(self) -> None:
        self.start: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.start = self.read()

    def read(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in REGISTRY.collect()
            if metric.name.startswith("cbs_")
            for s in metric.samples
        }

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
    samples = Samples()

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

    assert samples.delta("cbs_client_requests_total", **GREET) == n + 3
    assert samples.delta("cbs_client_errors_total", code="BadRequest", **GREET) == 3
    assert samples.delta("cbs_client_request_duration_seconds_count", **GREET) == n + 3
    assert samples.delta("cbs_client_request_duration_seconds_sum", **GREET) > 0
    served = {"cell": "greet", **GREET}
    assert samples.delta("cbs_server_requests_total", **served) == n + 3
    assert samples.delta("cbs_server_errors_total", code="BadRequest", **served) == 3
    assert samples.delta("cbs_server_request_duration_seconds_count", **served) == n + 3
    inf = samples.delta("cbs_server_request_duration_seconds_bucket", le="+Inf", **served)
    assert inf == n + 3

    boom = {"service": "flaky", "verb": "boom", "subject": "cbs.flaky.boom"}
    assert samples.delta("cbs_client_errors_total", code="Internal", **boom) == 1
    assert samples.delta("cbs_server_errors_total", code="Internal", cell="flaky", **boom) == 1
    nobody = {"service": "nobody", "verb": "home", "subject": "cbs.nobody.home"}
    assert samples.delta("cbs_client_errors_total", code="NotFound", **nobody) == 1
    slow = {"service": "flaky", "verb": "slow", "subject": "cbs.flaky.slow"}
    assert samples.delta("cbs_client_errors_total", code="Timeout", **slow) == 1
    # The slow request is still being handled: in flight on the server side.
    assert samples.value("cbs_server_requests_in_flight", cell="flaky", **slow) == 1
    assert samples.value("cbs_client_requests_in_flight", **slow) == 0
    flaky.release.set()
    await asyncio.sleep(0.05)
    assert samples.value("cbs_server_requests_in_flight", cell="flaky", **slow) == 0
    assert samples.delta("cbs_server_requests_total", cell="flaky", **slow) == 1

    greet = {"cell": "greet", "service": "greeter", "version": "1.0.0"}
    instances = samples.value("cbs_cell_instances_up", **greet)
    assert instances is not None and instances >= 1
    cells_up = samples.value("cbs_cells_up")
    assert cells_up is not None and cells_up >= 4
    up = samples.value("cbs_cell_instances_up", cell="flaky", service="flaky", version="2.0.0")
    await responder.stop()
    after = samples.value("cbs_cell_instances_up", cell="flaky", service="flaky", version="2.0.0")
    assert up is not None and after == up - 1


async def test_tracing_and_metrics_together_run_no_hook_per_message(
    make_body: Any, hook_recorder: Any
) -> None:
    body = make_body(greeter_plugin, tracing_plugin, metrics_plugin)
    await body.start()
    await body.request("greeter", "say_hello", {"name": "warm"})
    samples = Samples()
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
