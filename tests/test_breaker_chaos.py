"""The breaker against faults injected by cbs-chaos into the real greeter
cell, over NATS: no hand-written failing cell. Also shows the hook the
breaker adds, cbs_breaker_state_changed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import cbs.breaker
from cbs.breaker import CircuitOpen
from cbs.breaker import plugin as breaker_plugin
from cbs.chaos import clear_rules, set_rules
from cbs.chaos import plugin as chaos_plugin
from cbs.contracts import Internal
from cbs.greeter import plugin as greeter_plugin
from cbs.kernel import Body, hookimpl
from cbs.nats import plugin as nats_plugin


class Transitions:
    name = "transitions"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    @hookimpl
    def cbs_breaker_state_changed(
        self, body: Body, service: str, verb: str, old: str, new: str
    ) -> None:
        self.seen.append((f"{service}.{verb}", old, new))


async def test_injected_faults_open_the_breaker_and_clearing_them_closes_it(
    nats_server: Any, make_body: Any
) -> None:
    url = nats_server.url
    server = make_body(nats_plugin, greeter_plugin, chaos_plugin, config={"nats_url": url})
    await server.start(serve=["greet"])
    transitions = Transitions()
    policy = {"greeter": {"failure_threshold": 3, "cooldown": 0.2, "retries": 0}}
    caller = make_body(
        nats_plugin,
        greeter_plugin,
        breaker_plugin,
        transitions,
        config={"nats_url": url, "breaker_config": json.dumps(policy)},
    )
    await caller.start(serve=False)
    assert await caller.request("greeter", "say_hello", {"name": "Ada"}) == {
        "message": "Hello Ada!"
    }

    set_rules(server, [{"name": "broken", "fault": "abort", "error": "Internal"}])
    for _ in range(3):
        with pytest.raises(Internal):
            await caller.request("greeter", "say_hello", {"name": "Ada"})
    with pytest.raises(CircuitOpen):  # fails fast now, the cell is not asked
        await caller.request("greeter", "say_hello", {"name": "Ada"})
    assert cbs.breaker.states(caller) == {("greeter", "say_hello"): "open"}

    assert clear_rules(server) == ["broken"]
    await asyncio.sleep(0.25)  # the breaker's cooldown: a timer by definition
    assert (await caller.request("greeter", "say_hello", {"name": "Ada"}))["message"]
    assert cbs.breaker.states(caller) == {("greeter", "say_hello"): "closed"}
    assert transitions.seen == [
        ("greeter.say_hello", "closed", "open"),
        ("greeter.say_hello", "open", "half-open"),
        ("greeter.say_hello", "half-open", "closed"),
    ]
