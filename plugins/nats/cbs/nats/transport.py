"""The ``nats`` transport: CBS's bus protocol on nats-py.

* Requests go through the NATS request API (automatic inbox, one shared
  response subscription). No responders -> ``NotFound`` at once; no reply in
  time -> ``Timeout``; a closed or draining connection -> ``Unavailable``.
* Serving subscribes ``cbs.{service}.{verb}`` in queue group ``{service}``.
  nats-py awaits a subscription's callback one message at a time, so the
  callback only takes a concurrency slot and spawns the handler: up to
  ``max_concurrency`` handlers run at once; beyond that the callback waits and
  messages queue in the subscription (bounded by nats-py's pending limits).
* Headers pass through both ways: a request's headers reach the handler.
* With no URL configured, a private nats-server is started (see server.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import nats
import nats.errors
from cbs.contracts import NotFound, RawHandler, Timeout, Unavailable
from cbs.kernel.eager import start_eagerly
from cbs.nats.server import NatsServer
from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = ["NatsBus", "NatsSubscription", "masked_url", "split_urls"]

log = logging.getLogger("cbs.nats")

_GONE = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
)


def masked_url(url: str) -> str:
    """``nats://user:secret@host`` -> ``nats://user:***@host``; a token
    (``nats://secret@host``) becomes ``***``. For logs and error messages."""
    scheme, sep, rest = url.rpartition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user + ':***' if colon else '***'}@{host}"


def split_urls(urls: str) -> list[str]:
    """``"nats://a:4222, nats://b:4222"`` -> a list (a cluster's seed URLs)."""
    return [u.strip() for u in urls.split(",") if u.strip()]


class NatsSubscription:
    """A served subject; ``stop()`` drains it and waits for running handlers."""

    def __init__(self, nc: Client, subject: str) -> None:
        self.nc = nc
        self.subject = subject
        self.sub: Any = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        if self.sub is not None:
            try:
                if self.nc.is_connected:
                    await self.sub.drain()  # messages already received still run
                else:
                    await self.sub.unsubscribe()  # no server to flush against
            except (*_GONE, nats.errors.BadSubscriptionError):
                pass
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


class NatsBus:
    """A bus on a NATS connection. ``shared`` is false only for the embedded
    server, which no other process knows about."""

    name = "nats"
    #: Longest wait between two reconnect attempts, in seconds.
    MAX_RECONNECT_WAIT = 8.0

    def __init__(
        self,
        urls: str | None = None,
        *,
        client_name: str | None = None,
        connect_timeout: float = 5.0,
        reconnect_wait: float = 0.5,
    ) -> None:
        self.urls = split_urls(urls) if urls else []
        self.shared = bool(self.urls)
        self.client_name = client_name or f"cbs-{os.getpid()}"
        self.connect_timeout = connect_timeout
        self.reconnect_wait = reconnect_wait
        self.server: NatsServer | None = None
        self._nc: Client | None = None

    @property
    def client(self) -> Client:
        """The nats-py client (for plugins that need NATS itself, e.g. JetStream)."""
        if self._nc is None:
            raise Unavailable("NATS is not connected")
        return self._nc

    @property
    def url(self) -> str:
        """The server URLs, for messages: passwords and tokens masked."""
        return ",".join(map(masked_url, self.urls))

    @property
    def connected(self) -> bool:
        """Connected to a server right now (false while reconnecting or closed)."""
        nc = self._nc
        return nc is not None and nc.is_connected

    async def start(self) -> None:
        if not self.urls:
            self.server = await asyncio.to_thread(NatsServer().start)
            self.urls = [self.server.url]
            log.info("embedded nats-server at %s (pid %s)", self.server.url, self.server.pid)

        async def on_error(exc: Exception) -> None:
            log.debug("nats: %s", exc)
            nc = self._nc
            if nc is not None and nc.is_reconnecting:
                # Back off: nats-py waits a fixed time between attempts; double it.
                wait = nc.options["reconnect_time_wait"]
                nc.options["reconnect_time_wait"] = min(wait * 2, self.MAX_RECONNECT_WAIT)

        async def on_disconnect() -> None:
            if self._nc is not None:  # not when we close it ourselves
                log.warning("nats: disconnected from %s; reconnecting", self.url)

        async def on_reconnect() -> None:
            if self._nc is not None:
                self._nc.options["reconnect_time_wait"] = self.reconnect_wait
            log.warning("nats: reconnected")

        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    servers=self.urls,
                    name=self.client_name,
                    connect_timeout=min(2.0, self.connect_timeout),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,  # once connected, never give up
                    reconnect_time_wait=self.reconnect_wait,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                ),
                self.connect_timeout,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            await self._stop_server()
            raise Unavailable(
                f"Cannot connect to NATS at {self.url} within {self.connect_timeout:g} s"
            ) from exc

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        nc = self._nc
        if nc is None:
            raise Unavailable("NATS is not connected")
        try:
            msg = await nc.request(subject, data, timeout=timeout, headers=headers)  # type: ignore[arg-type]
        except nats.errors.NoRespondersError:
            raise NotFound(f"No cell serves {subject}") from None
        except nats.errors.TimeoutError:
            raise Timeout(f"No reply on {subject} within {timeout:g} s") from None
        except _GONE:
            raise Unavailable("NATS connection is not usable") from None
        return msg.data

    async def publish(
        self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        nc = self._nc
        if nc is None:
            raise Unavailable("NATS is not connected")
        try:
            await nc.publish(subject, data, headers=headers)  # type: ignore[arg-type]
        except _GONE:
            raise Unavailable("NATS connection is not usable") from None

    async def serve(
        self, subject: str, queue: str, handler: RawHandler, *, max_concurrency: int
    ) -> NatsSubscription:
        nc = self.client
        served = NatsSubscription(nc, subject)
        slots = asyncio.Semaphore(max_concurrency)
        tasks = served.tasks
        publish = nc.publish
        loop = asyncio.get_running_loop()

        async def handle(msg: Msg) -> None:
            try:
                reply = await handler(msg.data, msg.headers)
                if msg.reply:
                    await publish(msg.reply, reply)
            except _GONE:
                log.warning("reply on %s lost: connection not usable", subject)
            except Exception:
                log.exception("serving %s failed", subject)
            finally:
                slots.release()

        async def on_message(msg: Msg) -> None:
            await slots.acquire()
            # A task only for handlers that wait: most answer at once.
            task = start_eagerly(handle(msg), loop)
            if task is not None:
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        served.sub = await nc.subscribe(subject, queue=queue, cb=on_message)
        await nc.flush()  # served once start() returns: the server has the interest
        return served

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except _GONE:
                await nc.close()
        await self._stop_server()

    async def _stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await asyncio.to_thread(server.stop)
            self.urls = []
