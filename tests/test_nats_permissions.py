"""NATS permissions as a body sees them, against a real nats-server in
operator mode with TLS: a refused request fails at once, accounts made and
shared with ``cbs auth``, and optional responders a non-admin identity may
not subscribe to are skipped instead of refused."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cbs_process import run_cbs
from secure_kit import auth, bus_as, secure_server
from test_chaos_faults import Echo

import cbs.chaos
from cbs.breaker import plugin as breaker
from cbs.breaker.report import gather
from cbs.chaos import plugin as chaos
from cbs.chaos.control import send
from cbs.contracts import NotFound, Outcome, Unavailable
from cbs.kernel import Body, TransportState
from cbs.nats import plugin as nats_plugin
from cbs.nats.auth import NatsAuth, Permissions
from cbs.nats.secure import SecureSetup
from cbs.nats.server import NatsServer
from cbs.nats.transport import NatsBus
from cbs.testing import CellsPlugin

pytestmark = pytest.mark.asyncio(loop_scope="module")
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> SecureSetup:
    setup = SecureSetup.create(tmp_path_factory.mktemp("perm") / "dir")
    setup.add_cell("greeter")
    setup.add_cell("echo")
    setup.add_caller("web", ["greeter.say_hello"])
    return setup


@pytest.fixture(scope="module")
def server(setup: SecureSetup) -> Iterator[NatsServer]:
    with secure_server(setup) as server:
        yield server


async def answer(data: bytes, headers: Mapping[str, str] | None) -> Outcome:
    return Outcome(b"hello " + data)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def greeter(setup: SecureSetup, server: NatsServer) -> AsyncIterator[NatsBus]:
    bus = await bus_as(setup, server.url, "greeter")
    await bus.serve("cbs.greeter.say_hello", "greeter", answer, max_concurrency=8)
    await bus.serve("cbs.greeter.secret", "greeter", answer, max_concurrency=8)
    yield bus
    await bus.close()


# -- a refused publish fails the request at once ----------------------------------------------


async def test_a_request_the_caller_may_not_publish_fails_at_once(
    setup: SecureSetup, server: NatsServer, greeter: NatsBus
) -> None:
    web = await bus_as(setup, server.url, "web")
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            await web.request("cbs.greeter.secret", b"x", timeout=20)
        assert time.monotonic() - started < 5  # not the 20 s timeout
        assert refused.value.message == "Permissions Violation for Publish to cbs.greeter.secret"
        # the allowed subject is not affected, before or after
        assert await web.request("cbs.greeter.say_hello", b"Ada", timeout=3) == b"hello Ada"
    finally:
        await web.close()


async def test_cbs_call_refused_is_one_line(
    setup: SecureSetup, server: NatsServer, greeter: NatsBus
) -> None:
    env = {
        **ENV,
        "NATS_URL": server.url,
        "NATS_CREDS": str(setup.creds_path("web")),
        "NATS_CA": str(setup.ca.cert),
    }
    started = time.monotonic()
    done = await asyncio.to_thread(
        run_cbs, "call", "greeter.secret", "{}", "--timeout", "20", env=env
    )
    assert time.monotonic() - started < 15
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Permissions Violation for Publish to cbs.greeter.secret" in done.stderr


# -- what an identity may subscribe to --------------------------------------------------------


async def test_subscribe_permissions_from_the_creds(setup: SecureSetup) -> None:
    cell = auth(setup, "greeter").subscribe_permissions()
    assert cell.allows("cbs.greeter.say_hello", "greeter")
    assert not cell.allows("cbs.greeter.say_hello", "other")  # its queue group only
    assert not cell.allows("cbs.greeter.say_hello")
    assert not cell.allows("cbs.printer.write", "printer")
    assert cell.allows("$SRV.PING") and cell.allows("$SRV.INFO.greeter")
    assert not cell.allows("$CBS.CHAOS.ALL", "chaos_1")
    assert not cell.allows("_cbs.breaker.states", "breaker_1")
    web = auth(setup, "web").subscribe_permissions()
    assert web.allows("_INBOX_web.abc.*") and not web.allows("_INBOX_other.abc.*")
    assert not web.allows("cbs.>") and not web.allows(">")
    admin = auth(setup, "admin").subscribe_permissions()
    assert admin == Permissions() and admin.allows("$CBS.CHAOS.ALL", "chaos_1")
    assert NatsAuth().subscribe_permissions().allows("anything")
    denied = Permissions(deny=("$CBS.>",))
    assert not denied.allows("$CBS.CHAOS.ALL") and denied.allows("cbs.a.b")


async def test_non_admin_bodies_skip_admin_only_responders(
    setup: SecureSetup,
    server: NatsServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="cbs")
    bodies: list[Body] = []  # started and stopped on this module's event loop

    def body_as(name: str, *cells: Echo) -> Body:
        config = {
            "nats_url": server.url,
            "nats_creds": str(setup.creds_path(name)),
            "tls_ca": str(setup.ca.cert),
        }
        plugins = (nats_plugin, chaos, breaker, CellsPlugin(*(e.cell for e in cells)))
        bodies.append(Body(config, plugins=plugins, autoload=False, environ={}))
        return bodies[-1]

    try:
        await responders_skipped(body_as("echo", Echo()), body_as("admin"), caplog)
    finally:
        for body in reversed(bodies):
            await body.stop()


async def responders_skipped(cell: Body, admin: Body, caplog: pytest.LogCaptureFixture) -> None:
    await cell.start()
    await admin.start(serve=False)
    assert admin.bus is not None

    transport = cell.capabilities.get(TransportState)
    assert transport is not None and not transport.may_subscribe("$CBS.CHAOS.ALL")
    assert cbs.chaos.instance(cell) is None  # no control responder
    assert cbs.chaos.instance(admin) is not None
    messages = [r.getMessage() for r in caplog.records]
    assert "chaos: not answering $CBS.CHAOS.*: this body's identity may not subscribe" in messages
    assert "breaker: not answering _cbs.breaker.states: this body's identity may not subscribe" in (
        messages
    )

    # the admin's responders answer; the cell's are not there to answer
    replies = await send(admin.bus, {"op": "list"}, expect=2, wait=1.0)
    assert [r["instance"] for r in replies] == [cbs.chaos.instance(admin)]
    states = await gather(admin.bus, wait=1.0)
    assert len(states) == 1
    # and nothing was refused: the cell never asked
    assert not [m for m in messages if "permissions violation" in m.lower()]
    assert not [
        r.getMessage() for r in caplog.records if "permissions violation" in r.getMessage().lower()
    ]
    # the cell serves as before
    assert await admin.request("echo", "say", {}, schema="echo/v1/Any", timeout=3) == {"n": 1}


# -- accounts on the command line ------------------------------------------------------------


async def auth_cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cbs, "auth", *args, "--dir", str(folder), env=ENV)


async def test_accounts_and_shares_with_cbs_auth(tmp_path: Path) -> None:
    folder = tmp_path / "secure"
    SecureSetup.create(folder)  # as the first cbs server --secure does
    for args in (
        ("add-account", "A"),
        ("add-account", "B"),
        ("add-cell", "greeter", "--account", "A"),
        ("add-caller", "outsider", "--account", "B", "--allow", "greeter"),
    ):
        done = await auth_cli(folder, *args)
        assert done.returncode == 0, done.stderr
    refused = await auth_cli(folder, "add-caller", "x", "--account", "NOPE", "--allow", "greeter")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "no account 'NOPE'" in refused.stderr
    refused = await auth_cli(folder, "share", "--from", "A", "--to", "NOPE", "greeter")
    assert refused.returncode == 2 and "no account 'NOPE'" in refused.stderr
    refused = await auth_cli(folder, "share", "greeter")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "--from" in refused.stderr

    setup = SecureSetup(folder)

    async def outsider_calls() -> tuple[Any, Any]:
        server = NatsServer(extra_config=setup.server_config()).start()
        try:
            cell = await bus_as(setup, server.url, "greeter")
            await cell.serve("cbs.greeter.say_hello", "greeter", answer, max_concurrency=4)
            await cell.serve("cbs.greeter.secret", "greeter", answer, max_concurrency=4)
            outsider = await bus_as(setup, server.url, "outsider")
            results = []
            for subject in ("cbs.greeter.say_hello", "cbs.greeter.secret"):
                try:
                    results.append(await outsider.request(subject, b"B", timeout=3))
                except NotFound as exc:
                    results.append(type(exc))
            await outsider.close()
            await cell.close()
            return results[0], results[1]
        finally:
            server.stop()

    # a cell in account A is invisible to B
    assert await outsider_calls() == (NotFound, NotFound)

    done = await auth_cli(folder, "share", "--from", "A", "--to", "B", "greeter.say_hello")
    assert done.returncode == 0, done.stderr
    assert "restart cbs server --secure" in done.stdout
    listing = (await auth_cli(folder, "ls")).stdout
    rows = {line.split()[0]: line.split()[1:] for line in listing.splitlines() if line.strip()}
    assert rows["A"] == ["cbs.greeter.say_hello", "-"]
    assert rows["B"] == ["-", "cbs.greeter.say_hello<A"]
    assert rows["outsider"][:2] == ["caller", "B"]
    assert "CBS" in rows  # the default account is listed too

    # then only the shared subject crosses
    assert await outsider_calls() == (b"hello B", NotFound)
