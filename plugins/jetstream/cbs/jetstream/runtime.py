"""What the plugin keeps per started body: the JetStream context, the durable
sender (offered as the kernel's ``DurableSender`` capability), the inboxes it
serves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import attrs
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from cbs.contracts import Cell, Endpoint, Envelope, Unavailable, codec
from cbs.jetstream.dedup import done_config
from cbs.jetstream.inbox import API_PREFIX, DurableInbox
from cbs.jetstream.publish import ATTEMPT, RETRYABLE, publish_stored
from cbs.jetstream.settings import Settings, durable_subject, stream_name
from cbs.jetstream.streams import (
    dlq_config,
    ensure_consumer,
    ensure_stream,
    inbox_config,
    requests_config,
)
from cbs.kernel import Body, ConfigError, DurableSender, Served
from cbs.kernel.transport import endpoint_handler
from cbs.nats import NatsConnection

__all__ = ["JetStreamRuntime", "API_PREFIX"]

log = logging.getLogger("cbs.jetstream")

_NOT_READY = (
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
)


#: How often the consumers of the served durable verbs are read back from the
#: server for the metrics (``cbs_jetstream_consumer_pending`` and others).
CONSUMER_INFO_PERIOD = 5.0

#: A batch publish that did not go out: it is sent again one by one.
_NOT_SENT: tuple[type[Exception], ...] = (*RETRYABLE, nats.js.errors.TooManyStalledMsgsError)


class _Sender(DurableSender):
    def __init__(self, runtime: JetStreamRuntime) -> None:
        self._runtime = runtime

    async def send(self, envelope: Envelope, headers: dict[str, str]) -> None:
        await self._runtime.send(envelope, headers)

    async def send_many(self, envelopes: Sequence[Envelope], headers: dict[str, str]) -> None:
        await self._runtime.send_many(envelopes, headers)


class JetStreamRuntime:
    """The plugin's state on one started body."""

    def __init__(self, body: Body, conn: NatsConnection, settings: Settings) -> None:
        self.body = body
        self.nc: Client = conn.client
        self.settings = settings
        self.url = conn.url
        self.conn = conn
        self.js = conn.jetstream(prefix=API_PREFIX, timeout=min(settings.publish_timeout, 5.0))
        self.jsm = self.js  # a JetStreamContext is also the manager
        self.sender = _Sender(self)
        self._ready: set[str] = set()  # streams and consumers known to be in place
        self._locks: dict[str, asyncio.Lock] = {}
        self._services: set[str] = set()  # services whose stream send() has ensured
        #: The inboxes of each served cell object (two versions of a cell may
        #: be served at once while one replaces the other).
        self.inboxes: dict[int, list[DurableInbox]] = {}
        #: (service, verb) -> (num_pending, num_ack_pending, num_redelivered) of
        #: the verb's consumer, as last read (see ``watch_consumers``).
        self.consumers: dict[tuple[str, str], tuple[int, int, int]] = {}
        #: (service, verb) -> requests this body sent to the dead letters.
        self.dead_lettered: dict[tuple[str, str], int] = {}
        self._watch: asyncio.Task[None] | None = None

    # -- streams ------------------------------------------------------------------------

    async def _once(self, key: str, again: bool, make: Any) -> None:
        if key in self._ready and not again:
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._ready and not again:
                return
            if self.settings.replicas is None:  # once: the cluster the body is on
                replicas = await self.conn.stream_replicas()
                self.settings = attrs.evolve(self.settings, replicas=replicas)
                log.info("streams and consumers with %d replica(s)", replicas)
            try:
                await make()
            except _NOT_READY as exc:
                raise Unavailable(
                    f"JetStream does not answer on {self.url or 'NATS'}"
                    f" ({type(exc).__name__}): is it enabled (nats-server -js)?"
                ) from exc
            except nats.js.errors.APIError as exc:
                raise ConfigError(f"{key}: JetStream refused: {exc.description}") from exc
            self._ready.add(key)

    async def ensure_service(self, service: str, *, again: bool = False) -> None:
        """The stream ``CBS_{service}`` exists with these settings."""
        await self._once(
            stream_name(service),
            again,
            lambda: ensure_stream(self.jsm, requests_config(service, self.settings)),
        )

    async def ensure_inbox(self, service: str, verb: str, *, again: bool = False) -> None:
        """The request stream, the dead-letter stream, the bucket of handled
        requests (unless deduplication is off) and the verb's consumer exist."""
        await self.ensure_service(service, again=again)

        async def make() -> None:
            await ensure_stream(self.jsm, dlq_config(service, self.settings))
            if self.settings.dedup_window > 0:
                await ensure_stream(self.jsm, done_config(service, self.settings))
            await ensure_consumer(
                self.jsm, stream_name(service), inbox_config(service, verb, self.settings)
            )

        await self._once(f"{service}.{verb}", again, make)

    # -- sending ------------------------------------------------------------------------

    async def send(self, envelope: Envelope, headers: dict[str, str]) -> None:
        """The durable sender: store the request in ``CBS_{service}`` with
        ``Nats-Msg-Id`` = envelope id; return after the PubAck."""
        service = envelope.service
        if service not in self._services:
            await self.ensure_service(service)
            self._services.add(service)
        headers["Nats-Msg-Id"] = envelope.id
        await publish_stored(
            self.js,
            durable_subject(service, envelope.verb),
            codec.encode(envelope),
            headers,
            timeout=self.settings.publish_timeout,
            on_no_stream=lambda: self.ensure_service(service, again=True),
        )

    async def send_many(self, envelopes: Sequence[Envelope], headers: dict[str, str]) -> None:
        """Store many requests: every publish goes out before any PubAck is
        awaited (``js.publish_async``), then the acks are gathered. A message
        whose ack did not come within one attempt (or that failed) is sent
        again the one-by-one way, with the same ``Nats-Msg-Id``: stored once."""
        for service in {envelope.service for envelope in envelopes} - self._services:
            await self.ensure_service(service)
            self._services.add(service)
        sent: list[tuple[asyncio.Future[Any] | None, str, bytes, dict[str, str], str]] = []
        for envelope in envelopes:
            subject = durable_subject(envelope.service, envelope.verb)
            data = codec.encode(envelope)
            hdrs = {**headers, "Nats-Msg-Id": envelope.id}
            future: asyncio.Future[Any] | None
            try:
                future = await self.js.publish_async(
                    subject, data, headers=dict(hdrs), wait_stall=ATTEMPT
                )
            except _NOT_SENT:
                future = None
            sent.append((future, subject, data, hdrs, envelope.service))
        waiting = [future for future, *_ in sent if future is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=min(ATTEMPT, self.settings.publish_timeout))
        again = []
        for future, subject, data, hdrs, service in sent:
            if future is not None and future.done() and not future.cancelled():
                if future.exception() is None:
                    continue
            elif future is not None:
                future.cancel()
            again.append(self._publish(subject, data, hdrs, service))
        if again:
            await asyncio.gather(*again)

    async def _publish(
        self, subject: str, data: bytes, headers: dict[str, str], service: str
    ) -> None:
        await publish_stored(
            self.js,
            subject,
            data,
            headers,
            timeout=self.settings.publish_timeout,
            on_no_stream=lambda: self.ensure_service(service, again=True),
        )

    # -- serving ------------------------------------------------------------------------

    async def serve(self, cell: Cell, endpoints: Sequence[Endpoint]) -> None:
        """Start an inbox for each durable endpoint of a served cell."""
        factories = self.body.middleware.server_factories()
        limit = self.settings.concurrency or cell.max_concurrency
        started = self.inboxes.setdefault(id(cell), [])
        for endpoint in endpoints:
            served = Served(cell, endpoint)
            inbox = DurableInbox(self, served, endpoint_handler(served, factories), limit)
            try:
                await inbox.start()
            except ConfigError:
                raise
            except Unavailable as exc:
                raise ConfigError(
                    f"durable verb {cell.service}.{endpoint.verb} cannot be served: {exc.message}"
                ) from exc
            started.append(inbox)

    # -- consumer figures ---------------------------------------------------------------

    def watch_consumers(self) -> None:
        """Read the consumers of the served durable verbs now and every
        ``CONSUMER_INFO_PERIOD`` seconds until ``stop`` (for the metrics)."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_loop(), name="cbs-jetstream-consumers")

    def unwatch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()

    async def _watch_loop(self) -> None:
        while True:
            await self.read_consumers()
            await asyncio.sleep(CONSUMER_INFO_PERIOD)

    async def read_consumers(self) -> None:
        """Refresh ``consumers`` for every verb an inbox serves; a verb whose
        consumer cannot be read keeps its last figures."""
        inboxes = [inbox for group in self.inboxes.values() for inbox in group]
        served = {(i.service, i.verb, i.stream, i.consumer) for i in inboxes}
        for service, verb, stream, consumer in sorted(served):
            try:
                info = await self.jsm.consumer_info(stream, consumer)
            except Exception as exc:  # a reconnect, a leader election: try again later
                log.debug("consumer %s not read: %s", consumer, exc)
                continue
            self.consumers[(service, verb)] = (
                info.num_pending or 0,
                info.num_ack_pending or 0,
                info.num_redelivered or 0,
            )
        for target in set(self.consumers) - {(s, v) for s, v, _, _ in served}:
            del self.consumers[target]  # no longer served here

    async def stop_cell(self, cell: Cell, timeout: float) -> None:
        inboxes = self.inboxes.pop(id(cell), [])
        await asyncio.gather(*(inbox.stop(timeout) for inbox in inboxes))

    async def stop(self, timeout: float) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        inboxes = [inbox for group in self.inboxes.values() for inbox in group]
        self.inboxes.clear()
        await asyncio.gather(*(inbox.stop(timeout) for inbox in inboxes))
