"""cbs-chaos faults through real bodies on a real nats-server: a body serves a
counting cell, another calls it; rules come from the chaos_file option or
are switched in code."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

import cbs.chaos
from cbs.chaos import plugin as chaos
from cbs.chaos.layers import ChaosState, server_layer
from cbs.chaos.rules import parse_rules, read_rules, subject_matcher
from cbs.contracts import BadRequest, Envelope, Internal, NotFound, Timeout, Unavailable
from cbs.kernel import Body, Cell, ConfigError, Served
from cbs.nats import plugin as nats
from cbs.testing import CellsPlugin

MakeBody = Callable[..., Body]
SCHEMA = "echo/v1/Any"


class Echo:
    """A cell ``echo.say`` that counts the requests reaching it."""

    def __init__(self, service: str = "echo") -> None:
        self.calls = 0
        self.cell = Cell(service, category="logic", version="1.0.0", purpose="Echoes")
        self.cell.add_verb("say", self._say, schema=SCHEMA)

    async def _say(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return {"n": self.calls}


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met in {seconds} s")
        await asyncio.sleep(0.01)


async def serve(make_body: MakeBody, url: str, rules: Any = None, *cells: Echo) -> Body:
    config: dict[str, Any] = {"nats_url": url}
    if rules is not None:
        config["chaos_file"] = json.dumps(rules)
    body = make_body(nats, chaos, CellsPlugin(*(e.cell for e in cells)), config=config)
    await body.start()
    return body


async def caller(make_body: MakeBody, url: str, rules: Any = None) -> Body:
    config: dict[str, Any] = {"nats_url": url}
    if rules is not None:
        config["chaos_file"] = json.dumps(rules)
    body = make_body(nats, chaos, config=config)
    await body.start(serve=False)
    return body


async def say(body: Body, timeout: float = 2.0, **kwargs: Any) -> dict[str, Any]:
    return await body.request("echo", "say", {}, schema=SCHEMA, timeout=timeout, **kwargs)


# -- server side ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("BadRequest", BadRequest),
        ("Timeout", Timeout),
        ("NotFound", NotFound),
        ("Internal", Internal),
        ("Unavailable", Unavailable),
    ],
)
async def test_server_abort_answers_the_chosen_code(
    nats_server: Any, make_body: MakeBody, code: str, cls: type[Exception]
) -> None:
    echo = Echo()
    await serve(make_body, nats_server.url, [{"fault": "abort", "error": code}], echo)
    body = await caller(make_body, nats_server.url)
    with pytest.raises(cls, match="Injected fault") as info:
        await say(body)
    assert getattr(info.value, "code", None) == code
    assert echo.calls == 0  # the handler never ran


async def test_server_abort_unavailable_carries_retry_after(
    nats_server: Any, make_body: MakeBody
) -> None:
    rules = [{"fault": "abort", "error": "Unavailable", "retry_after": 2, "message": "Draining"}]
    await serve(make_body, nats_server.url, rules, Echo())
    body = await caller(make_body, nats_server.url)
    with pytest.raises(Unavailable, match="Draining") as info:
        await say(body)
    assert info.value.details == {"retry_after": 2.0}


async def test_server_delay_past_the_timeout_is_a_timeout(
    nats_server: Any, make_body: MakeBody
) -> None:
    echo = Echo()
    await serve(make_body, nats_server.url, [{"fault": "delay", "delay": 1.0}], echo)
    body = await caller(make_body, nats_server.url)
    with pytest.raises(Timeout):
        await say(body, timeout=0.2)
    assert echo.calls == 0
    await until(lambda: echo.calls == 1)  # the delayed request still reaches the cell


async def test_server_jittered_delay_still_answers(nats_server: Any, make_body: MakeBody) -> None:
    rules = [{"fault": "delay", "delay": 0.02, "jitter": 0.02}]
    await serve(make_body, nats_server.url, rules, Echo())
    body = await caller(make_body, nats_server.url)
    assert [(await say(body))["n"] for _ in range(5)] == [1, 2, 3, 4, 5]


async def test_server_drop_does_the_work_and_the_caller_times_out(
    nats_server: Any, make_body: MakeBody
) -> None:
    echo = Echo()
    await serve(make_body, nats_server.url, [{"fault": "drop", "hold": 1.0}], echo)
    body = await caller(make_body, nats_server.url)
    with pytest.raises(Timeout):
        await say(body, timeout=0.3)
    assert echo.calls == 1


async def test_percent_fails_about_that_share(nats_server: Any, make_body: MakeBody) -> None:
    rules = [{"fault": "abort", "error": "Internal", "percent": 50}]
    echo = Echo()
    await serve(make_body, nats_server.url, rules, echo)
    body = await caller(make_body, nats_server.url)
    failed = 0
    for _ in range(200):
        try:
            await say(body)
        except Internal:
            failed += 1
    assert 60 <= failed <= 140  # p = 0.5, n = 200: well over 5 sigma either side
    assert echo.calls == 200 - failed


async def test_rules_target_subject_cell_and_headers(nats_server: Any, make_body: MakeBody) -> None:
    echo, other = Echo(), Echo("other")
    rules = [
        {"name": "by-subject", "fault": "abort", "subject": "cbs.*.shout"},
        {"name": "by-cell", "fault": "abort", "error": "Internal", "cell": "other"},
        {"name": "by-header", "fault": "abort", "error": "BadRequest", "headers": {"t": "acme"}},
    ]
    await serve(make_body, nats_server.url, rules, echo, other)
    body = await caller(make_body, nats_server.url)
    assert await say(body) == {"n": 1}  # no rule targets cbs.echo.say without the header
    with pytest.raises(BadRequest):
        await say(body, headers={"t": "acme"})
    assert await say(body, headers={"t": "other"}) == {"n": 2}
    with pytest.raises(Internal):
        await body.request("other", "say", {}, schema=SCHEMA)
    assert other.calls == 0
    cbs.chaos.set_rules(body, [{"name": "x", "fault": "abort", "side": "client", "cell": "echo"}])
    assert await say(body) == {"n": 3}  # the caller installs no cell echo: no match there


# -- client side ------------------------------------------------------------------------------


async def test_client_abort_sends_nothing(nats_server: Any, make_body: MakeBody) -> None:
    echo = Echo()
    await serve(make_body, nats_server.url, None, echo)
    rules = [{"fault": "abort", "side": "client", "error": "NotFound", "subject": "cbs.echo.>"}]
    body = await caller(make_body, nats_server.url, rules)
    with pytest.raises(NotFound, match="Injected fault"):
        await say(body)
    assert echo.calls == 0


async def test_client_drop_sends_and_times_out(nats_server: Any, make_body: MakeBody) -> None:
    echo = Echo()
    await serve(make_body, nats_server.url, None, echo)
    body = await caller(make_body, nats_server.url, [{"fault": "drop", "side": "client"}])
    with pytest.raises(Timeout, match="injected drop"):
        await say(body, timeout=0.3)
    assert echo.calls == 1


async def test_client_delay(nats_server: Any, make_body: MakeBody) -> None:
    echo = Echo()
    await serve(make_body, nats_server.url, None, echo)
    body = await caller(
        make_body, nats_server.url, [{"fault": "delay", "side": "client", "delay": 5}]
    )
    with pytest.raises(Timeout, match="injected delay"):
        await say(body, timeout=0.2)
    assert echo.calls == 0  # still "on the way" when the caller gave up
    cbs.chaos.set_rules(
        body, [{"name": "delay-1", "fault": "delay", "side": "client", "delay": 0.01}]
    )
    assert await say(body) == {"n": 1}


# -- no rules, configuration ------------------------------------------------------------------


async def test_no_rules_and_no_control_composes_nothing(make_body: MakeBody) -> None:
    body = make_body(chaos, config={"chaos_control": "off"})
    assert body.middleware.by_plugin("chaos") == []


async def test_no_rules_adds_no_frame() -> None:
    """Without rules the layer hands back the next handler's own awaitable."""
    echo = Echo()
    marker = object()

    def inner(request: Envelope, headers: Any) -> Any:
        return marker

    state = ChaosState()
    handler = server_layer(state)(Served(echo.cell, echo.cell.endpoints[0]), inner)
    request = Envelope.request("echo", "say", {}, schema=SCHEMA)
    assert handler(request, {}) is marker
    state.replace(parse_rules([{"fault": "abort"}]))
    with pytest.raises(Unavailable):
        await handler(request, {})


