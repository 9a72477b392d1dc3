"""How a body authenticates to NATS: the connection options, the way the nats
CLI spells them, turned into nats-py ``connect()`` arguments.

:class:`NatsAuth` holds file paths and names, never a secret it read: a
password or token is kept only as given (from the environment, a context file
or, discouraged, the command line) and only handed to nats-py. Its ``repr``
shows which modes are in play, not their values.

Precedence, as the nats CLI has it: an explicit option (flag or environment
variable) wins over the ``--nats-context`` file's value.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import ssl

# ssl and base64 are imported where a connection is made: a body is configured
# (and its credentials checked) by every command, `cbs plugins` included.

__all__ = [
    "AUTH_OPTIONS",
    "AuthError",
    "NatsAuth",
    "Permissions",
    "denied_publish",
    "jwt_claims",
    "fatal_reason",
    "inbox_from_creds",
    "read_creds_jwt",
]

#: The options this module reads (config name -> environment variable).
AUTH_OPTIONS = {
    "nats_context": "NATS_CONTEXT",
    "nats_creds": "NATS_CREDS",
    "nats_nkey": "NATS_NKEY",
    "nats_user": "NATS_USER",
    "nats_password": "NATS_PASSWORD",
    "nats_token": "NATS_TOKEN",
    "tls_ca": "NATS_CA",
    "tls_cert": "NATS_CERT",
    "tls_key": "NATS_KEY",
    "tls_first": "NATS_TLS_FIRST",
    "nats_inbox_prefix": "NATS_INBOX_PREFIX",
}

_JWT_BLOCK = re.compile(r"-----BEGIN NATS USER JWT-----\s*(\S+)\s*------END NATS USER JWT------")
_INBOX = re.compile(r"^(_INBOX[A-Za-z0-9_-]*)\.>$")
_DENIED_PUBLISH = re.compile(r'Permissions Violation for Publish to "([^"]+)"', re.IGNORECASE)


class AuthError(ValueError):
    """A connection option that cannot work (a missing file, a half pair)."""


def _secret(value: object) -> str:
    return "" if not value else "***"


@attrs.frozen(repr=False)
class NatsAuth:
    """The authentication and TLS settings of one connection."""

    creds: str | None = None
    nkey: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_first: bool = False
    inbox_prefix: str | None = None
    #: URLs from the context file, used when no ``--nats-url`` is given.
    context_urls: str | None = None

    def __repr__(self) -> str:
        modes = ", ".join(self.modes()) or "none"
        return f"NatsAuth({modes})"

    def modes(self) -> list[str]:
        """What is in play, for messages: ``["creds", "tls"]``; never a value."""
        named = [
            ("creds", self.creds),
            ("nkey", self.nkey),
            ("user", self.user),
            ("token", self.token),
            ("tls", self.tls_ca or self.tls_cert),
            ("mtls", self.tls_cert),
        ]
        return [name for name, value in named if value]

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert or self.tls_first)

    @classmethod
    def from_config(cls, get: Any) -> NatsAuth:
        """From a config getter (``config.get``): options, then the context file."""
        values = {name: get(name) for name in AUTH_OPTIONS}
        context: Mapping[str, Any] = {}
        if values["nats_context"]:
            from cbs.nats.context import load_context

            context = load_context(values["nats_context"])

        def pick(name: str, key: str) -> str | None:
            value = values[name] or context.get(key) or None
            return None if value is None else str(value)

        first = values["tls_first"]
        return cls(
            creds=pick("nats_creds", "creds"),
            nkey=pick("nats_nkey", "nkey"),
            user=pick("nats_user", "user"),
            password=pick("nats_password", "password"),
            token=pick("nats_token", "token"),
            tls_ca=pick("tls_ca", "ca"),
            tls_cert=pick("tls_cert", "cert"),
            tls_key=pick("tls_key", "key"),
            tls_first=_truthy(first) if first not in (None, "") else bool(context.get("tls_first")),
            inbox_prefix=pick("nats_inbox_prefix", "inbox_prefix"),
            context_urls=str(context["url"]) if context.get("url") else None,
        )

    def check(self) -> None:
        """Refuse what cannot work, with one line naming the option."""
        for option, path in (
            ("nats_creds", self.creds),
            ("nats_nkey", self.nkey),
            ("tls_ca", self.tls_ca),
            ("tls_cert", self.tls_cert),
            ("tls_key", self.tls_key),
        ):
            if path and not os.access(path, os.R_OK):
                raise AuthError(f"bad {option}: cannot read {path}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise AuthError("bad tls_cert/tls_key: give both (a client certificate and its key)")
        if self.password and not self.user:
            raise AuthError("bad nats_password: give nats_user too")
        given = [m for m in ("creds", "nkey", "user", "token") if getattr(self, m)]
        if len(given) > 1:
            raise AuthError(
                f"give one of nats_creds, nats_nkey, nats_user, nats_token, not {given}"
            )
        if self.creds:
            try:
                read_creds_jwt(self.creds)
            except ValueError as exc:
                raise AuthError(f"bad nats_creds: {self.creds}: {exc}") from None
        if self.inbox_prefix is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", self.inbox_prefix):
            raise AuthError("bad nats_inbox_prefix: letters, digits, '_' and '-' only")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client's TLS context: verifies the server (against ``tls_ca`` or
        the system's roots) and presents ``tls_cert`` when given."""
        if not self.tls:
            return None
        import ssl

        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        if self.tls_cert and self.tls_key:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    def effective_inbox_prefix(self) -> str | None:
        """``inbox_prefix`` as given, else the private inbox a creds file's
        permissions allow (``_INBOX_<name>``), else ``None`` (nats-py's ``_INBOX``)."""
        if self.inbox_prefix:
            return self.inbox_prefix
        if self.creds:
            return inbox_from_creds(self.creds)
        return None

    def subscribe_permissions(self) -> Permissions:
        """What this identity may subscribe to, from the creds file's JWT (the
        server enforces the same); everything when there is none to read."""
        if not self.creds:
            return Permissions()
        try:
            claims = jwt_claims(read_creds_jwt(self.creds))
        except (OSError, ValueError):
            return Permissions()
        sub = claims.get("nats", {}).get("sub") or {}
        allow, deny = sub.get("allow"), sub.get("deny") or []
        return Permissions(
            tuple(str(s) for s in allow) if allow else None, tuple(str(s) for s in deny)
        )

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for nats-py's ``connect()``."""
        options: dict[str, Any] = {}
        if self.creds:
            options["user_credentials"] = self.creds
        if self.nkey:
            options["nkeys_seed"] = self.nkey
        if self.user:
            options["user"] = self.user
            options["password"] = self.password or ""
        if self.token:
            options["token"] = self.token
        context = self.ssl_context()
        if context is not None:
            quiet_ssl_eof_warning()
            options["tls"] = context
            options["tls_handshake_first"] = self.tls_first
        prefix = self.effective_inbox_prefix()
        if prefix:
            options["inbox_prefix"] = prefix
        return options


