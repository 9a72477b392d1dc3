"""Messages handed to a plain function as they are read, not queued for a task.

nats-py gives every subscription with a callback an ``asyncio.Queue`` and a
task: the read loop puts each message in the queue, and the task takes it out
and awaits the callback, one message at a time. CBS's own callbacks never
wait (serving starts the handler eagerly or queues the request in its bounded
``Intake``; a reply settles a future), so that queue, its task switch and the
coroutine around the callback are pure cost: about a tenth of a served
request's CPU on the responder, and some on the caller's reply inbox.

:class:`DirectDelivery` hands the messages of a subscription made with
:func:`subscribe_direct` to a plain function, in the read loop, as each one is
parsed, and :meth:`DirectDelivery.answer` replies to one with fewer checks.
nats-py's slow-consumer limits do not apply to them: what bounds them
is the function's (``Intake``'s limits for a served subject). Every other
subscription (JetStream's, a plugin's own) is nats-py's as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nats import errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["DirectDelivery", "Deliver", "subscribe_direct"]

#: Called with each message, in the read loop; it must not block.
Deliver = Callable[[Msg], None]


class DirectDelivery(Client):
    """nats-py's client, whose direct subscriptions skip the per-subscription
    queue and task."""

    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, Deliver] = {}
        # A class that reads the common header block without a coroutine
        # (cbs.nats._header_fix.FastHeaders) offers it: used when there.
        self._read_headers: Callable[[bytes], Any] | None = getattr(self, "_plain_headers", None)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        deliver = self._direct.get(sid)
        sub = self._subs.get(sid)
        if deliver is None or sub is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        # nats-py's _process_msg up to the queue, for a subscription with no
        # message limit, no JetStream and no request future (a direct one).
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        sub._received += 1
        hdr: Any = None
        if headers:
            read = self._read_headers
            hdr = read(headers) if read is not None else ...
            if hdr is ...:  # not a block the fast reader takes
                hdr = await self._process_headers(headers)
        msg = self._build_message(sid, subject, reply, data, hdr)
        try:
            deliver(msg)
        except Exception as exc:  # as nats-py treats a failing callback: an async error
            await self._error_cb(exc)

    async def answer(self, subject: str, payload: bytes) -> None:
        """Publish ``payload``, without headers, to ``subject``: the reply
        subject of a message this client read. nats-py's ``publish`` with
        the same checks but the subject's: the parser took it from a protocol
        line split on whitespace, so there is none in it."""
        if self.is_closed:
            raise errors.ConnectionClosedError
        if self.is_draining_pubs:
            raise errors.ConnectionDrainingError
        size = len(payload)
        if not self.is_connected and (
            self._max_pending_size <= 0 or size + self._pending_data_size > self._max_pending_size
        ):
            raise errors.OutboundBufferLimitError
        if size > self._max_payload:
            raise errors.MaxPayloadError
        await self._send_publish(subject, "", payload, size, None)

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._direct.pop(sid, None)
        super()._remove_sub(sid, max_msgs)


async def subscribe_direct(
    nc: Client, subject: str, deliver: Deliver, *, queue: str = "", **limits: Any
) -> Subscription:
    """Subscribe ``subject`` (in ``queue``, if given), handing each message to
    ``deliver``: directly on a :class:`DirectDelivery` client, else through
    nats-py's callback task (with ``limits``: its pending limits)."""
    if not isinstance(nc, DirectDelivery):

        async def callback(msg: Msg) -> None:
            deliver(msg)

        return await nc.subscribe(subject, queue=queue, cb=callback, **limits)
    sub = await nc.subscribe(subject, queue=queue)
    # What came while subscribe waited (if it did) sits in the subscription's
    # queue: hand it over first, in order; from here on, nothing is queued.
    pending = sub._pending_queue
    while not pending.empty():
        msg = pending.get_nowait()
        pending.task_done()  # drain() joins this queue
        sub._pending_size -= len(msg.data)
        deliver(msg)
    nc._direct[sub._id] = deliver
    return sub
