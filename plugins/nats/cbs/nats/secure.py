"""A secure deployment in one folder: an operator, accounts and users (nkeys
and JWTs, NATS's decentralized auth with a memory resolver), a private CA and
the server's TLS certificate, and one creds file per identity (0600).

Keys come from ``nkeys`` (ed25519 via PyNaCl); the JWTs are the NATS JWT v2
claims, encoded here (base64url JSON, signed by the issuer's nkey) and
verified by nats-server itself. Identities (docs/security.md):

* **cell** ``NAME`` serving services ``S``: subscribe ``cbs.S.>`` in queue
  group ``S`` only, ``$SRV.>`` (discovery) and its private inbox; publish
  only responses (``allow_responses``), plus requests it is allowed to make.
* **caller** ``NAME``: publish requests to the services and verbs it is
  allowed, and ``$SRV.*`` discovery requests; subscribe only its private inbox
  ``_INBOX_NAME.>`` (nats-py's ``inbox_prefix``), so nobody else sees or
  answers its replies.
* **admin**: everything, so it alone has the JetStream API, dead letters,
  replay and the ``$CBS.>``/``_cbs.>`` control subjects.

Layout of the folder: ``operator.nk``/``operator.jwt``, ``accounts/NAME.nk``
and ``.jwt``, ``identities.json``, ``NAME.creds``, ``ca.pem``, ``server.pem``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]

from cbs.nats.auth import NatsAuth
from cbs.nats.certs import CertFiles, make_ca, make_cert
from cbs.nats.server import NatsServer

__all__ = [
    "Identity",
    "SecureNatsServer",
    "SecureSetup",
    "encode_jwt",
    "new_seed",
    "creds_text",
    "parse_allow",
]

#: The account cells and callers live in, and NATS's system account.
APP = "CBS"
SYSTEM = "SYS"
#: Responses a cell may send to one request's reply subject (discovery
#: answers once per cell of a body).
RESPONSES_PER_REQUEST = 100


def new_seed(prefix: int) -> bytes:
    """A new nkey seed of the given role (``nkeys.PREFIX_BYTE_USER``, ...)."""
    return bytes(nkeys.encode_seed(os.urandom(32), prefix))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def encode_jwt(subject: str, name: str, nats: dict[str, Any], issuer: nkeys.KeyPair) -> str:
    """A NATS JWT v2 for ``subject`` (a public nkey), signed by ``issuer``."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = issuer.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64(signature)}"


