"""cbs-metrics: every body has its own registry. Two bodies of one process
count apart, each on its own /metrics, and a stopped body leaves no series
behind, in another body's /metrics or in prometheus_client's default registry."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from typing import Any

from breaker_cells import Flaky
from prometheus_client import REGISTRY

from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import Body
from cbs.metrics import plugin as metrics_plugin
from cbs.metrics import registry
from cbs.metrics.plugin import server_url

GREET = 'cell="greet",service="greeter",subject="cbs.greeter.say_hello",verb="say_hello"'


def scrape(body: Body, query: str = "") -> str:
    url = server_url(body)
    assert url is not None
    with urllib.request.urlopen(url + "metrics" + query, timeout=10) as reply:
        text: str = reply.read().decode()
    return text


def served(text: str) -> float | None:
    found = re.search(rf"^cbs_server_requests_total\{{{GREET}\}} (\S+)$", text, re.M)
    return None if found is None else float(found.group(1))


def default_registry_cbs_samples() -> list[Any]:
    return [s for m in REGISTRY.collect() if m.name.startswith("cbs_") for s in m.samples]


async def test_two_bodies_count_apart_and_a_stopped_one_is_forgotten(make_body: Any) -> None:
    config = {"metrics_port": 0}
    a = make_body(greeter_plugin, metrics_plugin, Flaky("alpha"), config=config)
    b = make_body(greeter_plugin, metrics_plugin, Flaky("beta"), config=config)
    await a.start()
    await b.start()
    for i in range(3):
        await a.request("greeter", "say_hello", {"name": f"a{i}"})
        await a.request("alpha", "read", {})
    for i in range(5):
        await b.request("greeter", "say_hello", {"name": f"b{i}"})
    await b.request("beta", "read", {})

    text_a, text_b = await asyncio.gather(
        asyncio.to_thread(scrape, a), asyncio.to_thread(scrape, b)
    )
    assert (served(text_a), served(text_b)) == (3.0, 5.0)
    assert 'cell="alpha"' in text_a and 'cell="beta"' not in text_a
    assert 'cell="beta"' in text_b and 'cell="alpha"' not in text_b
    assert "cbs_cells_up 4.0" in text_a and "cbs_cells_up 4.0" in text_b
    # The default registry (process and Python metrics) is served as well,
    # and holds nothing of CBS.
    assert "python_info" in text_b or "process_cpu_seconds_total" in text_b
    assert default_registry_cbs_samples() == []
    # ?name[]= picks series from both registries.
    query = "?name[]=cbs_server_requests_total&name[]=python_info"
    picked = await asyncio.to_thread(scrape, b, query)
    names = {line.split("{")[0].split(" ")[0] for line in picked.splitlines() if line[:1] != "#"}
    assert names == {"cbs_server_requests_total", "python_info"}

    await a.stop()
    text_b = await asyncio.to_thread(scrape, b)
    assert served(text_b) == 5.0
    assert "alpha" not in text_b
    own_a = registry(a)
    assert own_a is not None and list(own_a.collect()) == []
    assert default_registry_cbs_samples() == []

    # A restarted body serves its counters again (they belong to the body).
    await a.start()
    text_a = await asyncio.to_thread(scrape, a)
    assert served(text_a) == 3.0
    assert 'cbs_cell_instances_up{cell="alpha",service="alpha",version="1.0.0"} 1.0' in text_a


async def test_a_body_without_the_endpoint_exposes_its_registry(make_body: Any) -> None:
    body = make_body(greeter_plugin, metrics_plugin)
    assert registry(body) is None  # made at the first start
    await body.start()
    await body.request("greeter", "say_hello", {"name": "x"})
    own = registry(body)
    assert own is not None
    labels = {"cell": "greet", "service": "greeter", "verb": "say_hello"}
    labels["subject"] = "cbs.greeter.say_hello"
    assert own.get_sample_value("cbs_server_requests_total", labels) == 1.0
    assert REGISTRY.get_sample_value("cbs_server_requests_total", labels) is None
