"""The secure setup against a real nats-server in operator mode with TLS:
creds/JWT, least-privilege identities, account isolation and the forged-reply
attack, each with what it refuses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from secure_kit import auth, bus_as, secure_server

from cbs.contracts import NotFound, Outcome, Unavailable
from cbs.nats.auth import NatsAuth
from cbs.nats.secure import SecureSetup
from cbs.nats.server import NatsServer
from cbs.nats.transport import NatsBus

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> SecureSetup:
    setup = SecureSetup.create(tmp_path_factory.mktemp("secure") / "dir")
    setup.add_cell("greeter")
    setup.add_cell("printer")
    setup.add_caller("web", ["greeter.say_hello"])
    setup.add_caller("mallory", ["greeter.say_hello"])
    setup.add_account("TENANT")
    setup.share("cbs.greeter.say_hello", owner="CBS", to="TENANT")
    setup.add_caller("outsider", ["greeter"], account="TENANT")
    return setup


@pytest.fixture(scope="module")
def server(setup: SecureSetup) -> Iterator[NatsServer]:
    with secure_server(setup) as server:
        yield server


class Probe:
    """A plain nats-py client as identity ``name``, recording the server's
    permission errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Any = None

    async def connect(self, setup: SecureSetup, server: NatsServer, name: str) -> Probe:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        options = auth(setup, name).connect_options()
        self.nc = await nats.connect(server.url, error_cb=on_error, **options)
        return self

    async def denied(self, what: str, seconds: float = 3.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(
                "permissions violation" in e.lower() and what.lower() in e.lower()
                for e in self.errors
            ):
                return True
            await asyncio.sleep(0.02)
        return False


@pytest.fixture
async def probes() -> AsyncIterator[list[Probe]]:
    made: list[Probe] = []
    yield made
    for probe in made:
        if probe.nc is not None:
            await probe.nc.close()


async def probe(probes: list[Probe], setup: SecureSetup, server: NatsServer, name: str) -> Probe:
    made = await Probe().connect(setup, server, name)
    probes.append(made)
    return made


def answer(text: bytes) -> Any:
    async def handler(data: bytes, headers: Mapping[str, str] | None) -> Outcome:
        return Outcome(text + data)

    return handler


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def greeter(setup: SecureSetup, server: NatsServer) -> AsyncIterator[NatsBus]:
    bus = await bus_as(setup, server.url, "greeter")
    await bus.serve("cbs.greeter.say_hello", "greeter", answer(b"hello "), max_concurrency=8)
    await bus.serve("cbs.greeter.secret", "greeter", answer(b"secret "), max_concurrency=8)
    yield bus
    await bus.close()


async def test_creds_connect_and_a_foreign_jwt_is_refused(
    setup: SecureSetup, server: NatsServer, tmp_path: Path
) -> None:
    bus = await bus_as(setup, server.url, "web")
    await bus.close()
    stranger = SecureSetup.create(tmp_path / "other")  # another operator's admin
    bad = NatsAuth(creds=str(stranger.creds_path("admin")), tls_ca=str(setup.ca.cert))
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"Authorization Violation$"):
        await NatsBus(server.url, auth=bad).start()
    assert time.monotonic() - started < 4
    no_creds = NatsAuth(tls_ca=str(setup.ca.cert))
    with pytest.raises(Unavailable, match=r"Authorization Violation$"):
        await NatsBus(server.url, auth=no_creds).start()


async def test_files_are_private(setup: SecureSetup) -> None:
    for path in [*setup.folder.glob("*.creds"), *setup.folder.glob("*.nk"), setup.ca.key]:
        assert path.stat().st_mode & 0o777 == 0o600, path
    rows = {r["name"]: r["kind"] for r in setup.identities()}
    assert rows == {
        "admin": "admin",
        "greeter": "cell",
        "printer": "cell",
        "web": "caller",
        "mallory": "caller",
        "outsider": "caller",
    }


async def test_a_caller_uses_its_private_inbox(
    setup: SecureSetup, server: NatsServer, greeter: NatsBus
) -> None:
    web = await bus_as(setup, server.url, "web")
    try:
        assert await web.request("cbs.greeter.say_hello", b"Ada", timeout=3) == b"hello Ada"
        assert web.client.new_inbox().startswith("_INBOX_web.")
    finally:
        await web.close()