def test_subject_patterns() -> None:
    assert subject_matcher("cbs.greeter.*")("cbs.greeter.say_hello")
    assert not subject_matcher("cbs.greeter.*")("cbs.printer.write")
    assert subject_matcher("cbs.>")("cbs.a.b")
    assert not subject_matcher("cbs.*")("cbs.a.b")
    assert subject_matcher("cbs.*.write")("cbs.printer.write")
    for bad in ("cbs.>.x", "cbs..x", "cbs.gr*"):
        with pytest.raises(ValueError):
            subject_matcher(bad)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"fault": "explode"}], "fault must be one of"),
        ([{"fault": "delay"}], "needs delay"),
        ([{"fault": "abort", "error": "Nope"}], "error must be one of"),
        ([{"fault": "abort", "error": "Internal", "retry_after": 1}], "needs error Unavailable"),
        ([{"fault": "abort", "percent": 0}], "percent"),
        ([{"fault": "abort", "delay": 1}], "delay applies to delay rules only"),
        ([{"fault": "abort", "subject": "cbs.>.x"}], "'>' must be the last token"),
        ([{"fault": "abort", "name": "a"}, {"fault": "drop", "name": "a"}], "given twice"),
        ([{"fault": "abort", "colour": "red"}], "unknown key 'colour'"),
    ],
)
def test_bad_rules_are_one_line(rules: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_rules(rules)
    assert "\n" not in str(info.value)


def test_rules_file_yaml(tmp_path: Any) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: slow, fault: delay, delay: 0.1, subject: cbs.greeter.*}\n")
    (rule,) = read_rules(str(path))
    assert rule.to_dict() == {
        "name": "slow",
        "fault": "delay",
        "side": "server",
        "subject": "cbs.greeter.*",
        "delay": 0.1,
    }
    with pytest.raises(ConfigError, match="cannot read"):
        read_rules(str(tmp_path / "missing.yaml"))
