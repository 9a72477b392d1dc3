"""The embedded nats-server in secure mode (``nats_secure``): TLS on loopback
with a generated CA, operator-mode identities, the body connecting as admin;
nobody else on the machine gets in without the body's creds."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import nats
import pytest
from cbs_process import run_cbs
from test_chaos_faults import SCHEMA, Echo

from cbs.contracts import Unavailable
from cbs.kernel import Body, TransportState
from cbs.nats import NatsConnection
from cbs.nats import plugin as nats_plugin
from cbs.nats.auth import NatsAuth
from cbs.nats.secure import SecureNatsServer
from cbs.nats.transport import NatsBus
from cbs.testing import CellsPlugin

MakeBody = Callable[..., Body]
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}


def test_cbs_demo_in_secure_mode_and_without() -> None:
    secure = run_cbs("demo", "--nats-secure", "--name", "Ada", env=ENV)
    assert (secure.returncode, secure.stdout) == (0, "Hello Ada!\n"), secure.stderr
    assert "tls://127.0.0.1:" in secure.stderr  # the embedded server's line
    plain = run_cbs("demo", "--name", "Ada", env=ENV)
    assert (plain.returncode, plain.stdout) == (0, "Hello Ada!\n"), plain.stderr
    assert "nats://127.0.0.1:" in plain.stderr
    by_env = run_cbs("demo", "--name", "Ada", env={**ENV, "CBS_NATS_SECURE": "1"})
    assert by_env.stdout == "Hello Ada!\n" and "tls://" in by_env.stderr


def test_secure_mode_is_for_the_embedded_server_only() -> None:
    done = run_cbs(
        "demo", "--nats-secure", "--nats-url", "nats://127.0.0.1:4222", "--name", "A", env=ENV
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "nats_secure is for the embedded" in done.stderr


async def test_nobody_else_gets_into_the_secure_embedded_server(make_body: MakeBody) -> None:
    echo = Echo()
    body = make_body(nats_plugin, CellsPlugin(echo.cell), config={"nats_secure": True})
    await body.start()
    assert await body.request("echo", "say", {}, schema=SCHEMA, timeout=3) == {"n": 1}
    url = body.capabilities.require(NatsConnection, needed_by="this test").url
    assert url.startswith("tls://127.0.0.1:")
    bus = body.capabilities.get(TransportState)
    assert isinstance(bus, NatsBus) and isinstance(bus.server, SecureNatsServer)
    setup = bus.server.setup
    assert setup is not None and bus.server.workdir is not None
    assert (bus.server.workdir.stat().st_mode & 0o777) == 0o700
    assert setup.creds_path("admin").stat().st_mode & 0o777 == 0o600

    # no CA (the private one does not verify), no creds, and another
    # deployment's admin: all refused at once
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(
            url.replace("tls://", "nats://"), allow_reconnect=False, connect_timeout=2
        )
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"Authorization Violation$"):
        await NatsBus(url, auth=NatsAuth(tls_ca=str(setup.ca.cert))).start()
    other = SecureNatsServer()
    other.start()
    try:
        assert other.setup is not None
        stranger = NatsAuth(creds=str(other.setup.creds_path("admin")), tls_ca=str(setup.ca.cert))
        with pytest.raises(Unavailable, match=r"Authorization Violation$"):
            await NatsBus(url, auth=stranger).start()
    finally:
        other.stop()
    assert time.monotonic() - started < 4

    # the body's own admin creds work (the setup is the body's)
    admin = NatsBus(url, auth=bus.server.client_auth())
    await admin.start()
    await admin.close()

    workdir = bus.server.workdir
    await body.stop()
    assert not workdir.exists()  # keys and creds go with the server


async def test_plain_embedded_server_is_unchanged(make_body: MakeBody) -> None:
    body = make_body(nats_plugin, CellsPlugin(Echo().cell))
    await body.start()
    url = body.capabilities.require(NatsConnection, needed_by="this test").url
    assert url.startswith("nats://127.0.0.1:")
    nc: Any = await nats.connect(url)  # open: any local client gets in
    await nc.close()
