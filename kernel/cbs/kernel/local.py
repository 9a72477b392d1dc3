"""Built-in plugin ``local``: an in-process bus.

Same protocol as any transport: encoded envelopes, queue groups (round-robin
among the members of a group), timeouts, ``NotFound`` when nobody serves a
subject. A request runs its handler in the caller's task, so it costs no
thread hop or context switch. It is the transport when no other is installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from cbs.contracts import NotFound, RawHandler, ReplyCheck, Timeout
from cbs.kernel.capabilities import TransportState
from cbs.kernel.config import Config
from cbs.kernel.plugins import hookimpl
from cbs.kernel.registries import TransportRegistry
from cbs.kernel.transport import drive

__all__ = ["LocalBus"]


class _Member:
    """One subscription: a handler, its concurrency limit and in-flight count."""

    def __init__(self, bus: LocalBus, subject: str, queue: str, handler: RawHandler, limit: int):
        self._bus = bus
        self.subject = subject
        self.queue = queue
        self._handler = handler
        self._slots = asyncio.Semaphore(limit)
        self._in_flight = 0
        self._idle: asyncio.Event | None = None

    async def call(self, data: bytes, headers: Mapping[str, str] | None) -> bytes:
        async with self._slots:
            self._in_flight += 1
            try:
                outcome = await self._handler(data, dict(headers) if headers else None)
                return outcome.data
            finally:
                self._in_flight -= 1
                if self._in_flight == 0 and self._idle is not None:
                    self._idle.set()

    async def stop(self) -> None:
        self._bus._remove(self)
        if self._in_flight:
            self._idle = asyncio.Event()
            await self._idle.wait()


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

    async def serve(
        self, subject: str, queue: str, handler: RawHandler, *, max_concurrency: int
    ) -> _Member:
        member = _Member(self, subject, queue, handler, max_concurrency)
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


def _make_local_bus(config: Config) -> LocalBus:
    return LocalBus()


@hookimpl
def cbs_register_transports(transports: TransportRegistry) -> None:
    transports.add("local", _make_local_bus, priority=0)
