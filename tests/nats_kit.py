"""Helpers for tests that use plain nats-py clients (as foreign clients do)."""

from __future__ import annotations

from typing import Any


async def server_has_it(nc: Any) -> None:
    """Return once the server has handled every command ``nc`` sent so far
    (a SUB, say). A plain nats-py client's ``flush()`` may answer before: its
    PING overtakes a SUB still queued for the flusher task (see
    cbs/nats/_ordered_ping.py, which CBS's own client uses). By the time the
    first PONG is back the flusher has written that SUB, and the second PING
    follows it."""
    await nc.flush()
    await nc.flush()
