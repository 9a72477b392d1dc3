"""The ``nats`` transport: CBS's bus protocol on nats-py.

* Requests use one wildcard reply inbox per connection (``_INBOX.<nuid>.*``,
  the NATS request pattern), with a token per request. Each reply that
  arrives is checked by the caller's ``check``: one that does not answer the
  request (another id, a forged or malformed message) is dropped, counted
  (``wrong_replies``, DEBUG log) and the wait goes on, so a stranger on the
  bus cannot fail a request by answering first. No responders -> ``NotFound``
  at once; no accepted reply in time -> ``Timeout``; a closed or draining
  connection -> ``Unavailable``.
* Serving subscribes ``cbs.{service}.{verb}`` in queue group ``{service}``.
  Each message is handed to the transport as it is read
  (``cbs.nats._direct``), so the callback never waits: it starts the handler
  if one of ``max_concurrency`` slots is free, else queues the message in our
  own bounded queue (``max_pending`` messages, ``max_pending_bytes``), else
  answers at once with ``Unavailable`` and ``details.retry_after`` (see
  ``cbs.kernel.transport.Intake``). Where nats-py's queue is used instead
  (its code not the one direct delivery was checked against), its pending
  limits sit above ours, so it drops nothing silently before we refuse; if
  it ever does (a stalled event loop), a WARNING says so. A queued message
  whose ``cbs-deadline`` has passed is answered ``Timeout`` unrun.
* A reply larger than the server's ``max_payload`` becomes an ``Internal``
  error reply saying so. A subscription told to give up draining (its
  ``stop()`` cancelled at the body's drain timeout) answers what still runs
  or waits with ``Unavailable`` and cancels those handlers.
* A request whose publish the server refuses (NATS permissions) fails at
  once with ``Unavailable("Permissions Violation for Publish to SUBJECT")``:
  the server reports it through the error callback, which fails the requests
  waiting on that subject.
* Headers pass through both ways: a request's headers reach the handler.
* With no URL configured, a private nats-server is started (see server.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import nats
import nats.errors
from cbs.contracts import (
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_PENDING_BYTES,
    CbsError,
    Internal,
    NotFound,
    RawHandler,
    ReplyCheck,
    Timeout,
    Unavailable,
    WrongReply,
)
from cbs.kernel import TransportState
from cbs.kernel.transport import Intake, error_reply, expired, start_eagerly
from cbs.nats._direct import DirectDelivery, subscribe_direct
from cbs.nats._header_fix import TolerantClient
from cbs.nats._watchdog import ReadLoopWatchdog, is_receiving
from cbs.nats.auth import NatsAuth, Permissions, denied_publish, fatal_reason
from cbs.nats.capability import NatsConnection
from cbs.nats.directory import NatsDirectory
from cbs.nats.server import NatsServer
from cbs.nats.stats import EndpointStats, StatsTable
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
    """``nats://user:secret@host`` -> ``nats://host``: user, password or token
    removed, for every log line, error, label and page."""
    scheme, sep, rest = url.rpartition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{host}" if at else url


def split_urls(urls: str) -> list[str]:
    """``"nats://a:4222, nats://b:4222"`` -> a list (a cluster's seed URLs)."""
    return [u.strip() for u in urls.split(",") if u.strip()]


#: How long a subscription that hands over to another one of the same subject
#: and queue group (a cell replaced by its new version) keeps receiving before
#: it unsubscribes. The server routes a message with the interest it saw when
#: the message arrived; one that was routed on a view from before the new
#: subscription could otherwise find nobody (``no responders``) or reach the
#: old one after it is gone. Measured: without it about 1 in 60 swaps under
#: 500 requests in flight lost a request; with it none in several hundred.
HANDOVER_GRACE = 0.1
#: How long a draining subscription still takes messages after its UNSUB:
#: the server may route a message or two on its view from before the UNSUB
#: (an instance stepping out of its queue group under load lost about 1
#: request in 400 without it); nats-py would drop them once the sid is gone.
UNSUB_GRACE = 0.1
# Neither applies on the embedded server: this body's one connection is its
# only client, and the server handles that connection's SUB, UNSUB, PUB and
# PING in order, so a message routed on an older view comes before the PONG
# the flush waits for, and a later one sees the new interest. (A body stop
# there no longer waits 0.1 s, a fifth of `cbs demo`.)


class NatsSubscription:
    """A served subject; ``stop()`` drains it and waits for running and
    queued handlers. Cancelled (the body's drain timeout), it answers those
    with ``Unavailable`` and cancels the handlers still running."""

    def __init__(
        self,
        nc: Client,
        subject: str,
        intake: Intake[Msg],
        siblings: list[NatsSubscription] | None = None,
        *,
        graceful: bool = True,
    ) -> None:
        self.nc = nc
        #: Overlap a handover and wait out late messages (a shared server).
        self.graceful = graceful
        self.subject = subject
        self.sub: Any = None
        self.intake = intake
        #: Handlers that wait (those that answer at once need no task).
        self.tasks: set[asyncio.Task[None]] = set()
        self.cut_off = False
        #: Every served subscription of this subject and queue group on this bus.
        self.siblings = [] if siblings is None else siblings
        self.siblings.append(self)

    async def stop(self) -> None:
        try:
            if self in self.siblings:
                self.siblings.remove(self)
                if self.siblings and self.nc.is_connected and self.graceful:
                    await asyncio.sleep(HANDOVER_GRACE)  # another one takes over: overlap
            await self._unsubscribe(drain=True)
            await self.intake.idle()
        except asyncio.CancelledError:
            await self._give_up()
            raise

    async def _unsubscribe(self, *, drain: bool) -> None:
        sub = self.sub
        if sub is None:
            return
        try:
            if drain and self.nc.is_connected:
                await self.nc._send_unsubscribe(sub._id)  # no new interest...
                await self.nc.flush()
                if self.graceful:
                    await asyncio.sleep(UNSUB_GRACE)  # ...but late messages still handled
                await sub.drain()  # messages already received are still handled
            else:
                await sub.unsubscribe()  # no server to flush against
        except (*_GONE, nats.errors.BadSubscriptionError):
            pass
        self.sub = None

    async def _give_up(self) -> None:
        self.cut_off = True
        await self._unsubscribe(drain=False)  # if the drain itself was cut short
        stopping = Unavailable("The service is stopping; retry elsewhere")
        for msg in self.intake.take_waiting():
            await _answer(self.nc, msg, error_reply(msg.data, self.subject, stopping))
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()  # each answers Unavailable as it ends (see serve)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _answer(nc: Client, msg: Msg, data: bytes) -> None:
    """Send ``data`` as the reply to ``msg`` (if it wants one)."""
    if msg.reply:
        try:
            await nc.publish(msg.reply, data)
        except _GONE:
            log.warning("reply on %s lost: connection not usable", msg.subject)


class _Expired(Exception):
    """A request's timer ran out before an accepted reply came."""


#: Request timeouts share one loop timer per slot of this many seconds: a
#: timeout fires up to a slot late, never early, and a request costs a set
#: entry instead of a timer in the loop's heap (2 µs each, measured at 64 in
#: flight: the heap compares timers in Python).
TIMER_SLOT = 0.01


#: A timeout this long (or infinite, or NaN) is none: no timer.
_NEVER = 1e9
_NO_SLOT: set[str] = set()


class _Replies:
    """The reply inbox of one connection: a wildcard subscription and the
    requests waiting on it, by token."""

    def __init__(self, nc: Client) -> None:
        self.prefix = nc.new_inbox() + "."
        self.waiting: dict[str, tuple[asyncio.Future[Any], ReplyCheck | None, str]] = {}
        self.tokens = itertools.count(1)
        self.wrong = 0
        #: The tokens whose timeout falls in each slot (see TIMER_SLOT).
        self.slots: dict[int, set[str]] = {}

    def expiring(self, token: str, timeout: float, loop: asyncio.AbstractEventLoop) -> set[str]:
        """Fail ``token``'s request with ``_Expired`` after ``timeout`` seconds,
        unless it is discarded first from the set returned."""
        slot = -int(-(loop.time() + timeout) // TIMER_SLOT)  # the first slot after it
        due = self.slots.get(slot)
        if due is None:
            due = self.slots[slot] = set()
            loop.call_at(slot * TIMER_SLOT, self._expire, slot)
        due.add(token)
        return due

    def _expire(self, slot: int) -> None:
        for token in self.slots.pop(slot, ()):
            entry = self.waiting.get(token)
            if entry is not None and not entry[0].done():
                entry[0].set_exception(_Expired())

    async def start(self, nc: Client) -> None:
        await subscribe_direct(nc, self.prefix + "*", self.arrived)

    def arrived(self, msg: Msg) -> None:
        entry = self.waiting.get(msg.subject[len(self.prefix) :])
        if entry is None:  # late (the caller gave up) or made up
            self.wrong += 1
            log.debug("reply on %s: no request waits for it; dropped", msg.subject)
            return
        future, check, _ = entry
        if future.done():
            return
        headers = msg.headers
        if headers and not msg.data and headers.get("Status") == "503":
            future.set_exception(NotFound("No cell serves the subject"))
            return
        try:
            result = msg.data if check is None else check(msg.data)
        except WrongReply as exc:
            self.wrong += 1
            log.debug("reply on %s dropped: %s", msg.subject, exc)
            return
        future.set_result(result)

    def fail(self, subject: str, exc: Exception) -> None:
        """Fail every request waiting for a reply from ``subject`` (the server
        refused its publish: no reply will come)."""
        for future, _, sent_to in self.waiting.values():
            if sent_to == subject and not future.done():
                future.set_exception(exc)


class NatsBus(TransportState):
    """A bus on a NATS connection. ``shared`` is false only for the embedded
    server, which no other process knows about. Also the transport's
    :class:`TransportState`; offers :class:`NatsConnection` and, on a shared
    server, a :class:`~cbs.kernel.Directory`."""

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
        auth: NatsAuth | None = None,
        secure: bool = False,
    ) -> None:
        self.auth = auth or NatsAuth()
        #: The embedded server (no URL) runs in secure mode: TLS, operator mode,
        #: this body connecting as its admin (see cbs.nats.secure.SecureNatsServer).
        self.secure = secure
        urls = urls or self.auth.context_urls
        self.urls = split_urls(urls) if urls else []
        self.shared = bool(self.urls)
        self.client_name = client_name or f"cbs-{os.getpid()}"
        self.connect_timeout = connect_timeout
        self.reconnect_wait = reconnect_wait
        self.server: NatsServer | None = None
        self._nc: Client | None = None
        self._replies: _Replies | None = None
        self._offered: tuple[object, ...] = ()
        self._served: dict[tuple[str, str], list[NatsSubscription]] = {}
        self._tolerant: TolerantClient | None = None  # kept after close, for its count
        self._watchdog: ReadLoopWatchdog | None = None
        self._refused = 0
        self._slow_warned_at = -1.0
        self._slow_dropped = 0
        self._subscribe = Permissions()
        self._stats: StatsTable = {}

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

    @property
    def receiving(self) -> bool:
        """Connected and reading: messages reach this body's subscriptions."""
        return self._nc is not None and is_receiving(self._nc)

    @property
    def malformed_messages(self) -> int:
        """Inbound messages dropped because nats-py could not parse them."""
        return self._tolerant.malformed_messages if self._tolerant is not None else 0

    @property
    def wrong_replies(self) -> int:
        return 0 if self._replies is None else self._replies.wrong

    def capabilities(self) -> Sequence[object]:
        return self._offered

    def _slow_consumer(self, exc: nats.errors.SlowConsumerError) -> None:
        """nats-py dropped a message (its pending limits): say so, at most
        once a second."""
        self._slow_dropped += 1
        now = time.monotonic()
        if now - self._slow_warned_at >= 1.0:
            log.warning(
                "nats: %d message(s) dropped by the client library (slow consumer) on %s",
                self._slow_dropped,
                exc.subject,
            )
            self._slow_dropped = 0
            self._slow_warned_at = now

    def may_subscribe(self, subject: str, queue: str | None = None) -> bool:
        """What the creds file's permissions (which the server enforces) allow."""
        return self._subscribe.allows(subject, queue)

    async def start(self) -> None:
        auth = self.auth
        if not self.urls:
            if self.secure:
                from cbs.nats.secure import SecureNatsServer

                secure = SecureNatsServer()
                self.server = await asyncio.to_thread(secure.start)
                auth = secure.client_auth()
            else:
                self.server = await asyncio.to_thread(NatsServer().start)
            self.urls = [self.server.url]
            log.info("embedded nats-server at %s (pid %s)", self.server.url, self.server.pid)

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):
                self._slow_consumer(exc)
                return
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
            for offered in self._offered:
                if isinstance(offered, NatsConnection):
                    await offered.reconnected()

        fatal: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def on_first_error(exc: Exception) -> None:
            reason = fatal_reason(exc)
            if reason is not None and not fatal.done():
                fatal.set_result(reason)  # retrying cannot help: fail now
            denied = denied_publish(exc)
            if denied is not None and self._replies is not None:
                refused = Unavailable(f"Permissions Violation for Publish to {denied}")
                self._replies.fail(denied, refused)
            await on_error(exc)

        nc = TolerantClient()
        options: dict[str, Any] = {
            "servers": self.urls,
            "name": self.client_name,
            "connect_timeout": min(2.0, self.connect_timeout),
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # once connected, never give up
            "reconnect_time_wait": self.reconnect_wait,
            "error_cb": on_first_error,
            "disconnected_cb": on_disconnect,
            "reconnected_cb": on_reconnect,
            **auth.connect_options(),
        }
        connecting: asyncio.Future[None] = asyncio.ensure_future(nc.connect(**options))
        try:
            waiting: set[asyncio.Future[Any]] = {connecting, fatal}
            done, _ = await asyncio.wait(
                waiting, timeout=self.connect_timeout, return_when="FIRST_COMPLETED"
            )
            if connecting in done:
                connecting.result()
            else:
                connecting.cancel()
                await asyncio.gather(connecting, return_exceptions=True)
                await nc.close()
                if fatal.done():
                    raise Unavailable(f"Cannot connect to NATS at {self.url}: {fatal.result()}")
                raise TimeoutError
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            await self._stop_server()
            raise Unavailable(
                f"Cannot connect to NATS at {self.url} within {self.connect_timeout:g} s"
            ) from exc
        except Unavailable:
            await self._stop_server()
            raise
        self._nc = self._tolerant = nc
        self._watchdog = ReadLoopWatchdog(self._nc)
        self._watchdog.start()
        self._subscribe = auth.subscribe_permissions()
        self._replies = _Replies(self._nc)
        await self._replies.start(self._nc)
        connection = NatsConnection(self._nc, self.url, self._stats)
        directory = (NatsDirectory(self._nc),) if self.shared else ()
        self._offered = (self, connection, *directory)

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        check: ReplyCheck | None = None,
    ) -> Any:
        nc, replies = self._nc, self._replies
        if nc is None or replies is None:
            raise Unavailable("NATS is not connected")
        token = str(next(replies.tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        replies.waiting[token] = (future, check, subject)
        # A slot of the shared timer on the future itself: asyncio.wait_for
        # would add a timer, a second future, a callback and a task switch.
        due = replies.expiring(token, timeout, loop) if timeout < _NEVER else _NO_SLOT
        try:
            await nc.publish(subject, data, reply=replies.prefix + token, headers=headers)  # type: ignore[arg-type]
            return await future
        except NotFound:
            raise NotFound(f"No cell serves {subject}") from None
        except _Expired:
            raise Timeout(f"No reply on {subject} within {timeout:g} s") from None
        except _GONE:
            raise Unavailable("NATS connection is not usable") from None
        finally:
            due.discard(token)
            del replies.waiting[token]

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
        self,
        subject: str,
        queue: str,
        handler: RawHandler,
        *,
        max_concurrency: int,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> NatsSubscription:
        nc = self.client
        loop = asyncio.get_running_loop()
        intake: Intake[Msg] = Intake(
            subject,
            max_concurrency=max_concurrency,
            max_pending=max_pending,
            max_pending_bytes=max_pending_bytes,
            on_refused=self._count_refusal,
            clock=loop.time,
        )
        served = NatsSubscription(
            nc,
            subject,
            intake,
            self._served.setdefault((subject, queue), []),
            graceful=self.shared,
        )
        tasks = served.tasks
        # A reply goes to a subject the server sent: no subject check needed.
        publish = nc.answer if isinstance(nc, DirectDelivery) else nc.publish
        clock = loop.time
        # Kept across re-serving (a cell's new version), as discovery reports it.
        counts = self._stats.setdefault(subject, EndpointStats())

        async def handle(msg: Msg, queued: bool) -> None:
            began = clock()
            started: float | None = began
            try:
                if queued and (served.cut_off or expired(msg.headers)):
                    started = None
                    error: CbsError = (
                        Unavailable("The service is stopping; retry elsewhere")
                        if served.cut_off
                        else Timeout("Deadline passed while waiting")
                    )
                    await _answer(nc, msg, error_reply(msg.data, subject, error))
                    return
                outcome = await handler(msg.data, msg.headers)
                counts.num_requests += 1
                counts.processing_time += int((clock() - began) * 1e9)
                if outcome.error is not None:
                    counts.num_errors += 1
                    counts.last_error = outcome.error.code
                if msg.reply:
                    data = outcome.data
                    if len(data) > nc.max_payload:
                        data = self._too_large(subject, msg, len(data), nc.max_payload)
                    await publish(msg.reply, data)
            except asyncio.CancelledError:
                if served.cut_off:
                    stopping = Unavailable("The service stopped before answering; retry")
                    await _answer(nc, msg, error_reply(msg.data, subject, stopping))
                raise
            except _GONE:
                log.warning("reply on %s lost: connection not usable", subject)
            except Exception:
                log.exception("serving %s failed", subject)
            finally:
                following = intake.finished(started)
                if following is not None:  # its slot goes on: start the next (not nested)
                    loop.call_soon(start, following, True)

        def track(task: asyncio.Task[None] | None) -> None:
            if task is not None:
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        def start(msg: Msg, queued: bool) -> None:
            # A task only for handlers that wait: most answer at once.
            track(start_eagerly(handle(msg, queued), loop))

        def on_message(msg: Msg) -> None:
            # Called as each message is read (cbs.nats._direct): never waits.
            if intake.try_run():
                start(msg, False)
            elif not intake.try_queue(msg, len(msg.data)):
                track(start_eagerly(_answer(nc, msg, intake.refusal(msg.data)), loop))

        # Only without direct delivery does nats-py queue for us; its limits
        # then sit above ours, so it is never the one to drop.
        served.sub = await subscribe_direct(
            nc,
            subject,
            on_message,
            queue=queue,
            pending_msgs_limit=max_pending + max_concurrency + 1024,
            pending_bytes_limit=max_pending_bytes + 2 * nc.max_payload,
        )
        await nc.flush()  # served once start() returns: the server has the interest
        return served

    def _count_refusal(self) -> None:
        self._refused += 1

    @property
    def refused_requests(self) -> int:
        return self._refused

    @staticmethod
    def _too_large(subject: str, msg: Msg, size: int, limit: int) -> bytes:
        log.error(
            "reply on %s is %d bytes, over the server's max_payload of %d: answered Internal",
            subject,
            size,
            limit,
        )
        error = Internal(
            "Reply too large for the bus",
            details={"reply_bytes": size, "max_payload": limit},
        )
        return error_reply(msg.data, subject, error)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        self._replies = None
        self._offered = ()
        self._served = {}
        if self._watchdog is not None:
            await self._watchdog.stop()
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
