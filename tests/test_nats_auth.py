"""Every connection mode against a real nats-server, each with its refusal:
user/password, token, nkey, TLS with server verification, mutual TLS, the nats
CLI's context files and several seed URLs. Refusals are one line at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import nkeys
import pytest

from cbs.contracts import Unavailable
from cbs.nats.auth import NatsAuth
from cbs.nats.certs import CertFiles, make_ca, make_cert
from cbs.nats.secure import new_seed
from cbs.nats.server import NatsServer, free_port
from cbs.nats.transport import NatsBus, masked_url


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertFiles]:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder)
    other = make_ca(folder, "Another CA", "other")
    return {
        "ca": ca,
        "server": make_cert(folder, "server", ca),
        "client": make_cert(folder, "client", ca),
        "stranger": make_cert(folder, "stranger", other),
        "other": other,
    }


def _server(config: str) -> Iterator[NatsServer]:
    server = NatsServer(jetstream=False, extra_config=config).start()
    try:
        yield server
    finally:
        server.stop()


async def connects(url: str, auth: NatsAuth, timeout: float = 5.0) -> None:
    """Connect, round-trip once through the server, close."""
    bus = NatsBus(url, auth=auth, connect_timeout=timeout)
    await bus.start()
    try:
        await bus.client.flush(2)
    finally:
        await bus.close()


async def refused(url: str, auth: NatsAuth) -> str:
    """The one-line reason a connection is refused; fails if it took the timeout."""
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await connects(url, auth, timeout=5.0)
    assert time.monotonic() - started < 4.0, "a refusal must not wait for the timeout"
    message = str(caught.value)
    assert "\n" not in message
    return message


async def test_user_and_password() -> None:
    for server in _server('authorization { user: alice, password: "pw-Secret-1" }'):
        await connects(server.url, NatsAuth(user="alice", password="pw-Secret-1"))
        reason = await refused(server.url, NatsAuth(user="alice", password="wrong"))
        assert reason.endswith("Authorization Violation")
        assert "wrong" not in reason
        await refused(server.url, NatsAuth())


async def test_password_in_the_url_is_never_shown() -> None:
    for server in _server('authorization { user: alice, password: "pw-Secret-1" }'):
        url = f"nats://alice:pw-Secret-2@127.0.0.1:{server.port}"
        reason = await refused(url, NatsAuth())
        assert "pw-Secret-2" not in reason and "alice" not in reason
        assert masked_url(url) == f"nats://127.0.0.1:{server.port}"
        good = f"nats://alice:pw-Secret-1@127.0.0.1:{server.port}"
        await connects(good, NatsAuth())


async def test_token() -> None:
    for server in _server('authorization { token: "tok-Secret-1" }'):
        await connects(server.url, NatsAuth(token="tok-Secret-1"))
        reason = await refused(server.url, NatsAuth(token="tok-wrong"))
        assert reason.endswith("Authorization Violation")


async def test_nkey(tmp_path: Path) -> None:
    seed = new_seed(nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    good = tmp_path / "user.nk"
    good.write_bytes(seed + b"\n")
    bad = tmp_path / "other.nk"
    bad.write_bytes(new_seed(nkeys.PREFIX_BYTE_USER) + b"\n")
    for server in _server(f"authorization {{ users: [ {{ nkey: {public} }} ] }}"):
        await connects(server.url, NatsAuth(nkey=str(good)))
        reason = await refused(server.url, NatsAuth(nkey=str(bad)))
        assert reason.endswith("Authorization Violation")


async def test_tls_verifies_the_server(pki: dict[str, CertFiles]) -> None:
    server_cert = pki["server"]
    config = f'tls {{ cert_file: "{server_cert.cert}", key_file: "{server_cert.key}" }}'
    for server in _server(config):
        await connects(server.url, NatsAuth(tls_ca=str(pki["ca"].cert)))
        await connects(
            server.url.replace("nats://", "tls://"), NatsAuth(tls_ca=str(pki["ca"].cert))
        )
        # signed by another CA, or by nobody the system trusts
        for auth in (NatsAuth(tls_ca=str(pki["other"].cert)), NatsAuth()):
            assert (await refused(server.url, auth)).endswith("TLS: certificate verify failed")


async def test_mutual_tls(pki: dict[str, CertFiles]) -> None:
    cert, ca = pki["server"], pki["ca"]
    config = (
        f'tls {{ cert_file: "{cert.cert}", key_file: "{cert.key}",'
        f' ca_file: "{ca.cert}", verify: true }}'
    )
    for server in _server(config):
        client = pki["client"]
        await connects(
            server.url,
            NatsAuth(tls_ca=str(ca.cert), tls_cert=str(client.cert), tls_key=str(client.key)),
        )
        without = await refused(server.url, NatsAuth(tls_ca=str(ca.cert)))
        assert "TLS:" in without and "client certificate" in without
        stranger = pki["stranger"]
        wrong = await refused(
            server.url,
            NatsAuth(tls_ca=str(ca.cert), tls_cert=str(stranger.cert), tls_key=str(stranger.key)),
        )
        assert "TLS:" in wrong


async def test_tls_handshake_first(pki: dict[str, CertFiles]) -> None:
    cert = pki["server"]
    config = f'tls {{ cert_file: "{cert.cert}", key_file: "{cert.key}", handshake_first: true }}'
    server = NatsServer(jetstream=False, extra_config=config)
    server._answers = lambda: True  # type: ignore[method-assign]  # no plain INFO to read
    server.start()
    try:
        await connects(server.url, NatsAuth(tls_ca=str(pki["ca"].cert), tls_first=True), timeout=8)
    finally:
        server.stop()


async def test_nats_context_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for server in _server('authorization { user: bob, password: "ctx-Secret-1" }'):
        folder = tmp_path / "nats" / "context"
        folder.mkdir(parents=True)
        context = {"url": server.url, "user": "bob", "password": "ctx-Secret-1"}
        (folder / "dev.json").write_text(json.dumps(context))
        (folder / "bad.json").write_text(json.dumps({**context, "password": "nope"}))
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
        auth = NatsAuth.from_config({"nats_context": "dev"}.get)
        await connects("", auth)
        bad = NatsAuth.from_config({"nats_context": "bad"}.get)
        assert (await refused("", bad)).endswith("Authorization Violation")
        # an explicit option wins over the context's value
        fixed = NatsAuth.from_config({"nats_context": "bad", "nats_password": "ctx-Secret-1"}.get)
        await connects("", fixed)


async def test_several_seed_urls() -> None:
    for server in _server('authorization { token: "tok-Seeds" }'):
        down = f"nats://127.0.0.1:{free_port()}"
        await connects(f"{down},{server.url}", NatsAuth(token="tok-Seeds"))