def _covers(permission: str, subject: str) -> bool:
    """The permission subject ``permission`` (wildcards ``*``, ``>``) covers
    every subject ``subject`` may match."""
    want, have = permission.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or have[i] == ">" or token not in ("*", have[i]):
            return False
    return len(want) == len(have)


def _entry_covers(entry: str, subject: str, queue: str | None) -> bool:
    """A permission entry ``SUBJECT`` or ``SUBJECT QUEUE`` (queue permissions)."""
    perm_subject, _, perm_queue = entry.strip().partition(" ")
    if not _covers(perm_subject, subject):
        return False
    return not perm_queue or (queue is not None and _covers(perm_queue.strip(), queue))


@attrs.frozen
class Permissions:
    """Subscribe permissions of an identity: ``allow`` ``None`` means all."""

    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()

    def allows(self, subject: str, queue: str | None = None) -> bool:
        if any(_covers(d.strip().partition(" ")[0], subject) for d in self.deny):
            return False
        if self.allow is None:
            return True
        return any(_entry_covers(entry, subject, queue) for entry in self.allow)


def denied_publish(exc: BaseException) -> str | None:
    """The subject of a ``Permissions Violation for Publish to "SUBJECT"``
    error the server reported, else ``None``."""
    match = _DENIED_PUBLISH.search(str(exc))
    return match.group(1) if match else None


class _QuietSslEof(logging.Filter):
    """asyncio warns "returning true from eof_received() has no effect when
    using ssl" on every TLS connection nats-py closes: noise, not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received()" not in record.getMessage()


_QUIET = _QuietSslEof()


def quiet_ssl_eof_warning() -> None:
    """Install the filter on asyncio's logger (once)."""
    logger = logging.getLogger("asyncio")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def read_creds_jwt(path: str | os.PathLike[str]) -> str:
    """The user JWT of a creds file (``ValueError`` if it has none)."""
    match = _JWT_BLOCK.search(Path(path).read_text(errors="replace"))
    if match is None:
        raise ValueError("no NATS USER JWT block")
    return match.group(1)


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the server verifies; this only reads)."""
    import base64

    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError) as exc:
        raise ValueError("not a JWT") from exc
    if not isinstance(claims, dict):
        raise ValueError("not a JWT")
    return claims


def inbox_from_creds(path: str | os.PathLike[str]) -> str | None:
    """The private inbox prefix a creds file's user may subscribe to
    (``_INBOX_web`` for ``sub: allow: [_INBOX_web.>]``), if exactly one."""
    try:
        claims = jwt_claims(read_creds_jwt(path))
    except (OSError, ValueError):
        return None
    allowed = claims.get("nats", {}).get("sub", {}).get("allow") or []
    found = {m.group(1) for s in allowed if isinstance(s, str) and (m := _INBOX.match(s))}
    return found.pop() if len(found) == 1 else None


def fatal_reason(exc: BaseException) -> str | None:
    """One line for an error no retry can fix (wrong credentials, a
    certificate that does not verify), ``None`` for one worth retrying."""
    import ssl

    import nats.errors

    if isinstance(exc, nats.errors.AuthorizationError):
        return "Authorization Violation"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS: certificate verify failed"
    text = str(exc)
    lowered = text.lower()
    if "authorization violation" in lowered:
        return "Authorization Violation"
    if "authentication" in lowered and "nats:" in lowered:
        return text.removeprefix("nats: ").strip("'")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        if "CERTIFICATE_REQUIRED" in reason:
            return "TLS: the server requires a client certificate"
        return f"TLS: {reason.lower().replace('_', ' ')}"
    if isinstance(exc, nats.errors.SecureConnRequiredError):
        return "TLS: the server requires TLS (give --tls-ca, or a tls:// URL)"
    if isinstance(exc, nats.errors.SecureConnWantedError):
        return "TLS: the server does not offer TLS"
    return None
