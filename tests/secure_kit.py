"""Helpers of the tests that run a nats-server in operator mode with TLS from
a :class:`SecureSetup`: the server, and connections as one of its identities."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cbs.nats.auth import NatsAuth
from cbs.nats.secure import SecureSetup
from cbs.nats.server import NatsServer
from cbs.nats.transport import NatsBus

__all__ = ["auth", "bus_as", "secure_server"]


@contextmanager
def secure_server(setup: SecureSetup) -> Iterator[NatsServer]:
    """A nats-server with the setup's operator, accounts and TLS; stopped by pid."""
    server = NatsServer(extra_config=setup.server_config()).start()
    try:
        yield server
    finally:
        server.stop()


def auth(setup: SecureSetup, name: str) -> NatsAuth:
    """The credentials of identity ``name``, trusting the setup's CA."""
    return NatsAuth(creds=str(setup.creds_path(name)), tls_ca=str(setup.ca.cert))


async def bus_as(setup: SecureSetup, url: str, name: str) -> NatsBus:
    """A started NATS bus connected as identity ``name``."""
    bus = NatsBus(url, auth=auth(setup, name))
    await bus.start()
    return bus