async def test_a_caller_cannot_listen_to_requests_or_other_inboxes(
    setup: SecureSetup, server: NatsServer, probes: list[Probe]
) -> None:
    mallory = await probe(probes, setup, server, "mallory")
    await mallory.nc.subscribe("cbs.>")
    assert await mallory.denied('"cbs.>"')
    await mallory.nc.subscribe("_INBOX_web.>")
    assert await mallory.denied('"_INBOX_web.>"'), mallory.errors
    await mallory.nc.publish("_INBOX_web.x.1", b"forged")
    assert await mallory.denied('"_INBOX_web.x.1"')


async def test_a_caller_cannot_purge_dead_letters(
    setup: SecureSetup, server: NatsServer, probes: list[Probe]
) -> None:
    admin = await probe(probes, setup, server, "admin")
    js = admin.nc.jetstream()
    await js.add_stream(name="CBS_DLQ_greeter", subjects=["cbsdlq.greeter.>"])
    await js.publish("cbsdlq.greeter.say_hello", b"dead letter")
    web = await probe(probes, setup, server, "web")
    with pytest.raises(nats.errors.Error):
        await web.nc.jetstream(timeout=1).purge_stream("CBS_DLQ_greeter")
    assert await web.denied("$JS.API.STREAM.PURGE.CBS_DLQ_greeter")
    assert (await js.stream_info("CBS_DLQ_greeter")).state.messages == 1
    await web.nc.publish("$CBS.CHAOS.ALL", b"{}")
    assert await web.denied("$CBS.CHAOS.ALL")
    await web.nc.publish("_cbs.breaker.states", b"{}")
    assert await web.denied("_cbs.breaker.states")
    await js.delete_stream("CBS_DLQ_greeter")


async def test_a_cell_serves_only_its_own_service(
    setup: SecureSetup, server: NatsServer, probes: list[Probe]
) -> None:
    printer = await probe(probes, setup, server, "printer")
    await printer.nc.subscribe("cbs.greeter.say_hello", queue="greeter")
    assert await printer.denied('"cbs.greeter.say_hello"')
    await printer.nc.subscribe("cbs.printer.write")  # its own, but outside its queue group
    assert await printer.denied('"cbs.printer.write"')
    await printer.nc.publish("cbs.greeter.say_hello", b"x")  # only responses
    assert await printer.denied('"cbs.greeter.say_hello"')


async def test_forged_replies_fail_by_construction(
    setup: SecureSetup, server: NatsServer, greeter: NatsBus, probes: list[Probe]
) -> None:
    """The attack of the open bus: listen on cbs.> and answer first. Here the
    attacker's subscription is refused, so it never sees an inbox, and
    guessing one is refused too: every reply is the cell's."""
    mallory = await probe(probes, setup, server, "mallory")
    seen: list[Any] = []

    async def forge(msg: Any) -> None:
        seen.append(msg)
        await mallory.nc.publish(msg.reply, b"forged")

    await mallory.nc.subscribe("cbs.>", cb=forge)
    await mallory.nc.subscribe("cbs.greeter.say_hello", queue="greeter", cb=forge)
    web = await bus_as(setup, server.url, "web")
    try:
        replies = [
            await web.request("cbs.greeter.say_hello", b"%d" % i, timeout=3) for i in range(40)
        ]
        for i in range(40):
            await mallory.nc.publish(f"_INBOX_web.guess.{i}", b"forged")
    finally:
        await web.close()
    assert replies == [b"hello %d" % i for i in range(40)]
    assert seen == [] and web.wrong_replies == 0
    assert await mallory.denied('"cbs.>"') and await mallory.denied("_INBOX_web.guess")


async def test_accounts_are_isolated_but_for_exports(
    setup: SecureSetup, server: NatsServer, greeter: NatsBus, probes: list[Probe]
) -> None:
    outsider = await bus_as(setup, server.url, "outsider")
    try:
        # exported and imported: works across accounts
        assert await outsider.request("cbs.greeter.say_hello", b"B", timeout=3) == b"hello B"
        # served in account CBS but not exported: nobody there
        with pytest.raises(NotFound):
            await outsider.request("cbs.greeter.secret", b"B", timeout=3)
    finally:
        await outsider.close()
