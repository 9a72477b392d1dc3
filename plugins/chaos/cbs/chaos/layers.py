"""The fault-injection middleware, client side and server side.

Each endpoint's layer holds a :class:`View`: the rules that target it (side,
subject and cell are fixed per endpoint), recomputed by :class:`ChaosState`
whenever the rules change. Per request, the layer's only work when no rule
targets the endpoint is one attribute test; it then returns the next
handler's awaitable itself, adding no coroutine frame.

With rules, every rule that hits a request (its headers match and the dice
say so) applies in order: delays add up, and the first abort or drop ends
the request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cbs.chaos.rules import Rule
from cbs.chaos.state import ChaosState, View
from cbs.contracts import Envelope, Timeout
from cbs.kernel import ClientHandler, Served, ServerHandler, Target

__all__ = ["ChaosState", "View", "client_layer", "server_layer", "DEADLINE_HEADER"]

#: The deadline header the resilience plugin sends (absolute Unix time); a
#: dropped reply is held until then on the server side.
DEADLINE_HEADER = "cbs-deadline"

Sleep = Callable[[float], Awaitable[None]]


def _plan(
    rules: tuple[Rule, ...], headers: Mapping[str, str] | None, rng: Callable[[], float]
) -> tuple[float, Rule | None]:
    """Seconds of delay, and the abort or drop rule that ends the request."""
    pause = 0.0
    for rule in rules:
        if rule.hits(headers, rng):
            if rule.fault == "delay":
                pause += rule.pause(rng)
            else:
                return pause, rule
    return pause, None


def client_layer(
    state: ChaosState,
    cell_of: Callable[[Target], str | None],
    sleep: Sleep = asyncio.sleep,
) -> Callable[[Target, ClientHandler], ClientHandler]:
    """Client middleware: faults as a caller would meet them on the way."""

    def factory(target: Target, call_next: ClientHandler) -> ClientHandler:
        view = state.view("client", target.subject, cell_of(target))
        subject = target.subject
        rng = state.rng

        def handler(
            request: Envelope, headers: dict[str, str], timeout: float
        ) -> Awaitable[Envelope]:
            if not view.rules:
                return call_next(request, headers, timeout)
            return faulted(request, headers, timeout)

        async def faulted(request: Envelope, headers: dict[str, str], timeout: float) -> Envelope:
            pause, end = _plan(view.rules, headers, rng)
            if pause:
                if pause >= timeout:
                    await sleep(timeout)
                    raise Timeout(f"No reply on {subject} within {timeout:g} s (injected delay)")
                await sleep(pause)
                timeout -= pause
            if end is None:
                return await call_next(request, headers, timeout)
            if end.fault == "abort":
                raise end.exception()
            # drop: the request goes out, its reply never comes back
            began = time.monotonic()
            try:
                await call_next(request, headers, timeout)
            except Exception:
                pass
            await sleep(max(0.0, timeout - (time.monotonic() - began)))
            raise Timeout(f"No reply on {subject} within {timeout:g} s (injected drop)")

        return handler

    return factory


def _hold_for(headers: Mapping[str, str] | None, rule: Rule, default: float) -> float:
    raw = headers.get(DEADLINE_HEADER) if headers else None
    if raw is not None:
        try:
            left = float(raw) - time.time()
        except ValueError:
            left = -1.0
        if left == left and 0 <= left <= 3600:
            return left + 0.05  # past the caller's deadline
    return rule.hold if rule.hold is not None else default


def server_layer(
    state: ChaosState, sleep: Sleep = asyncio.sleep
) -> Callable[[Served, ServerHandler], ServerHandler]:
    """Server middleware: faults as the serving body would cause them."""

    def factory(served: Served, call_next: ServerHandler) -> ServerHandler:
        view = state.view("server", served.subject, served.cell.id)
        rng = state.rng

        def handler(request: Envelope, headers: Mapping[str, str]) -> Awaitable[Envelope]:
            if not view.rules:
                return call_next(request, headers)
            return faulted(request, headers)

        async def faulted(request: Envelope, headers: Mapping[str, str]) -> Envelope:
            pause, end = _plan(view.rules, headers, rng)
            if pause:
                await sleep(pause)
            if end is None:
                return await call_next(request, headers)
            if end.fault == "abort":
                raise end.exception()
            # drop: the work is done, the reply is held past the caller's
            # deadline and then discarded (an error reply nobody waits for)
            try:
                await call_next(request, headers)
            except Exception:
                pass
            await sleep(_hold_for(headers, end, state.hold))
            raise Timeout("Reply dropped (injected drop)")

        return handler

    return factory


def describe(state: ChaosState) -> list[dict[str, Any]]:
    return [rule.to_dict() for rule in state.rules]
