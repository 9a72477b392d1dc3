"""Integration: the ``cbs`` command line, run as a user would, in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest
from cbs_process import CLI, run_cbs

# Only the plugins of this repository: a developer's other installed plugins
# must not change what these tests see.
ENV = {**os.environ, "CBS_PLUGINS": "greeter", "CBS_TRANSPORT": "local"}
ENV.pop("CBS_DISABLE_PLUGIN_AUTOLOAD", None)


def cbs(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Any:
    return run_cbs(*args, stdin=stdin, env=env or ENV)


def test_demo_prints_exactly_the_greeting() -> None:
    result = cbs("demo", "--name", "Ada")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello Ada!\n"


def test_demo_reads_the_name_from_stdin() -> None:
    result = cbs("demo", stdin="Grace Hopper\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello Grace Hopper!\n"


def test_demo_with_no_name_fails_with_one_line() -> None:
    result = cbs("demo", stdin="")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("BadRequest: ")


def test_call_prints_the_reply_payload() -> None:
    result = cbs("call", "greeter.say_hello", '{"name": "Ada"}')
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{"message": "Hello Ada!"}\n'


@pytest.mark.parametrize(
    ("args", "code", "first_word"),
    [
        (("call", "greeter.say_hello", "{}"), 1, "BadRequest:"),
        (("call", "nope.nothing", "{}"), 1, "NotFound:"),
        (("call", "greeter.say_hello", "{not json"), 2, "cbs:"),
        (("call", "greeter.say_hello", "[1]"), 2, "cbs:"),
        (("call", "greeter", "{}"), 2, "cbs:"),
        (("call", "Bad.Name", "{}"), 1, "BadRequest:"),
        (("run", "--cells", "nope"), 2, "cbs:"),
        (("call", "greeter.say_hello", "--transport", "carrier_pigeon"), 2, "cbs:"),
        (("call", "greeter.say_hello", "--request-timeout", "soon"), 2, "cbs:"),
        (("frobnicate",), 2, "cbs:"),
    ],
)
def test_user_errors_are_one_line_and_non_zero(
    args: tuple[str, ...], code: int, first_word: str
) -> None:
    result = cbs(*args)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(first_word)
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback() -> None:
    result = cbs("--debug", "call", "nope.nothing", "{}")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_plugins_json_lists_builtins_and_greeter() -> None:
    result = cbs("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["local"]["distribution"] == "cell-body-system"
    assert plugins["local"]["registered"]["transports"] == ["local"]
    assert plugins["greeter"]["distribution"] == "cbs-greeter"
    assert plugins["greeter"]["hooks"] == ["cbs_add_commands", "cbs_register_cells"]
    assert plugins["greeter"]["registered"]["cells"] == ["prompt_name", "greet", "print_greeting"]
    # the demo is the greeter's own command, not the kernel's
    assert plugins["greeter"]["registered"]["commands"] == ["demo"]
    assert "demo" not in plugins["core"]["registered"]["commands"]


def test_cells_json_lists_the_three_demo_cells() -> None:
    result = cbs("cells", "--json")
    assert result.returncode == 0, result.stderr
    cells = {c["id"]: c for c in json.loads(result.stdout)}
    assert cells["prompt_name"]["subjects"] == ["cbs.prompt_name.read"]
    assert cells["greet"]["subjects"] == ["cbs.greeter.say_hello"]
    assert cells["print_greeting"]["subjects"] == ["cbs.printer.write"]
    assert cells["greet"]["category"] == "logic"
    assert cells["greet"]["schemas"] == ["demo/v1/Name"]
    assert {c["plugin"] for c in cells.values()} == {"greeter"}


def test_block_list_and_disabled_autoload() -> None:
    blocked = cbs("-p", "no:greeter", "cells", "--json", env={**ENV, "CBS_PLUGINS": ""})
    assert blocked.returncode == 0 and json.loads(blocked.stdout) == []
    env = {**ENV, "CBS_PLUGINS": "", "CBS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    off = cbs("plugins", "--json", env=env)
    assert [p["name"] for p in json.loads(off.stdout)] == ["local", "core"]
    named = cbs("-p", "greeter", "plugins", "--json", env=env)
    assert [p["name"] for p in json.loads(named.stdout)] == ["local", "core", "greeter"]
    missing = cbs("-p", "nothere", "plugins", env=env)
    assert missing.returncode == 2 and "nothere" in missing.stderr


def test_run_serves_until_sigterm_then_exits_zero() -> None:
    proc = subprocess.Popen(
        [*CLI, "run"],
        env=ENV,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        line = ""
        assert proc.stderr is not None
        while "serving cells" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "prompt_name, greet, print_greeting" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_demo_asks_on_a_terminal() -> None:
    """On a TTY the prompt goes to the terminal (stderr), then the greeting."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: cbs demo on a pseudo-terminal
        os.execve(CLI[0], [*CLI, "-q", "demo"], ENV)
    screen = b""
    answered = False
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
            if b"What is your name? " in screen and not answered:
                os.write(fd, b"Grace\n")
                answered = True
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answered
    assert screen.replace(b"\r\n", b"\n").endswith(b"Grace\nHello Grace!\n")


def test_demo_runs_on_uvloop() -> None:
    pytest.importorskip("uvloop")
    result = cbs("--loop", "uvloop", "demo", "--name", "Ada")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello Ada!\n"


def test_unknown_event_loop_is_one_line() -> None:
    result = cbs("--loop", "trio", "demo", "--name", "Ada")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "cbs: error: unknown event loop 'trio'; choose from asyncio, uvloop\n"
