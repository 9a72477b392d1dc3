"""The supervisor: groups of worker processes, kept at their size, healed and
restarted one by one. The shape follows gunicorn's arbiter (spawn, reap,
murder workers that stop beating, ``SIGHUP`` to replace every worker) and
Celery's autoscaler (the size of a group changes at run time; shrinking
stops the extra workers the graceful way, so they drain first).

Each worker is told a pipe (``CBS_POOL_HEARTBEAT_FD``) to write heartbeat
lines to: one JSON object per line, ``{"state": "serving", "busy": 0,
"queue": 0}``, every ``CBS_POOL_HEARTBEAT`` seconds. A worker that misses
them for ``heartbeat_timeout`` seconds is killed and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence

import attrs
import orjson

from cbs.pool.settings import HEARTBEAT_EVERY, HEARTBEAT_FD, WORKER_ENV, Settings
from cbs.pool.stats import GroupStats, PoolStats

__all__ = ["WORKER_ENV", "Group", "Settings", "Supervisor", "Worker"]

log = logging.getLogger("cbs.pool")


@attrs.define(eq=False)
class Worker:
    group: Group
    proc: asyncio.subprocess.Process
    started: float
    last_beat: float
    state: str = "starting"  # starting, serving, draining
    retiring: bool = False  # rolling restart: replaced once a new one serves
    stopping: bool = False  # asked to stop: its exit is no failure
    stop_deadline: float = 0.0
    busy: int = 0
    queue: int = 0
    exited: asyncio.Event = attrs.field(factory=asyncio.Event)

    @property
    def pid(self) -> int:
        return self.proc.pid


@attrs.define(eq=False)
class Group:
    """Identical workers: one command, ``desired`` copies of it."""

    name: str
    command: Sequence[str]
    cells: tuple[str, ...]
    services: tuple[str, ...]
    desired: int
    language: str = "python"
    env: Mapping[str, str] = attrs.field(factory=dict)
    heartbeat: bool = True
    workers: list[Worker] = attrs.field(factory=list)
    restarts: int = 0
    failures: int = 0  # quick exits in a row
    next_start: float = 0.0
    crash_loop: bool = False

    def active(self) -> list[Worker]:
        return [w for w in self.workers if not w.stopping and not w.retiring]


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor(PoolStats):
    """Runs the groups until ``stop`` is set, then stops every worker (drain first)."""

    def __init__(
        self, groups: Sequence[Group], settings: Settings, pool_id: str, *, tick: float = 0.1
    ) -> None:
        self._groups = list(groups)
        self.settings = settings
        self._pool_id = pool_id
        self._tick = tick
        self._tasks: set[asyncio.Task[None]] = set()
        self._rolling: asyncio.Task[None] | None = None
        self.on_change: Callable[[], None] = lambda: None

    # -- PoolStats ----------------------------------------------------------------------

    @property
    def pool_id(self) -> str:
        return self._pool_id

    def _group_stats(self, group: Group) -> GroupStats:
        serving = [w for w in group.workers if w.state == "serving" and not w.stopping]
        if group.crash_loop:
            state = "crash-loop"
        elif len(serving) >= group.desired:
            state = "ok"
        elif any(w.state == "starting" for w in group.workers):
            state = "starting"
        else:
            state = "degraded"
        return GroupStats(
            name=group.name,
            pool=self._pool_id,
            language=group.language,
            cells=group.cells,
            services=group.services,
            workers=group.desired,
            alive=len(group.workers),
            serving=len(serving),
            restarts=group.restarts,
            busy=sum(w.busy for w in group.workers),
            queue=sum(w.queue for w in group.workers),
            state=state,
            pids=tuple(w.pid for w in group.workers),
        )

    def groups(self) -> list[GroupStats]:
        return [self._group_stats(g) for g in self._groups]

    # -- control ----------------------------------------------------------------------

    def add(self, group: Group) -> None:
        """Supervise one more group (started at the next tick)."""
        self._groups.append(group)

    def remove(self, group: Group) -> None:
        """Stop supervising a group whose workers are all gone."""
        self._groups.remove(group)

    def named(self, name: str) -> Group | None:
        return next((g for g in reversed(self._groups) if g.name == name), None)

    def find(self, service: str) -> Group | None:
        """The group serving ``service`` (or named so: a sidecar's id)."""
        for group in self._groups:
            if service in group.services or service == group.name:
                return group
        return None

    def scale(self, group: Group, replicas: int) -> None:
        log.info("%s scaled from %d to %d workers", group.name, group.desired, replicas)
        group.desired = replicas

    def rolling_restart(self) -> None:
        """Replace every worker, one at a time (``SIGHUP``)."""
        if self._rolling is not None and not self._rolling.done():
            log.info("a rolling restart is already under way")
            return
        self._rolling = asyncio.ensure_future(self._roll())

    async def _roll(self) -> None:
        log.info("rolling restart")
        for group in self._groups:
            for old in [w for w in group.active() if w.state == "serving"]:
                old.retiring = True  # the next tick starts its replacement
                deadline = time.monotonic() + self.settings.start_timeout
                while time.monotonic() < deadline:
                    serving = [w for w in group.active() if w.state == "serving"]
                    if len(serving) >= group.desired or old.exited.is_set():
                        break
                    await asyncio.sleep(self._tick)
                else:
                    log.error(
                        "rolling restart of %s stopped: no new worker served within %g s",
                        group.name,
                        self.settings.start_timeout,
                    )
                    old.retiring = False
                    return
                self._stop_worker(old)
        log.info("rolling restart done")

    # -- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self._step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._tick)
        finally:
            if self._rolling is not None:
                self._rolling.cancel()
            await self.stop_all()

    async def _step(self) -> None:
        now = time.monotonic()
        for group in self._groups:
            active = group.active()
            missing = group.desired - len(active)
            if missing > 0 and now >= group.next_start:
                for _ in range(missing if group.failures == 0 else 1):
                    await self._spawn(group)
                if group.failures:
                    group.next_start = now + self._backoff(group)
            elif missing < 0:
                # Shrink: the newest first, those not serving yet before them.
                ordered = sorted(active, key=lambda w: (w.state == "serving", -w.started))
                for worker in ordered[:-missing]:
                    self._stop_worker(worker)
            self._check_health(group, now)

    def _backoff(self, group: Group) -> float:
        s = self.settings
        return float(min(s.backoff * 2 ** max(group.failures - 1, 0), s.backoff_max))

    def _check_health(self, group: Group, now: float) -> None:
        s = self.settings
        for worker in group.workers:
            if worker.stopping:
                if now > worker.stop_deadline and worker.proc.returncode is None:
                    log.warning(
                        "worker %d of %s did not drain in time: killed", worker.pid, group.name
                    )
                    self._kill(worker)
                continue
            if (
                group.crash_loop
                and worker.state == "serving"
                and now - worker.started > s.min_uptime
            ):
                group.crash_loop, group.failures = False, 0
                log.info("%s recovered from its crash loop", group.name)
            if not group.heartbeat:
                continue
            limit = s.start_timeout if worker.state == "starting" else s.heartbeat_timeout
            if now - worker.last_beat > limit:
                log.error(
                    "worker %d of %s sent no heartbeat for %g s: killed",
                    worker.pid,
                    group.name,
                    limit,
                )
                worker.last_beat = now  # once
                self._kill(worker)

    @staticmethod
    def _kill(worker: Worker) -> None:
        with contextlib.suppress(ProcessLookupError):
            worker.proc.kill()

    def _stop_worker(self, worker: Worker) -> None:
        """Graceful stop: SIGTERM, the worker's body drains, then it exits."""
        if worker.stopping:
            return
        worker.stopping = True
        worker.stop_deadline = time.monotonic() + self.settings.stop_timeout
        log.info("stopping worker %d of %s (draining)", worker.pid, worker.group.name)
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signal.SIGTERM)

    async def _spawn(self, group: Group) -> Worker | None:
        env = {**os.environ, **group.env}
        pass_fds: tuple[int, ...] = ()
        read_fd = write_fd = -1
        if group.heartbeat:
            read_fd, write_fd = os.pipe()
            env[HEARTBEAT_FD] = str(write_fd)
            env[HEARTBEAT_EVERY] = str(self.settings.heartbeat)
            pass_fds = (write_fd,)
        try:
            proc = await asyncio.create_subprocess_exec(
                *group.command,
                env=env,
                pass_fds=pass_fds,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # signals reach workers only from here
            )
        except OSError as exc:
            if group.heartbeat:
                os.close(read_fd)
                os.close(write_fd)
            log.error("%s: cannot start %s: %s", group.name, group.command[0], exc)
            group.failures += 1
            group.restarts += 1
            self._report_loop(group)
            group.next_start = time.monotonic() + self._backoff(group)
            return None
        now = time.monotonic()
        worker = Worker(group, proc, now, now, state="starting" if group.heartbeat else "serving")
        group.workers.append(worker)
        log.info("started worker %d of %s", proc.pid, group.name)
        if group.heartbeat:
            os.close(write_fd)
            self._track(self._read_beats(worker, read_fd))
        self._track(self._reap(worker))
        return worker

    def _track(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_beats(self, worker: Worker, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
        )
        try:
            while line := await reader.readline():
                try:
                    beat = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(beat, dict):
                    continue
                worker.last_beat = time.monotonic()
                state = beat.get("state")
                if state in ("serving", "draining") and worker.state != state:
                    worker.state = state
                    if state == "serving":
                        log.info("worker %d of %s serves", worker.pid, worker.group.name)
                    self.on_change()
                worker.busy = int(beat.get("busy", 0) or 0)
                worker.queue = int(beat.get("queue", 0) or 0)
        finally:
            transport.close()

    async def _reap(self, worker: Worker) -> None:
        code = await worker.proc.wait()
        group = worker.group
        group.workers.remove(worker)
        worker.exited.set()
        self.on_change()
        if worker.stopping:
            log.info("worker %d of %s stopped (%s)", worker.pid, group.name, _exit_text(code))
            return
        now = time.monotonic()
        uptime = now - worker.started
        group.restarts += 1
        if uptime >= self.settings.min_uptime:
            group.failures, delay = 0, 0.0
        else:
            group.failures += 1
            delay = self._backoff(group)
        group.next_start = max(group.next_start, now + delay)
        log.warning(
            "worker %d of %s exited (%s) after %.1f s; restarting in %g s",
            worker.pid,
            group.name,
            _exit_text(code),
            uptime,
            delay,
        )
        self._report_loop(group)

    def _report_loop(self, group: Group) -> None:
        if group.failures >= self.settings.crash_loop_after and not group.crash_loop:
            group.crash_loop = True
            log.error(
                "%s is crash-looping: %d quick exits in a row; backing off (%g s now, up to %g s)",
                group.name,
                group.failures,
                self._backoff(group),
                self.settings.backoff_max,
            )

    async def stop_all(self) -> None:
        """Stop every worker the graceful way; kill those that outlast ``stop_timeout``."""
        workers = [w for g in self._groups for w in g.workers]
        for worker in workers:
            self._stop_worker(worker)
        deadline = time.monotonic() + self.settings.stop_timeout
        for worker in workers:
            left = deadline - time.monotonic()
            try:
                await asyncio.wait_for(worker.exited.wait(), max(left, 0.01))
            except TimeoutError:
                log.warning("worker %d did not stop in time: killed", worker.pid)
                self._kill(worker)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.exited.wait(), 5)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
