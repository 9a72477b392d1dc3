"""A kept-alive ``http.client`` connection as the OTLP exporter's transport.

The exporter's default transport is a ``requests`` session: every batch it
sends reads the environment again (proxies, ``.netrc``, CA bundles) and
goes through requests' and urllib3's layers, about 1 ms of CPU a batch of
512 spans here, as much as encoding them. For an ``http://`` endpoint that
none of that applies to (no proxy for it, no ``.netrc`` entry, no
credential provider; read once, when the exporter is made),
:class:`KeepAliveTransport` posts each batch over one kept-alive connection
with ``http.client``: a third of that CPU. Retries, backoff, timeouts and
status handling stay the exporter's own; a broken connection is a
connection error to it, retried at once on a new connection, as a stale
pooled connection of requests is.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport

__all__ = ["KeepAliveTransport", "keeps_alive"]

#: Variables naming a credential provider: its requests session must be used.
CREDENTIAL_PROVIDERS = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
)


def keeps_alive(endpoint: str) -> bool:
    """Whether :class:`KeepAliveTransport` sends to ``endpoint`` what the
    requests session would: plain HTTP, no proxy, no ``.netrc`` login, no
    credential provider."""
    if urlsplit(endpoint).scheme != "http" or any(os.environ.get(v) for v in CREDENTIAL_PROVIDERS):
        return False
    from requests.utils import get_environ_proxies, get_netrc_auth

    return not get_environ_proxies(endpoint) and get_netrc_auth(endpoint) is None


@dataclass(frozen=True, slots=True)
class Answer(BaseHTTPResult):
    """What one request got: a status and body, or ``error``."""

    body: bytes = b""
    fields: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def content(self) -> bytes:
        return self.body

    def headers(self) -> Mapping[str, str]:
        return self.fields  # an HTTPMessage: case-insensitive, as asked


class KeepAliveTransport(BaseHTTPTransport):
    """Requests over one kept-alive connection per host and port, one at a
    time (the exporter sends from one thread, but may be flushed from
    another)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[tuple[str, int], http.client.HTTPConnection] = {}
        self._targets: dict[str, tuple[tuple[str, int], str]] = {}

    def _target(self, url: str) -> tuple[tuple[str, int], str]:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            if parts.scheme != "http":  # never TLS's traffic in the clear
                raise ValueError(f"not a plain http:// endpoint: {parts.scheme}://")
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            target = ((parts.hostname or "", parts.port or 80), path)
            self._targets[url] = target
        return target

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        data: bytes | None = None,
    ) -> BaseHTTPResult:
        with self._lock:
            try:
                address, path = self._target(url)
            except ValueError as error:
                return Answer(error=error)
            connection = self._connections.get(address)
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(*address, timeout=timeout)
                    self._connections[address] = connection
                elif connection.sock is not None:
                    connection.sock.settimeout(timeout)
                else:
                    connection.timeout = timeout
                connection.request(method, path, body=data, headers=headers or {})
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as error:
                self._connections.pop(address, None)
                connection.close()  # type: ignore[union-attr]
                return Answer(error=error)
            if response.will_close:
                self._connections.pop(address, None)
                connection.close()
            fields: Any = response.headers
            return Answer(response.status, response.reason, None, body, fields)

    def is_connection_error(self, exception: Exception | None) -> bool:
        return isinstance(exception, OSError | http.client.HTTPException)

    def close(self) -> None:
        with self._lock:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()
