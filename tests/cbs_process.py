"""A ``cbs`` command run as a real subprocess, for tests across processes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _executable() -> str:
    beside = Path(sys.executable).with_name("cbs")
    found = str(beside) if beside.is_file() else shutil.which("cbs")
    assert found, "no cbs executable: pip install -e . (or -r requirements-dev.txt)"
    return found


#: The ``cbs`` console script of this environment, run as a user runs it.
CBS_EXECUTABLE = _executable()
CLI = [CBS_EXECUTABLE]


def run_cbs(
    *args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``cbs ARGS...`` to the end: exit code, stdout and stderr as text."""
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=env
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


class CbsProcess:
    """``cbs ARGS...`` in a subprocess; stderr is read line by line."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []  # stderr read so far
        self.out_lines: list[str] = []  # stdout read so far

    def wait_for(self, pattern: str, seconds: float = 30, *, stdout: bool = False) -> re.Match[str]:
        """The first stderr (or stdout) line matching ``pattern``, within ``seconds``."""
        stream = self.popen.stdout if stdout else self.popen.stderr
        lines = self.out_lines if stdout else self.lines
        assert stream is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            line = stream.readline()
            if not line and self.popen.poll() is not None:
                break
            lines.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no {pattern!r} in: {''.join(lines)}")

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM (the body drains), then exit code, stdout and all of stderr."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            out, rest = self.popen.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            out, rest = self.popen.communicate(timeout=10)
        return self.popen.returncode, "".join(self.out_lines) + out, "".join(self.lines) + rest


@pytest.fixture
def processes() -> Iterator[list[CbsProcess]]:
    """Append what you start; whatever still runs at teardown is killed."""
    started: list[CbsProcess] = []
    yield started
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(10)
