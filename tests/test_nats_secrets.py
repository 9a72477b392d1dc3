"""No secret leaves: every command run with a password, a token, an nkey seed
and a creds file in play (right ones and wrong ones), and all their output,
logs, metrics, status page and span files grepped for the secrets."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nkeys
import pytest
from cbs_process import CbsProcess, run_cbs

from cbs.nats.secure import SecureSetup, new_seed
from cbs.nats.server import NatsServer, free_port

PASSWORD = "pw-Leak-7c1e"
WRONG = "pw-Wrong-93ab"
TOKEN = "tok-Leak-55d0"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    folder = tmp_path_factory.mktemp("leak")
    seed = new_seed(nkeys.PREFIX_BYTE_USER)
    (folder / "user.nk").write_bytes(seed + b"\n")
    public = nkeys.from_seed(seed).public_key.decode()
    users = NatsServer(
        extra_config=f'authorization {{ users: [ {{user: alice, password: "{PASSWORD}"}},'
        f" {{nkey: {public}}} ] }}"
    ).start()
    token = NatsServer(jetstream=False, extra_config=f'authorization {{ token: "{TOKEN}" }}')
    token.start()
    setup = SecureSetup.create(folder / "secure")
    setup.add_caller("web", ["greeter"])
    secure = NatsServer(jetstream=False, extra_config=setup.server_config()).start()
    creds = setup.creds_path("web").read_text()
    secrets = [PASSWORD, WRONG, TOKEN, seed.decode()]
    secrets += [line for line in creds.splitlines() if line.startswith(("eyJ", "SU"))]
    try:
        yield {
            "folder": folder,
            "users": users,
            "token": token,
            "secure": secure,
            "setup": setup,
            "secrets": secrets,
        }
    finally:
        for server in (users, token, secure):
            server.stop()


def _assert_clean(texts: list[str], secrets: object) -> None:
    assert isinstance(secrets, list)
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret leaked into: {text[:300]!r}"


def test_no_command_prints_a_secret(world: dict[str, object]) -> None:
    users, token, secure = world["users"], world["token"], world["secure"]
    assert isinstance(users, NatsServer) and isinstance(token, NatsServer)
    assert isinstance(secure, NatsServer)
    setup = world["setup"]
    assert isinstance(setup, SecureSetup)
    folder = world["folder"]
    assert isinstance(folder, Path)
    host = f"127.0.0.1:{users.port}"
    modes = {
        "password in the URL": _env(NATS_URL=f"nats://alice:{PASSWORD}@{host}"),
        "wrong password in the URL": _env(NATS_URL=f"nats://alice:{WRONG}@{host}"),
        "password in the env": _env(NATS_URL=users.url, NATS_USER="alice", NATS_PASSWORD=PASSWORD),
        "nkey": _env(NATS_URL=users.url, NATS_NKEY=str(folder / "user.nk")),
        "token": _env(NATS_URL=token.url, NATS_TOKEN=TOKEN),
        "wrong token in the URL": _env(NATS_URL=f"nats://{WRONG}@127.0.0.1:{token.port}"),
        "creds": _env(
            NATS_URL=secure.url,
            NATS_CREDS=str(setup.creds_path("web")),
            NATS_CA=str(setup.ca.cert),
        ),
    }
    texts: list[str] = []
    commands = [
        ("call", "greeter.say_hello", '{"name": "Ada"}', "--timeout", "0.5"),
        ("cells",),
        ("plugins",),
        ("send", "greeter.say_hello", '{"name": "Ada"}'),
        ("dlq", "list"),
    ]
    for mode, env in modes.items():
        for command in commands if mode in ("password in the URL", "creds") else commands[:2]:
            done = run_cbs(*command, "--nats-connect-timeout", "2", env=env, timeout=30)
            texts += [done.stdout, done.stderr]
            if mode.startswith("wrong"):
                assert done.returncode != 0
                assert done.stderr.count("\n") == 1, (mode, command, done.stderr)
                assert "Authorization Violation" in done.stderr
        # on the command line, too (the docs steer to env and files)
    flags = ("--nats-url", users.url, "--nats-user", "alice", "--nats-password", WRONG)
    done = run_cbs("call", "greeter.say_hello", "{}", *flags, env=_env(), timeout=30)
    assert done.returncode != 0 and "Authorization Violation" in done.stderr
    texts += [done.stdout, done.stderr]
    _assert_clean(texts, world["secrets"])


def test_a_running_body_shows_no_secret(world: dict[str, object], tmp_path: Path) -> None:
    users = world["users"]
    assert isinstance(users, NatsServer)
    port = free_port()
    spans = tmp_path / "spans.jsonl"
    env = _env(NATS_URL=f"nats://alice:{PASSWORD}@127.0.0.1:{users.port}")
    body = CbsProcess(
        "--debug", "run", "--metrics-port", str(port), "--tracing-file", str(spans), env=env
    )
    try:
        body.wait_for(r"serving cells")
        called = run_cbs("call", "greeter.say_hello", '{"name": "Ada"}', env=env, timeout=30)
        assert called.returncode == 0, called.stderr
        pages = [
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read().decode()
            for path in ("/metrics", "/")
        ]
    finally:
        _, out, err = body.stop()
    server = CbsProcess("server", "--port", str(free_port()), env=env)
    try:
        server.wait_for("ready", stdout=True)
    finally:
        _, server_out, server_err = server.stop()
    texts = [*pages, out, err, called.stdout, called.stderr, server_out, server_err]
    texts.append(spans.read_text())
    assert "127.0.0.1" in "".join(texts)  # the URL itself is there, redacted
    _assert_clean(texts, world["secrets"])