def creds_text(jwt: str, seed: bytes) -> str:
    """A creds file, as ``nsc`` writes it."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def parse_allow(text: str) -> str:
    """``greeter.say_hello`` -> ``cbs.greeter.say_hello``; ``greeter`` or
    ``greeter.*`` -> ``cbs.greeter.*`` (every verb)."""
    service, _, verb = text.partition(".")
    if not service.isidentifier() or not service.islower():
        raise ValueError(f"bad --allow {text!r}: SERVICE or SERVICE.VERB")
    if verb in ("", "*"):
        return f"cbs.{service}.*"
    if not verb.isidentifier() or "." in verb:
        raise ValueError(f"bad --allow {text!r}: SERVICE or SERVICE.VERB")
    return f"cbs.{service}.{verb}"


def _write_secret(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)


def _check_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"bad identity name {name!r}: letters, digits, '_' and '-' only")
    return name


class Identity(dict[str, Any]):
    """One row of ``identities.json``: name, kind, account, services, allow."""


class SecureSetup:
    """The folder of one secure deployment; :meth:`create` makes it once."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    # -- creation and loading ----------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return (self.folder / "operator.jwt").is_file()

    @classmethod
    def create(cls, folder: str | os.PathLike[str]) -> SecureSetup:
        """Make the operator, the accounts, the CA and the ``admin`` identity
        unless the folder has them already (then it is only loaded)."""
        setup = cls(folder)
        if setup.exists:
            return setup
        setup.folder.mkdir(parents=True, exist_ok=True)
        setup.folder.chmod(0o700)
        (setup.folder / "accounts").mkdir(mode=0o700, exist_ok=True)
        operator = new_seed(nkeys.PREFIX_BYTE_OPERATOR)
        _write_secret(setup.folder / "operator.nk", operator)
        setup._new_account(SYSTEM, jetstream=False)
        setup._new_account(APP)
        setup._write_operator()
        ca = make_ca(setup.folder)
        make_cert(setup.folder, "server", ca)
        setup._save_identities([])
        setup.add_admin("admin")
        return setup

    def _operator(self) -> nkeys.KeyPair:
        return nkeys.from_seed((self.folder / "operator.nk").read_bytes().strip())

    def _account_key(self, account: str) -> nkeys.KeyPair:
        return nkeys.from_seed((self.folder / "accounts" / f"{account}.nk").read_bytes().strip())

    def account_public(self, account: str) -> str:
        return str(self._account_key(account).public_key.decode())

    def _write_operator(self) -> None:
        op = self._operator()
        nats = {"type": "operator", "system_account": self.account_public(SYSTEM)}
        jwt = encode_jwt(op.public_key.decode(), "CBS", nats, op)
        (self.folder / "operator.jwt").write_text(jwt + "\n")

    def _new_account(self, name: str, *, jetstream: bool = True) -> None:
        _write_secret(self.folder / "accounts" / f"{name}.nk", new_seed(nkeys.PREFIX_BYTE_ACCOUNT))
        meta = {"jetstream": jetstream, "exports": [], "imports": []}
        (self.folder / "accounts" / f"{name}.json").write_text(json.dumps(meta))
        self._write_account(name)

    def _write_account(self, name: str) -> None:
        meta = json.loads((self.folder / "accounts" / f"{name}.json").read_text())
        limits: dict[str, Any] = {
            "subs": -1,
            "data": -1,
            "payload": -1,
            "imports": -1,
            "exports": -1,
            "wildcards": True,
            "conn": -1,
            "leaf": -1,
        }
        if meta["jetstream"]:
            limits.update({"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1})
        nats = {
            "type": "account",
            "limits": limits,
            "default_permissions": {"pub": {}, "sub": {}},
            "exports": meta["exports"],
            "imports": meta["imports"],
        }
        jwt = encode_jwt(self.account_public(name), name, nats, self._operator())
        (self.folder / "accounts" / f"{name}.jwt").write_text(jwt + "\n")

    def add_account(self, name: str) -> None:
        """Another account (a tenant): isolated from the others unless an
        export of theirs is imported (:meth:`share`)."""
        _check_name(name)
        if not (self.folder / "accounts" / f"{name}.nk").exists():
            self._new_account(name)

    def check_account(self, name: str) -> None:
        """``ValueError`` unless the account exists."""
        if not (self.folder / "accounts" / f"{_check_name(name)}.json").is_file():
            known = ", ".join(a["name"] for a in self.accounts())
            raise ValueError(f"no account {name!r} (known: {known})")

    def accounts(self) -> list[dict[str, Any]]:
        """Every account but the system one: its name, the subjects it
        exports and the ``(subject, owner account)`` pairs it imports."""
        owners = {self.account_public(p.stem): p.stem for p in self._account_files()}
        rows = []
        for path in self._account_files():
            if path.stem == SYSTEM:
                continue
            meta = self._meta(path.stem)
            rows.append(
                {
                    "name": path.stem,
                    "exports": [e["subject"] for e in meta["exports"]],
                    "imports": [
                        (i["subject"], owners.get(i["account"], i["account"]))
                        for i in meta["imports"]
                    ],
                }
            )
        return rows

    def _account_files(self) -> list[Path]:
        return sorted((self.folder / "accounts").glob("*.json"))

    def share(self, subject: str, *, owner: str, to: str) -> None:
        """Export the service ``subject`` from account ``owner`` and import it
        into account ``to``: only that subject crosses. Restart the server."""
        export = {"name": subject, "subject": subject, "type": "service"}
        meta = self._meta(owner)
        if export not in meta["exports"]:
            meta["exports"].append(export)
            self._save_meta(owner, meta)
        imported = {
            "name": subject,
            "subject": subject,
            "account": self.account_public(owner),
            "type": "service",
        }
        meta = self._meta(to)
        if imported not in meta["imports"]:
            meta["imports"].append(imported)
            self._save_meta(to, meta)

    def _meta(self, account: str) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads(
            (self.folder / "accounts" / f"{account}.json").read_text()
        )
        return meta

    def _save_meta(self, account: str, meta: dict[str, Any]) -> None:
        (self.folder / "accounts" / f"{account}.json").write_text(json.dumps(meta))
        self._write_account(account)

    # -- identities --------------------------------------------------------------------------

    def identities(self) -> list[Identity]:
        rows = json.loads((self.folder / "identities.json").read_text())
        return [Identity(row) for row in rows]

    def _save_identities(self, rows: Sequence[dict[str, Any]]) -> None:
        (self.folder / "identities.json").write_text(json.dumps(list(rows), indent=1) + "\n")

    def creds_path(self, name: str) -> Path:
        return self.folder / f"{name}.creds"

    def _add(
        self, name: str, kind: str, account: str, permissions: dict[str, Any], **row: Any
    ) -> Path:
        _check_name(name)
        rows: list[dict[str, Any]] = [r for r in self.identities() if r["name"] != name]
        seed = new_seed(nkeys.PREFIX_BYTE_USER)
        user = nkeys.from_seed(seed)
        nats = {"type": "user", "subs": -1, "data": -1, "payload": -1, **permissions}
        jwt = encode_jwt(user.public_key.decode(), name, nats, self._account_key(account))
        path = self.creds_path(name)
        _write_secret(path, creds_text(jwt, seed))
        rows.append({"name": name, "kind": kind, "account": account, **row})
        self._save_identities(rows)
        return path

    def add_admin(self, name: str = "admin", *, account: str = APP) -> Path:
        return self._add(name, "admin", account, {}, services=[], allow=[">"])

    def add_cell(
        self,
        name: str,
        services: Iterable[str] = (),
        allow: Iterable[str] = (),
        *,
        account: str = APP,
    ) -> Path:
        """A cell identity serving ``services`` (default: ``[name]``), allowed to
        call ``allow`` (``SERVICE`` or ``SERVICE.VERB``)."""
        services = list(services) or [name]
        for service in services:
            parse_allow(service)
        subjects = [parse_allow(a) for a in allow]
        inbox = f"_INBOX_{name}"
        permissions = {
            "sub": {
                "allow": [f"cbs.{s}.> {s}" for s in services] + ["$SRV.>", f"{inbox}.>"],
            },
            "pub": {"allow": subjects} if subjects else {"deny": [">"]},
            "resp": {"max": RESPONSES_PER_REQUEST, "ttl": 0},
        }
        return self._add(name, "cell", account, permissions, services=services, allow=list(allow))

    def add_caller(self, name: str, allow: Iterable[str], *, account: str = APP) -> Path:
        """A caller identity that may request ``allow`` (``SERVICE.VERB`` or
        ``SERVICE``) and receive replies on its private inbox only."""
        allow = list(allow)
        subjects = [parse_allow(a) for a in allow]
        inbox = f"_INBOX_{name}"
        permissions = {
            "pub": {"allow": [*subjects, "$SRV.PING", "$SRV.INFO", "$SRV.STATS"]},
            "sub": {"allow": [f"{inbox}.>"]},
        }
        return self._add(name, "caller", account, permissions, services=[], allow=allow)

    # -- the server --------------------------------------------------------------------------

    @property
    def ca(self) -> CertFiles:
        return CertFiles(self.folder / "ca.pem", self.folder / "ca-key.pem")

    def server_config(self) -> str:
        """The nats-server config lines: operator mode with every account
        preloaded into a memory resolver, and TLS with the generated certificate."""
        accounts = sorted(p.stem for p in (self.folder / "accounts").glob("*.jwt"))
        jwts = {a: (self.folder / "accounts" / f"{a}.jwt").read_text().strip() for a in accounts}
        preload = "\n".join(f"  {self.account_public(a)}: {jwts[a]}" for a in accounts)
        return "\n".join(
            [
                f"operator: {json.dumps(str(self.folder / 'operator.jwt'))}",
                f"system_account: {self.account_public(SYSTEM)}",
                "resolver: MEMORY",
                "resolver_preload: {",
                preload,
                "}",
                "tls {",
                f"  cert_file: {json.dumps(str(self.folder / 'server.pem'))}",
                f"  key_file: {json.dumps(str(self.folder / 'server-key.pem'))}",
                "}",
            ]
        )


class SecureNatsServer(NatsServer):
    """The embedded server in secure mode (``nats_secure``): a fresh
    :class:`SecureSetup` in the server's private work folder (0700, removed
    with it, and by the stale-folder sweep after a ``kill -9``), operator mode
    and TLS on 127.0.0.1. :meth:`client_auth` is how the body connects: as
    the setup's admin, verifying the server against the generated CA."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.setup: SecureSetup | None = None

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def _config(self, workdir: Path) -> Path:
        if self.setup is None or self.setup.folder.parent != workdir:
            self.setup = SecureSetup.create(workdir / "secure")
            self.extra_config = self.setup.server_config()
        return super()._config(workdir)

    def client_auth(self) -> NatsAuth:
        if self.setup is None:
            raise RuntimeError("the server is not started")
        return NatsAuth(creds=str(self.setup.creds_path("admin")), tls_ca=str(self.setup.ca.cert))
