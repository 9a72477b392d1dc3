"""A durable verb's inbox: its JetStream pull consumer, served by one instance.

Every instance of a service pulls from the same durable consumer
``CBS_{service}_{verb}``, so each stored request goes to one of them
(work-queue semantics). Per instance:

* **Pulling.** One pull request at a time asks for as many messages as there
  are free handler slots (up to ``batch``), with a 5 s expiry. Messages are
  handed to handlers as they arrive (no waiting for a full batch); the next
  pull goes out when the previous one is used up or expired, and once at least
  half the slots are free, so that pulls stay large under load. A reconnect
  abandons the pull at once (the server forgot it).
* **Bounded concurrency.** At most ``limit`` handlers run at once (the cell's
  ``max_concurrency`` unless ``jetstream_concurrency`` says otherwise); the
  server never has more than that many messages outstanding for this instance.
* **Outcome.** Each message runs through the same server path as a request
  (decode, middleware, schema check, handler, error reply). Success: ack. A
  ``BadRequest`` reply: dead letter, then term (terminal, no retry). Any other
  error: ``nak`` with a delay of ``min(backoff * 2 ** (n - 1), backoff_max)``
  after delivery ``n``, until the last of ``max_deliveries``, which goes to
  the dead letters. A message seen more often than that (its last run never
  reported back: the process died, an ack was lost) goes to the dead letters
  without running again.
* **Long handlers** get an in-progress signal every ``ack_wait / 3`` so the
  server does not redeliver a message that is still being worked on.
* **Deduplication** (unless ``jetstream_dedup_window`` is 0): before the
  handler runs, the delivery claims the request's key in ``CBS_DONE_{service}``
  with a compare-and-set create (see dedup.py). A ``done`` or ``dead`` record:
  ack without running. A claim refreshed less than ``2/3 ack_wait`` ago by
  another run: put back (nak) until it is done or goes stale. A stale claim, a
  claim of an earlier run of this inbox, or a ``failed`` record: taken over
  (compare-and-set), and the run is flagged ``Cbs-Redelivered: 1``. After
  success ``done`` is written (retried up to ``publish_timeout``), then the
  ack; if ``done`` cannot be written there is no ack, and the next delivery
  runs again, flagged. Claims of running handlers are refreshed every
  ``ack_wait / 6`` or so, with the in-progress signals.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from cbs.contracts import CbsError, Envelope, Internal, RawHandler, codec
from cbs.jetstream.dedup import DEAD, DONE, FAILED, RUN, STORE_ERRORS, DedupStore, dedup_key
from cbs.jetstream.publish import GONE, publish_stored
from cbs.jetstream.settings import consumer_name, dlq_subject, stream_name
from cbs.kernel import Served
from cbs.kernel.transport import start_eagerly

if TYPE_CHECKING:
    from cbs.jetstream.runtime import JetStreamRuntime

#: The JetStream API subjects (no JetStream domain).
API_PREFIX = "$JS.API"

__all__ = ["DurableInbox", "DELIVERY_HEADER", "REDELIVERED_HEADER", "SEQUENCE_HEADER"]

log = logging.getLogger("cbs.jetstream")

#: Headers a durable handler sees besides the stored ones (current_request().headers).
DELIVERY_HEADER = "Cbs-Delivery"  # 1 for the first delivery, 2 for the first retry, ...
SEQUENCE_HEADER = "Cbs-Stream-Seq"  # the request's sequence in CBS_{service}
#: "1" when the inbox knows the request was delivered before: num_delivered > 1,
#: or the record of a run that died or failed. Absent otherwise.
REDELIVERED_HEADER = "Cbs-Redelivered"

#: Server-side expiry of one pull request, in seconds.
PULL_EXPIRES = 5.0
#: How long a delivery waits for a dedup store that does not answer before it
#: is put back (a JetStream leader election takes a few seconds).
STORE_PATIENCE = 10.0


class _Claim:
    __slots__ = ("revision", "written")

    def __init__(self, revision: int, written: float) -> None:
        self.revision = revision  # 0: no longer ours
        self.written = written  # loop time of the last write


class _Pull:
    __slots__ = ("batch", "description", "done", "received", "status")

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.received = 0
        self.done = asyncio.Event()
        self.status = ""
        self.description = ""


class DurableInbox:
    """Serves one durable verb of one served cell. ``start()`` ensures the
    streams and the consumer and begins pulling; ``stop()`` stops pulling and
    waits (bounded) for the handlers running."""

    def __init__(
        self, runtime: JetStreamRuntime, served: Served, handler: RawHandler, limit: int
    ) -> None:
        self.runtime = runtime
        self.served = served
        self.service = served.cell.service
        self.verb = served.endpoint.verb
        self.stream = stream_name(self.service)
        self.consumer = consumer_name(self.service, self.verb)
        self._handler = handler
        settings = runtime.settings
        self._max = settings.max_deliveries
        self._delay = settings.delay
        self._batch = settings.batch
        self.limit = limit
        self._period = max(settings.ack_wait / 3, 0.05)  # in-progress signals, claim refreshes
        #: A claim not refreshed for this long belongs to a run that died.
        self._stale = 2 * self._period
        self._store = (
            DedupStore(runtime.js, self.service, os.urandom(6).hex(), settings.publish_timeout)
            if settings.dedup_window > 0
            else None
        )
        self._claims: dict[str, _Claim] = {}  # dedup key -> our claim, while it runs here
        self._free = limit
        self._threshold = max(1, min(limit, settings.batch) // 2)
        self._room = asyncio.Event()
        self._room.set()
        self._freed = asyncio.Event()
        self._pulls: dict[str, _Pull] = {}  # reply subject -> pull, for its status
        self._current: _Pull | None = None
        self._running: dict[str, tuple[Msg, float]] = {}  # ack subject -> (msg, started)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sub: Subscription | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._inbox = ""
        self._next_subject = ""
        self._broken = False
        self.stopped = False
        #: Handlers running right now (for tests and stats).
        self.busy = 0
        self.peak = 0
        #: Deliveries settled without running (handled before), and runs flagged as redelivered.
        self.skipped = 0
        self.redelivered = 0

    def __repr__(self) -> str:
        return f"<DurableInbox {self.consumer} busy={self.busy}/{self.limit}>"

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.runtime.ensure_inbox(self.service, self.verb)
        nc = self.runtime.nc
        self._next_subject = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}"
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(f"{self._inbox}.*", cb=self._on_message)
        self._loops = [
            asyncio.create_task(self._pull_loop(), name=f"cbs-jetstream-pull-{self.consumer}"),
            asyncio.create_task(self._keep_alive(), name=f"cbs-jetstream-wpi-{self.consumer}"),
        ]
        log.info(
            "serving %s from consumer %s (up to %d at once)",
            self.served.subject,
            self.consumer,
            self.limit,
        )

    async def stop(self, timeout: float) -> None:
        """Stop pulling, let the messages already received run, wait up to
        ``timeout`` seconds for the handlers, then cancel what still runs (those
        messages are redelivered after ``ack_wait``)."""
        if self.stopped:
            return
        self.stopped = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                if self.runtime.nc.is_connected:
                    drained = sub.drain()  # type: ignore[no-untyped-call]
                    await asyncio.wait_for(drained, max(deadline - loop.time(), 0.01))
                else:
                    await sub.unsubscribe()
            except Exception as exc:  # stopping: never raise (timeout, connection gone)
                log.debug("inbox %s: unsubscribe: %s", self.consumer, exc)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=max(deadline - loop.time(), 0))
            if pending:
                log.warning(
                    "%s: %d durable handler(s) still running after %g s; they will be redelivered",
                    self.served.subject,
                    len(pending),
                    timeout,
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    # -- pulling ------------------------------------------------------------------------

    async def _pull_loop(self) -> None:
        nc = self.runtime.nc
        loop = asyncio.get_running_loop()
        expires = int(PULL_EXPIRES * 1e9)
        tokens = itertools.count(1)
        pause = 0.1
        while True:
            if self._broken:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                try:
                    await self.runtime.ensure_inbox(self.service, self.verb, again=True)
                except Exception as exc:
                    log.debug("inbox %s: not ready yet: %s", self.consumer, exc)
                    continue
                self._broken = False
            await self._room.wait()
            batch = min(self._free, self._batch)
            token = f"{self._inbox}.{next(tokens)}"
            pull = self._pulls[token] = self._current = _Pull(batch)
            request = orjson.dumps({"batch": batch, "expires": expires})
            reconnects = nc.stats["reconnects"]
            try:
                await nc.publish(self._next_subject, request, reply=token)
            except GONE:
                self._pulls.pop(token, None)
                self._current = None
                self._broken = True
                continue
            give_up = loop.time() + PULL_EXPIRES + 1.0
            while not pull.done.is_set():
                try:
                    await asyncio.wait_for(pull.done.wait(), 0.5)
                except TimeoutError:
                    if nc.stats["reconnects"] != reconnects or loop.time() > give_up:
                        break  # the server forgot it
            self._pulls.pop(token, None)
            if self._current is pull:
                self._current = None
            if pull.status == "503" or (pull.status == "409" and "Deleted" in pull.description):
                log.warning(
                    "inbox %s: %s %s; re-creating the consumer",
                    self.consumer,
                    pull.status,
                    pull.description or "no responders",
                )
                self._broken = True
            elif pull.status in ("400", "409") and pull.description:
                log.debug(
                    "inbox %s: pull ended: %s %s", self.consumer, pull.status, pull.description
                )
            else:
                pause = 0.1

    async def _on_message(self, msg: Msg) -> None:
        if not msg.reply:  # a status: 408 expired, 409 ..., 503 no responders, 100 heartbeat
            headers = msg.headers or {}
            status = headers.get("Status", "")
            if status == "100":
                return
            pull = self._pulls.pop(msg.subject, None)
            if pull is not None:
                pull.status = status
                pull.description = headers.get("Description", "")
                pull.done.set()
            return
        # A delivered message carries its stream subject, not the pull's inbox:
        # count it against the pull in progress (there is one at a time).
        pull = self._current
        if pull is not None:
            pull.received += 1
            if pull.received >= pull.batch:
                self._current = None
                pull.done.set()
        while self._free <= 0:  # only after a reconnect: an old pull still delivering
            self._freed.clear()
            await self._freed.wait()
        self._free -= 1
        if self._free < self._threshold:
            self._room.clear()
        self.busy += 1
        self.peak = max(self.peak, self.busy)
        task = start_eagerly(self._handle(msg), asyncio.get_running_loop())
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _release(self) -> None:
        self.busy -= 1
        self._free += 1
        self._freed.set()
        if self._free >= self._threshold:
            self._room.set()

    async def _keep_alive(self) -> None:
        period = self._period
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for msg, started in list(self._running.values()):
                if now - started >= period:
                    try:
                        await msg.in_progress()
                    except Exception as exc:
                        log.debug("inbox %s: in-progress signal: %s", self.consumer, exc)
            if self._store is not None:
                for key, claim in list(self._claims.items()):
                    if now - claim.written >= period / 2 and claim.revision:
                        await self._refresh(key, claim)

    async def _refresh(self, key: str, claim: _Claim) -> None:
        assert self._store is not None
        try:
            revision = await self._store.refresh(key, claim.revision)
        except STORE_ERRORS as exc:
            log.debug("inbox %s: claim of %s not refreshed: %s", self.consumer, key, exc)
            return
        if revision is None:
            log.warning(
                "%s: the claim of %s was taken over while its handler still runs here",
                self.served.subject,
                key,
            )
            claim.revision = 0  # no longer ours: stop refreshing it
            return
        claim.revision = revision
        claim.written = asyncio.get_running_loop().time()

    # -- one message --------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        ack_key = msg.reply
        loop = asyncio.get_running_loop()
        self._running[ack_key] = (msg, loop.time())
        key: str | None = None  # set when this delivery holds the claim
        try:
            meta = msg.metadata
            deliveries = meta.num_delivered
            seq = meta.sequence.stream
            redelivered = deliveries > 1
            if self._store is not None:
                wanted = dedup_key((msg.headers or {}).get("Nats-Msg-Id"), msg.data, seq)
                verdict = await self._claim(msg, wanted)
                if verdict is None:
                    return  # settled without running: done before, or put back
                key = wanted
                redelivered = redelivered or verdict
            if deliveries > self._max:
                error = Internal(
                    "Delivery limit reached", details={"deliveries": deliveries, "max": self._max}
                )
                reply = self._error_reply(msg.data, error)
                await self._dead_letter(msg, reply, deliveries, seq, key)
                return
            headers: dict[str, str] = dict(msg.headers) if msg.headers else {}
            headers[DELIVERY_HEADER] = str(deliveries)
            headers[SEQUENCE_HEADER] = str(seq)
            if redelivered:
                headers[REDELIVERED_HEADER] = "1"
                self.redelivered += 1
            outcome = await self._handler(msg.data, headers)
            if outcome.ok:
                if key is not None and self._store is not None:
                    try:
                        await self._store.finish(key, DONE)
                    except CbsError as exc:
                        log.warning(
                            "%s: %s handled but not recorded (%s); it will run again, flagged",
                            self.served.subject,
                            key,
                            exc,
                        )
                        return
                await msg.ack()
                return
            if outcome.code == "BadRequest" or deliveries >= self._max:
                reply = outcome.reply or self._error_reply(msg.data, outcome.error or Internal())
                await self._dead_letter(msg, reply, deliveries, seq, key)
            else:
                if key is not None and self._store is not None:
                    try:
                        await self._store.finish(key, FAILED)
                    except CbsError as exc:  # the claim stays: the retry takes it over
                        log.debug(
                            "inbox %s: failure of %s not recorded: %s", self.consumer, key, exc
                        )
                await msg.nak(delay=self._delay(deliveries))
        except GONE:
            log.warning(
                "%s: connection lost before the ack; the message will be redelivered",
                self.served.subject,
            )
        except Exception:
            log.exception("%s: durable delivery failed", self.served.subject)
        finally:
            del self._running[ack_key]
            if key is not None:
                self._claims.pop(key, None)
            self._release()

    async def _store_back(self, msg: Msg, began: float) -> bool:
        """Wait for the dedup store while it does not answer (its stream's
        leader is being elected on a cluster), keeping the message with
        in-progress signals instead of putting it back: a put-back counts as
        a delivery, and an election of a few seconds would use them all up.
        ``False`` once ``STORE_PATIENCE`` seconds have passed."""
        if asyncio.get_running_loop().time() - began >= STORE_PATIENCE:
            return False
        try:
            await msg.in_progress()
        except Exception as exc:  # the connection itself is gone: put it back
            log.debug("inbox %s: in-progress signal: %s", self.consumer, exc)
            return False
        await asyncio.sleep(0.25)
        return True

    async def _claim(self, msg: Msg, key: str) -> bool | None:
        """Claim ``key`` for this delivery: ``False`` (a first run), ``True``
        (taken over from an earlier run that died or failed: flag it), or
        ``None`` when the message was settled here without running (acked:
        handled before; put back: another run holds it, or the store did not
        answer)."""
        store = self._store
        assert store is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        tries = 0
        while tries < 3:  # a store that does not answer is waited for apart
            tries += 1
            try:
                revision, record = await store.claim(key)
                if revision is not None:
                    self._claims[key] = _Claim(revision, loop.time())
                    return False
                if record is None:
                    continue  # expired between the two calls: claim again
                if record.state in (DONE, DEAD):
                    await msg.ack()
                    self.skipped += 1
                    return None
                if key in self._claims:  # running here right now (a redelivery after a crash)
                    await self._put_back(msg, self.runtime.settings.ack_wait)
                    return None
                age = time.time() - record.at
                if record.state == RUN and record.owner != store.owner and age < self._stale:
                    await self._put_back(msg, self._stale - age + 0.05)  # alive elsewhere
                    return None
                # A claim whose run died (no refresh for a while, or an earlier
                # run of this inbox), or a failed run: take it over.
                revision = await store.take_over(key, record)
            except STORE_ERRORS as exc:
                if not isinstance(exc, nats.js.errors.NoStreamResponseError) and (
                    await self._store_back(msg, began)
                ):
                    tries -= 1  # waited for the store (a leader election): ask again
                    continue
                log.warning(
                    "%s: the record of %s is not readable (%s); putting it back",
                    self.served.subject,
                    key,
                    exc,
                )
                if isinstance(exc, nats.js.errors.NoStreamResponseError):
                    self._broken = True  # the bucket is gone: the pull loop makes it again
                    if self._current is not None:
                        self._current.done.set()  # at once, not when the pull expires
                await self._put_back(msg, self._delay(msg.metadata.num_delivered))
                return None
            if revision is not None:
                self._claims[key] = _Claim(revision, loop.time())
                return True
        await self._put_back(msg, self._period)
        return None

    async def _put_back(self, msg: Msg, delay: float) -> None:
        try:
            await msg.nak(delay=delay)
        except Exception as exc:  # redelivered after ack_wait anyway
            log.debug("inbox %s: nak: %s", self.consumer, exc)

    def _error_reply(self, data: bytes, error: CbsError) -> Envelope:
        """An error reply to the stored request (or, if it does not decode, to
        a stand-in request with the endpoint's schema)."""
        cell, endpoint = self.served.cell, self.served.endpoint
        try:
            request = codec.decode(data)
        except CbsError:
            request = Envelope.request(self.service, self.verb, {}, schema=endpoint.schema)
        return request.error_reply(error, schema=cell.error_schema)

    async def _dead_letter(
        self, msg: Msg, reply: Envelope, deliveries: int, seq: int, key: str | None
    ) -> None:
        """Store the request in ``CBS_DLQ_{service}`` with the error, record it
        as dead, then term it. If storing fails, nak it: it comes back, past
        the limit, and is tried again (without running the handler)."""
        error = reply.to_dict()
        headers = {
            k: v for k, v in (msg.headers or {}).items() if not k.startswith(("Nats-", "Cbs-"))
        }
        headers.update(dead_letter_headers(self.stream, seq, msg.subject, error, deliveries))
        try:
            await publish_stored(
                self.runtime.js,
                dlq_subject(self.service, self.verb),
                msg.data,
                headers,
                timeout=self.runtime.settings.publish_timeout,
                on_no_stream=lambda: self.runtime.ensure_inbox(self.service, self.verb, again=True),
            )
        except CbsError as exc:
            log.error(
                "%s: dead letter of stream sequence %d not stored (%s); retrying later",
                self.served.subject,
                seq,
                exc,
            )
            await msg.nak(delay=self._delay(deliveries))
            return
        if key is not None and self._store is not None:
            try:
                await self._store.finish(key, DEAD)
            except CbsError as exc:  # stored as a dead letter: the term still holds
                log.debug("inbox %s: dead letter of %s not recorded: %s", self.consumer, key, exc)
        await msg.term()
        target = (self.service, self.verb)
        dead = self.runtime.dead_lettered
        dead[target] = dead.get(target, 0) + 1
        err = error.get("error") or {}
        log.warning(
            "%s: envelope %s (sequence %d) dead-lettered at delivery %d: %s: %s",
            self.served.subject,
            error.get("id"),
            seq,
            deliveries,
            err.get("code"),
            err.get("message"),
        )
        try:
            self.runtime.body.plugin_manager.hook.cbs_jetstream_dead_lettered(
                body=self.runtime.body,
                subject=self.served.subject,
                envelope_id=error.get("id"),
                error=dict(err),
                deliveries=deliveries,
            )
        except Exception:
            log.exception("%s: a cbs_jetstream_dead_lettered hook failed", self.served.subject)


#: Headers of a dead letter (its data is the request envelope as stored).
ERROR_HEADER = "Cbs-Error"  # the error reply envelope, JSON (ASCII)
DELIVERIES_HEADER = "Cbs-Deliveries"
STREAM_HEADER = "Cbs-Stream"
STREAM_SEQ_HEADER = "Cbs-Stream-Seq"
SUBJECT_HEADER = "Cbs-Subject"


def dead_letter_headers(
    stream: str, seq: int, subject: str, error_reply: Mapping[str, Any], deliveries: int
) -> dict[str, str]:
    return {
        # Dead-lettering the same stored message twice (a crash between storing
        # the dead letter and the term) stores it once, inside the window.
        "Nats-Msg-Id": f"{stream}.{seq}.dlq",
        ERROR_HEADER: json.dumps(error_reply, ensure_ascii=True, separators=(",", ":")),
        DELIVERIES_HEADER: str(deliveries),
        STREAM_HEADER: stream,
        STREAM_SEQ_HEADER: str(seq),
        SUBJECT_HEADER: subject,
    }
