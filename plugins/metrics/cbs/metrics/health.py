"""What ``/healthz`` and ``/readyz`` read: the lifecycle of one body, and
the test of readiness. No prometheus_client here: a body that serves no
endpoint never imports it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from cbs.kernel import Body, TransportState

__all__ = ["Health", "readiness", "alive", "LIVENESS_TIMEOUT"]

#: How long /healthz waits for the event loop to answer, in seconds.
LIVENESS_TIMEOUT = 2.0


class Health:
    """What the lifecycle hooks tell about one body."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started: set[str] = set()  # cells whose endpoints are all served
        self.stopping = False
        self.since = time.time()

    def reset(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.started.clear()
        self.stopping = False
        self.since = time.time()


def readiness(body: Body, health: Health) -> tuple[bool, dict[str, Any]]:
    """Ready: started (not stopping), connected to the bus, no start still
    going on (``Body.not_ready``), and every cell it serves registered on it.
    Also the reasons, for the reply body."""
    bus = body.bus
    state = "stopping" if health.stopping and body.state == "started" else body.state
    # Every transport offers a TransportState: whether messages reach us now.
    transport = body.capabilities.get(TransportState)
    connected = bus is not None and (transport is None or transport.receiving)
    cells = {
        cell.id: "registered" if cell.id in health.started else "starting"
        for cell in body.served_cells
    }
    holds = list(body.readiness_holds)
    ready = (
        state == "started"
        and connected
        and not holds
        and all(v == "registered" for v in cells.values())
    )
    return ready, {
        "ready": ready,
        "state": state,
        **({"waiting_for": holds} if holds else {}),
        "bus": {"transport": bus.name if bus is not None else None, "connected": connected},
        "cells": cells,
    }


def alive(health: Health, timeout: float = LIVENESS_TIMEOUT) -> bool:
    """Whether the body's event loop runs a callback within ``timeout``."""
    loop = health.loop
    if loop is None or loop.is_closed():
        return False
    answered = threading.Event()
    try:
        loop.call_soon_threadsafe(answered.set)
    except RuntimeError:  # the loop closed meanwhile
        return False
    return answered.wait(timeout)
