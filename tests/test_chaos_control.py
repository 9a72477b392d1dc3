"""Switching cbs-chaos rules at runtime over $CBS.CHAOS.* on a real
nats-server: from code (cbs.chaos.control.send) and with `cbs chaos` run as
a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from cbs_process import CLI
from test_chaos_faults import SCHEMA, Echo, caller, say, serve

import cbs.chaos
from cbs.chaos.control import send
from cbs.contracts import Internal, Unavailable
from cbs.kernel import Body

MakeBody = Callable[..., Body]
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "-q", *args], env=ENV, capture_output=True, text=True, timeout=60, check=False
    )


async def test_set_list_clear_over_the_control_subject(
    nats_server: Any, make_body: MakeBody
) -> None:
    echo = Echo()
    one = await serve(make_body, nats_server.url, None, echo)
    two = await serve(make_body, nats_server.url, None, Echo("other"))
    body = await caller(make_body, nats_server.url)
    assert body.bus is not None
    assert await say(body) == {"n": 1}

    rule = {"name": "flaky", "fault": "abort", "error": "Internal", "subject": "cbs.echo.*"}
    replies = await send(body.bus, {"op": "set", "rules": [rule]}, expect=3)
    mine = cbs.chaos.instance(body)
    assert sorted(r["instance"] for r in replies) == sorted(
        [cbs.chaos.instance(one), cbs.chaos.instance(two), mine]
    )
    assert all(r["rules"][0]["name"] == "flaky" for r in replies)
    with pytest.raises(Internal):
        await say(body)
    assert echo.calls == 1

    # one body only, by its id; the others keep their rules
    only = cbs.chaos.instance(one)
    assert only is not None
    (reply,) = await send(body.bus, {"op": "clear", "names": ["flaky"]}, instance=only)
    assert reply["instance"] == only and reply["rules"] == [] and reply["cells"] == ["echo"]
    assert await say(body) == {"n": 2}
    assert [r.name for r in cbs.chaos.rules(two)] == ["flaky"]

    # bad rules are refused with one line and change nothing
    bad = {"op": "set", "rules": [{"fault": "abort", "error": "Nope"}]}
    replies = await send(body.bus, bad, expect=3)
    assert all("error must be one of" in r["error"] for r in replies)
    assert [r.name for r in cbs.chaos.rules(two)] == ["flaky"]

    await send(body.bus, {"op": "clear"}, expect=3)
    assert cbs.chaos.rules(two) == []


async def test_cbs_chaos_command(nats_server: Any, make_body: MakeBody) -> None:
    echo = Echo()
    served = await serve(make_body, nats_server.url, None, echo)
    body = await caller(make_body, nats_server.url)
    url = nats_server.url
    ident = cbs.chaos.instance(served)

    rule = "{name: busy, fault: abort, error: Unavailable, retry_after: 1, subject: cbs.echo.*}"
    done = await asyncio.to_thread(cli, "chaos", "set", rule, "--nats-url", url, "--expect", "2")
    assert done.returncode == 0, done.stderr
    assert f"{ident}  pid={os.getpid()}  cells=echo  rules: busy(server abort cbs.echo.*)" in (
        done.stdout
    )
    with pytest.raises(Unavailable) as info:
        await say(body)
    assert info.value.details == {"retry_after": 1.0}

    listed = await asyncio.to_thread(
        cli, "chaos", "list", "--json", "--nats-url", url, "--expect", "2"
    )
    assert listed.returncode == 0, listed.stderr
    replies = json.loads(listed.stdout)
    assert {r["instance"] for r in replies} == {ident, cbs.chaos.instance(body)}
    assert "rules set" not in done.stderr  # the command's own body does not listen
    assert all(r["rules"][0]["retry_after"] == 1.0 for r in replies)

    cleared = await asyncio.to_thread(
        cli, "chaos", "clear", "busy", "--nats-url", url, "--instance", str(ident)
    )
    assert cleared.returncode == 0, cleared.stderr
    assert await say(body) == {"n": 1}

    bad = await asyncio.to_thread(
        cli, "chaos", "set", "{fault: abort, percent: 200}", "--nats-url", url
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "percent must be a number" in bad.stderr
    assert await body.request("echo", "say", {}, schema=SCHEMA) == {"n": 2}


def test_cbs_chaos_with_nobody_listening(nats_server: Any) -> None:
    done = cli("chaos", "list", "--nats-url", nats_server.url, "--wait", "0.3")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "cbs: error: no body answered on $CBS.CHAOS.ALL within 0.3 s"
        " (is cbs-chaos installed where the cells run?)"
    )
