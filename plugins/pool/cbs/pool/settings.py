"""A pool's settings and what a supervisor tells its workers through their
environment: plain values, so that the entry point can read them without
importing the supervisor (and asyncio)."""

from __future__ import annotations

import attrs

__all__ = ["HEARTBEAT_EVERY", "HEARTBEAT_FD", "WORKER_ENV", "Settings"]

#: What a worker's environment says so that it serves instead of supervising.
WORKER_ENV = {"CBS_WORKERS": "0", "CBS_REPLICAS": "", "CBS_POOL_FILE": ""}

#: Environment a worker finds its heartbeat pipe and interval in.
HEARTBEAT_FD = "CBS_POOL_HEARTBEAT_FD"
HEARTBEAT_EVERY = "CBS_POOL_HEARTBEAT"


@attrs.frozen
class Settings:
    heartbeat: float = 1.0
    heartbeat_timeout: float = 10.0
    #: How long a new worker may take to say it serves.
    start_timeout: float = 60.0
    #: First restart delay after a quick exit; doubles per quick exit, up to ``backoff_max``.
    backoff: float = 0.5
    backoff_max: float = 30.0
    #: A worker that exits sooner than this after starting counts as a quick exit.
    min_uptime: float = 5.0
    #: This many quick exits in a row is a crash loop (reported; backoff goes on).
    crash_loop_after: int = 3
    #: How long a stopping worker may drain before it is killed.
    stop_timeout: float = 15.0
