"""The in-process bus of the built-in ``local`` plugin (:mod:`cbs.kernel.local`).

Same protocol as any transport: encoded envelopes, queue groups (round-robin
among the members of a group), timeouts, ``NotFound`` when nobody serves a
subject. A request runs its handler in the caller's task, so it costs no
thread hop or context switch. It is the transport when no other is installed.

Under load it behaves as any transport (:class:`~cbs.kernel.transport.Intake`):
up to ``max_concurrency`` handlers run, up to ``max_pending`` requests wait
(a caller that gives up leaves the queue: its work is not done), the rest
get an ``Unavailable`` reply at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from cbs.contracts import (
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_PENDING_BYTES,
    NotFound,
    RawHandler,
    ReplyCheck,
    Timeout,
    Unavailable,
)
from cbs.kernel.capabilities import TransportState
from cbs.kernel.transport import Intake, drive, error_reply, expired

__all__ = ["LocalBus"]


#: A request waiting for a slot: its turn (set to ``None`` to run, or to the
#: reply bytes when answered without running) and its bytes.
_Waiting = tuple[asyncio.Future[bytes | None], bytes]


class _Member:
    """One subscription: a handler and its intake (running and waiting requests)."""

    def __init__(
        self, bus: LocalBus, subject: str, queue: str, handler: RawHandler, intake: Intake[_Waiting]
    ) -> None:
        self._bus = bus
        self.subject = subject
        self.queue = queue
        self._handler = handler
        self._intake = intake

    async def call(self, data: bytes, headers: Mapping[str, str] | None) -> bytes:
        intake = self._intake
        if not intake.try_run():
            turn: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
            waiting = (turn, data)
            if not intake.try_queue(waiting, len(data)):
                return intake.refusal(data)
            try:
                answered = await turn
            except asyncio.CancelledError:  # the caller gave up
                if not intake.withdraw(waiting) and turn.done() and not turn.cancelled():
                    self._pass_on(intake.finished())  # the slot was ours: hand it on
                raise
            if answered is not None:  # given up on while waiting (stopping)
                return answered
            if expired(headers):
                self._pass_on(intake.finished())
                return error_reply(data, self.subject, Timeout("Deadline passed while waiting"))
        started = intake.clock()
        try:
            outcome = await self._handler(data, dict(headers) if headers else None)
            return outcome.data
        finally:
            self._pass_on(intake.finished(started))

    @staticmethod
    def _pass_on(waiting: _Waiting | None) -> None:
        if waiting is not None:
            waiting[0].set_result(None)

    async def stop(self) -> None:
        self._bus._remove(self)
        try:
            await self._intake.idle()
        except asyncio.CancelledError:  # the body gave up waiting: answer those waiting
            refusal = Unavailable("The service is stopping")
            for turn, data in self._intake.take_waiting():
                turn.set_result(error_reply(data, self.subject, refusal))
            raise


class LocalBus(TransportState):
    """A bus whose parties all live in this process. Its own
    :class:`TransportState`: always receiving, never a wrong reply."""

    name = "local"
    shared = False

    def __init__(self) -> None:
        # subject -> queue group -> members; and a round-robin counter per group
        self._routes: dict[str, dict[str, list[_Member]]] = {}
        self._turn: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[bytes]] = set()
        self._refused = 0

    async def start(self) -> None:
        pass

    def _pick(self, subject: str, queue: str, members: list[_Member]) -> _Member:
        key = (subject, queue)
        turn = self._turn.get(key, 0)
        self._turn[key] = turn + 1
        return members[turn % len(members)]

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        check: ReplyCheck | None = None,
    ) -> Any:
        groups = self._routes.get(subject)
        if not groups:
            raise NotFound(f"No cell serves {subject}")
        queue, members = next(iter(groups.items()))
        call = self._pick(subject, queue, members).call(data, headers)
        # Most handlers never wait: run at once, and pay for a timer only if it does.
        try:
            waiting = call.send(None)
        except StopIteration as done:
            reply: bytes = done.value
        else:
            try:
                async with asyncio.timeout(timeout):
                    reply = await drive(call, waiting)
            except TimeoutError:
                raise Timeout(f"No reply on {subject} within {timeout:g} s") from None
        # The handler is the kernel's own server path: its reply always matches.
        return reply if check is None else check(reply)

    async def publish(
        self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        for queue, members in self._routes.get(subject, {}).items():
            task = asyncio.create_task(self._pick(subject, queue, members).call(data, headers))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def refused_requests(self) -> int:
        return self._refused

    def _count_refusal(self) -> None:
        self._refused += 1

    async def serve(
        self,
        subject: str,
        queue: str,
        handler: RawHandler,
        *,
        max_concurrency: int,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> _Member:
        intake: Intake[_Waiting] = Intake(
            subject,
            max_concurrency=max_concurrency,
            max_pending=max_pending,
            max_pending_bytes=max_pending_bytes,
            on_refused=self._count_refusal,
        )
        member = _Member(self, subject, queue, handler, intake)
        self._routes.setdefault(subject, {}).setdefault(queue, []).append(member)
        return member

    def _remove(self, member: _Member) -> None:
        groups = self._routes.get(member.subject, {})
        members = groups.get(member.queue, [])
        if member in members:
            members.remove(member)
        if not members:
            groups.pop(member.queue, None)
        if not groups:
            self._routes.pop(member.subject, None)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def capabilities(self) -> Sequence[object]:
        return (self,)
