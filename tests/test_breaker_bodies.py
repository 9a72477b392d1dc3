"""cbs-breaker: breakers and their gauge belong to a body. Two bodies of one
process keep their own breakers for the same target, each body's metrics
registry shows its own states, and a stopped body's gauge is gone."""

from __future__ import annotations

from typing import Any

import pytest
from breaker_cells import Flaky
from prometheus_client import REGISTRY, CollectorRegistry

from cbs.breaker import plugin as breaker_plugin
from cbs.breaker import states
from cbs.contracts import CbsError
from cbs.kernel import Body
from cbs.metrics import plugin as metrics_plugin
from cbs.metrics import registry

CONFIG = {"breaker_config": {"flaky": {"failure_threshold": 1, "cooldown": 60}}}


def gauge(body: Body, verb: str = "work") -> float | None:
    own = registry(body)
    assert own is not None
    value: float | None = own.get_sample_value(
        "cbs_breaker_state", {"service": "flaky", "verb": verb}
    )
    return value


def gauge_families(found: CollectorRegistry) -> list[Any]:
    return [m for m in found.collect() if m.name == "cbs_breaker_state"]


async def test_two_bodies_keep_their_own_breakers_and_gauges(make_body: Any) -> None:
    flaky_a, flaky_b = Flaky(), Flaky()
    a = make_body(breaker_plugin, metrics_plugin, flaky_a, config=CONFIG)
    b = make_body(breaker_plugin, metrics_plugin, flaky_b, config=CONFIG)
    await a.start()
    await b.start()
    flaky_a.mode = "fail"
    with pytest.raises(CbsError):
        await a.request("flaky", "work", {})
    await b.request("flaky", "work", {})

    assert states(a) == {("flaky", "work"): "open"}
    assert states(b) == {("flaky", "work"): "closed"}
    assert (gauge(a), gauge(b)) == (2.0, 0.0)
    assert gauge_families(REGISTRY) == []

    # B's breaker stays closed whatever A's does.
    await b.request("flaky", "work", {})
    assert flaky_b.calls["work"] == 2 and flaky_a.calls["work"] == 1

    await a.stop()
    own_a = registry(a)
    assert own_a is not None and gauge_families(own_a) == []
    assert gauge(b) == 0.0
    assert gauge_families(REGISTRY) == []

    # The breakers outlive a restart; the gauge comes back with the body.
    await a.start()
    assert states(a) == {("flaky", "work"): "open"}
    assert gauge(a) == 2.0


async def test_no_gauge_without_a_metrics_registry(make_body: Any) -> None:
    flaky = Flaky()
    body = make_body(breaker_plugin, flaky, config=CONFIG)
    await body.start()
    flaky.mode = "fail"
    with pytest.raises(CbsError):
        await body.request("flaky", "work", {})
    assert states(body) == {("flaky", "work"): "open"}
    assert registry(body) is None
    assert gauge_families(REGISTRY) == []
