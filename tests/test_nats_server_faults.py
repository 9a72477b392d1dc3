"""The private nats-server under faults: a busy port, a child that dies at
start or while serving, ``kill -9`` of its owner (stale work folders, orphaned
children). Real nats-server processes and real ``cbs`` subprocesses, all
stopped by pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cbs_process import CLI, CbsProcess, alive, wait_gone

from cbs.contracts import Unavailable
from cbs.nats.server import NatsServer, free_port, remove_stale_workdirs

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}
ENV["CBS_PLUGINS"] = "nats"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


# -- a busy port, a child that exits ------------------------------------------------------


def test_cbs_server_on_a_busy_port_fails_with_one_line(nats_server: Any) -> None:
    done = subprocess.run(
        [*CLI, "server", "--port", str(nats_server.port)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""  # never "ready"
    assert done.stderr.splitlines() == [
        f"Unavailable: port {nats_server.port} on 127.0.0.1 is already in use"
    ]
    assert alive(nats_server.pid)  # the server already there is untouched


def test_a_fixed_port_taken_by_a_plain_listener_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = NatsServer(port)
        with pytest.raises(Unavailable, match=f"port {port} on 127.0.0.1 is already in use"):
            server.start()
        assert server.process is None and server.workdir is None


def test_an_embedded_server_whose_chosen_port_was_taken_moves_to_another() -> None:
    server = NatsServer()  # chooses a free port now, as a body's embedded server does
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.port))
        taken.listen()
        lost = server.port
        server.start()
        try:
            assert server.port != lost and alive(server.pid or 0)
        finally:
            server.stop()


def test_a_child_that_exits_at_start_is_reported_and_cleaned_up(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    server = NatsServer(store=not_a_folder / "store")
    with pytest.raises(Unavailable, match=r"nats-server on port \d+ exited: .*storage directory"):
        server.start()
    assert server.process is None and server.workdir is None
    assert server.exit_reason() is None


def test_cbs_server_exits_with_one_line_when_its_nats_server_dies(
    processes: list[CbsProcess],
) -> None:
    port = free_port()
    proc = CbsProcess("server", "--port", str(port), env=ENV)
    processes.append(proc)
    pid = int(proc.wait_for(r"ready at \S+ \(pid (\d+)\)", stdout=True).group(1))
    os.kill(pid, signal.SIGKILL)
    code = proc.popen.wait(10)  # noticed by polling every 0.2 s
    _, _, err = proc.stop()
    assert code == 1
    assert err.splitlines() == [f"Unavailable: nats-server (pid {pid}) exited with signal 9"]


# -- kill -9 of the owner ------------------------------------------------------------------

OWNER = textwrap.dedent(
    """
    import json, sys, time
    from cbs.nats.server import NatsServer
    server = NatsServer().start()
    print(json.dumps({"workdir": str(server.workdir), "pid": server.pid}), flush=True)
    time.sleep(600)
    """
)


def start_owner(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, int]:
    """A Python process that starts an embedded server in ``tmp_path`` (as
    ``TMPDIR``) and waits; returns it, the work folder and the server's pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER],
        env={**ENV, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    started = json.loads(proc.stdout.readline())
    return proc, Path(started["workdir"]), int(started["pid"])


def test_a_server_starts_beside_a_tracer_provider_and_its_fork_hooks() -> None:
    # OpenTelemetry's TracerProvider registers an at-fork hook that starts a
    # thread pool in the child. Had the child run the parent's hooks (as a
    # preexec_fn makes it do), it would hang there, and the start with it.
    script = textwrap.dedent(
        """
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        provider = TracerProvider(resource=Resource({"service.name": "fork"}))
        import concurrent.futures.thread  # its own hook after the provider's
        from cbs.nats.server import NatsServer
        with NatsServer(jetstream=False) as server:
            print("served", server.port > 0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "served True", done.stderr


def test_kill_9_of_the_owner_leaves_a_folder_the_next_start_removes(tmp_path: Path) -> None:
    first, folder, server_pid = start_owner(tmp_path)
    try:
        assert folder.parent == tmp_path and folder.name.startswith("cbs-nats-")
        owner = json.loads((folder / "owner").read_text())
        assert owner["pid"] == first.pid and owner["server_pid"] == server_pid
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert wait_gone(server_pid), "the nats-server outlived a kill -9 of its owner"
        assert folder.is_dir()  # nobody cleaned up

        second, other, _ = start_owner(tmp_path)  # its start removes the stale folder
        try:
            assert not folder.exists()
            assert other.is_dir()
            assert remove_stale_workdirs(tmp_path) == []  # the live owner's folder stays
            assert other.is_dir()
        finally:
            second.kill()
            second.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)


def make_folder(tmp_path: Path, name: str, owner: dict[str, Any] | None) -> Path:
    folder = tmp_path / f"cbs-nats-{name}"
    folder.mkdir()
    if owner is not None:
        (folder / "owner").write_text(json.dumps(owner))
    return folder


def test_only_folders_with_a_dead_owner_and_no_live_server_are_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    dead = gone.pid
    me = os.getpid()
    stale = make_folder(tmp_path, "stale", {"pid": dead, "server_pid": dead})
    live_owner = make_folder(tmp_path, "live", {"pid": me})
    live_server = make_folder(tmp_path, "orphan", {"pid": dead, "server_pid": me})
    no_owner = make_folder(tmp_path, "unknown", None)
    broken = make_folder(tmp_path, "broken", None)
    (broken / "owner").write_text("{not json")
    other = tmp_path / "something-else"
    other.mkdir()
    (other / "owner").write_text(json.dumps({"pid": dead}))

    assert remove_stale_workdirs(tmp_path) == [stale]
    assert [p.name for p in sorted(tmp_path.iterdir())] == sorted(
        p.name for p in (live_owner, live_server, no_owner, broken, other)
    )


@linux_only
def test_a_reused_pid_does_not_keep_a_stale_folder(tmp_path: Path) -> None:
    # The owner file names this pid but another start time: the process that
    # wrote it is gone and the pid now belongs to someone else.
    reused = make_folder(tmp_path, "reused", {"pid": os.getpid(), "start": "1"})
    assert remove_stale_workdirs(tmp_path) == [reused]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_cbs_server_takes_its_nats_server_along(
    processes: list[CbsProcess], tmp_path: Path, how: int
) -> None:
    proc = CbsProcess("server", "--port", str(free_port()), env={**ENV, "TMPDIR": str(tmp_path)})
    processes.append(proc)
    pid = int(proc.wait_for(r"ready at \S+ \(pid (\d+)\)", stdout=True).group(1))
    [folder] = tmp_path.glob("cbs-nats-*")
    proc.popen.send_signal(how)
    proc.popen.wait(timeout=30)  # one signal only: stop() would send a second SIGTERM
    code, _, err = proc.stop()
    assert wait_gone(pid), f"nats-server {pid} outlived cbs server"
    if how == signal.SIGTERM:
        assert (code, err) == (0, "cbs.body: signal received: draining\n")
        assert not folder.exists()
    else:
        assert code == -signal.SIGKILL
        assert remove_stale_workdirs(tmp_path) == [folder]
