"""The command-line basics, run through the real ``cbs`` executable:
``--version``, ``python -m cbs``, payloads from stdin and files, shell
completion, and one-line failures for bad option values and paths."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import importlib_metadata
import nats
import pytest
from cbs_process import CBS_EXECUTABLE, run_cbs

ROOT = Path(__file__).resolve().parent.parent

#: The first-party plugins only (a developer's other plugins must not count),
#: the local bus unless a test names another.
FIRST_PARTY = "greeter,nats,jetstream,tracing,metrics,breaker"
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_", "OTEL_"))}
ENV.update(CBS_PLUGINS=FIRST_PARTY, CBS_TRANSPORT="local")


def cbs(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cbs(*args, stdin=stdin, env={**ENV, **env})


def one_line_failure(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a failed command (and no traceback)."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- --version and python -m cbs -----------------------------------------------------------


def test_version_is_one_line_naming_the_core_distribution() -> None:
    result = cbs("--version")
    assert result.returncode == 0, result.stderr
    found = re.fullmatch(r"cbs (\S+) \((cell-body-system|cbs)\)\n", result.stdout)
    assert found, result.stdout
    assert found[1] == importlib_metadata.version(found[2])
    assert result.stderr == ""


def test_version_answers_before_plugins_load() -> None:
    """A broken plugin selection must not hide the version (users ask for it
    when something is wrong)."""
    assert cbs("plugins", CBS_PLUGINS="not_installed").returncode == 2
    broken = cbs("--version", CBS_PLUGINS="not_installed")
    assert broken.returncode == 0, broken.stderr
    assert broken.stdout == cbs("--version").stdout
    late = cbs("-p", "greeter", "--version")  # after an option: the full parser answers
    assert late.returncode == 0 and late.stdout == broken.stdout


def test_python_m_cbs_is_the_cli() -> None:
    env = {**ENV, "CBS_PLUGINS": "greeter"}
    run = [sys.executable, "-m", "cbs"]
    called = subprocess.run(
        [*run, "call", "greeter.say_hello", '{"name": "Ada"}'],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert called.returncode == 0, called.stderr
    assert called.stdout == '{"message": "Hello Ada!"}\n'
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, env=env)
    assert version.stdout == cbs("--version").stdout
    bad = subprocess.run([*run, "frobnicate"], capture_output=True, text=True, env=env)
    assert one_line_failure(bad, 2).startswith("cbs: error: ")


def test_a_normal_install_ships_cbs_main_beside_other_namespace_portions(
    tmp_path: Path,
) -> None:
    """Install the core from a copy of its sources (not editable) into a folder,
    then run ``python -m cbs`` from there with no site hooks: the editable
    finders are off, so only the installed files count. A plugin's portion
    (plugins/nats) on the path still imports beside it."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for folder in ("kernel", "contracts"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(src)], check=True, timeout=300)
    assert (site / "cbs" / "__main__.py").is_file()
    assert not (site / "cbs" / "__init__.py").exists()
    record = next(site.glob("*.dist-info/RECORD")).read_text()
    assert "cbs/__main__.py," in record
    # -S: no site module, so no .pth and no editable finder; the dependencies
    # (attrs, pluggy, ...) come from this environment's site-packages.
    portions = [site, ROOT / "plugins" / "nats", sysconfig.get_path("purelib")]
    path = os.pathsep.join(map(str, portions))
    env = {**ENV, "PYTHONPATH": path, "CBS_PLUGINS": "", "CBS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    run = [sys.executable, "-S", "-m", "cbs"]
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0, version.stderr
    assert version.stdout == cbs("--version").stdout
    listed = subprocess.run([*run, "plugins", "--json"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr
    assert [p["name"] for p in json.loads(listed.stdout)] == ["local", "core"]
    probe = "import cbs.__main__, cbs.kernel, cbs.nats.plugin as p; print(p.__file__)"
    imported = subprocess.run(
        [sys.executable, "-S", "-c", probe], capture_output=True, text=True, env=env
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(str(ROOT / "plugins" / "nats"))


# -- payloads: JSON text, - (stdin), @FILE ----------------------------------------------


def test_call_reads_the_payload_from_stdin_or_a_file(tmp_path: Path) -> None:
    from_stdin = cbs("call", "greeter.say_hello", "-", stdin='{"name": "Stdin"}')
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert json.loads(from_stdin.stdout) == {"message": "Hello Stdin!"}
    payload = tmp_path / "name.json"
    payload.write_text('{"name": "Grace Hopper"}', encoding="utf-8")
    from_file = cbs("call", "greeter.say_hello", f"@{payload}")
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout) == {"message": "Hello Grace Hopper!"}


@pytest.mark.parametrize("command", ["call", "send"])
@pytest.mark.parametrize(
    ("payload", "stdin", "content", "says"),
    [
        ("@{dir}/missing.json", None, None, "cannot read payload file"),
        ("@{dir}", None, None, "cannot read payload file"),
        ("@{dir}/bad.json", None, "{not json", "is not valid JSON"),
        ("@{dir}/list.json", None, "[1, 2]", "must be a JSON object, not an array"),
        ("@{dir}/latin1.json", None, b'{"name": "\xe9"}', "is not UTF-8"),
        ("-", "{not json", None, "payload (stdin) is not valid JSON"),
        ("-", '"text"', None, "must be a JSON object, not a string"),
        ("-", "", None, "payload (stdin) is not valid JSON"),
        ("null", None, None, "must be a JSON object, not null"),
    ],
)
def test_bad_payloads_are_one_line_and_exit_2(
    tmp_path: Path,
    command: str,
    payload: str,
    stdin: str | None,
    content: str | bytes | None,
    says: str,
) -> None:
    arg = payload.format(dir=tmp_path)
    if content is not None:
        target = Path(arg[1:])
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    # cbs send parses its payload before it looks for NATS: no server needed.
    line = one_line_failure(cbs(command, "greeter.say_hello", arg, stdin=stdin), 2)
    assert line.startswith("cbs: error: ") and says in line, line


async def test_send_takes_its_payload_from_a_file(nats_server: Any, tmp_path: Path) -> None:
    payload = tmp_path / "message.json"
    payload.write_text('{"message": "from a file"}', encoding="utf-8")
    sent = cbs(
        "send", "printer.write", f"@{payload}", "--nats-url", nats_server.url, CBS_TRANSPORT="nats"
    )
    assert sent.returncode == 0, sent.stderr
    ident = sent.stdout.strip()
    nc = await nats.connect(nats_server.url)
    try:
        stored = await nc.jetstream().get_msg("CBS_printer", 1)
    finally:
        await nc.close()
    envelope = json.loads(stored.data)
    assert envelope["id"] == ident
    assert envelope["payload"] == {"message": "from a file"}


# -- shell completion ------------------------------------------------------------------------


def commands() -> list[str]:
    listed = cbs("plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    return [c for p in json.loads(listed.stdout) for c in p["registered"].get("commands", [])]


def test_bash_completion_knows_every_command_and_is_valid_bash(tmp_path: Path) -> None:
    result = cbs("completion", "bash")
    assert result.returncode == 0, result.stderr
    script = tmp_path / "cbs.bash"
    script.write_text(result.stdout)
    names = commands()
    assert {"call", "completion", "send", "replay", "dlq", "server"} <= set(names)
    subcommands = re.search(r"^_shtab_cbs_subparsers=\((.*)\)$", result.stdout, re.M)
    assert subcommands and sorted(subcommands[1].split()) == sorted(names)
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
    # Ask the script as bash would on <Tab>: a command, then a choice, then an option.
    asks = [
        (["cbs", "re"], "replay"),
        (["cbs", "dlq", ""], "list show retry purge"),
        (["cbs", "run", "--tracing-f"], "--tracing-file"),
    ]
    probe = "".join(
        f"COMP_WORDS=({shlex.join(words)}); COMP_CWORD={len(words) - 1};"
        ' _shtab_cbs; echo "${COMPREPLY[*]}"; '
        for words, _ in asks
    )
    done = subprocess.run(
        ["bash", "-c", f"source {script}; {probe}"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [want for _, want in asks]


@pytest.mark.parametrize(("shell", "start"), [("zsh", "#compdef cbs"), ("tcsh", "#")])
def test_zsh_and_tcsh_completion(shell: str, start: str, tmp_path: Path) -> None:
    result = cbs("completion", shell)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(start)
    assert all(name in result.stdout for name in commands())
    if shell == "zsh" and shutil.which("zsh"):
        script = tmp_path / "_cbs"
        script.write_text(result.stdout)
        assert subprocess.run(["zsh", "-n", str(script)], timeout=30).returncode == 0


def test_completion_of_an_unknown_shell_is_one_line() -> None:
    line = one_line_failure(cbs("completion", "fish"), 2)
    assert "invalid choice: 'fish'" in line


#: What `cbs plugins` (and so every command's start-up) must not import: each
#: is needed only once a body runs, or by one command.
NOT_AT_START_UP = [
    "shtab",
    "jsonschema_rs",
    "cbs.breaker.layers",
    "cbs.chaos.control",
    "cbs.schemas.validation",
    "nats.aio.client",
    "opentelemetry.sdk",
    "prometheus_client",
    "yaml",
    "cbs.spec.runner",
    "cbs.pool.control",
    # commands named by reference ("module:function"): imported when they run
    "cbs.greeter.demo",
    "cbs.schemas.commands",
    "cbs.schemas.asyncapi",
    # the request path and the event loop: a body built to list plugins,
    # commands or cells composes no chain and runs no loop
    "asyncio",
    "cbs.kernel.middleware",
    "cbs.kernel.transport",
    "cbs.pool.supervisor",
    "cbs.chaos.layers",
    "cbs.metrics.stats",
]


def imported_by(argv: list[str], modules: list[str]) -> list[str]:
    """Which of ``modules`` a fresh interpreter imported running ``cbs argv``."""
    code = (
        f"import sys; from cbs.kernel.cli import main; main({argv!r});"
        f" print([m for m in {modules!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.splitlines()[-1])


def test_the_version_imports_neither_the_body_nor_the_codec() -> None:
    assert imported_by(["--version"], ["cbs.kernel.body", "cbs.contracts.codec", "asyncio"]) == []


def test_start_up_imports_only_what_it_needs() -> None:
    assert imported_by(["plugins"], NOT_AT_START_UP) == []


def test_the_demo_imports_no_metrics_library_when_nothing_reads_metrics() -> None:
    # cbs-metrics counts in every body; prometheus_client (about 40 ms) comes
    # only with an endpoint, a scrape or an application reading the registry.
    code = (
        "import sys; from cbs.kernel.cli import main\n"
        "try:\n    main(['demo', '--name', 'Ada'])\nexcept SystemExit:\n    pass\n"
        "print('prometheus_client' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["Hello Ada!", "False"]


# -- every failure is one line and a non-zero exit -----------------------------------------


@pytest.mark.parametrize("command", ["call", "run"])
@pytest.mark.parametrize("path", ["/nonexistent-dir/x.json", "/"])
def test_an_unwritable_tracing_file_stops_start_up_with_one_line(command: str, path: str) -> None:
    args = ("call", "greeter.say_hello", '{"name": "Ada"}') if command == "call" else ("run",)
    line = one_line_failure(cbs(*args, "--tracing-file", path), 2)
    assert line.startswith("cbs: error: bad tracing_file: cannot write spans to ")
    assert path in line


def test_a_writable_tracing_file_gets_the_spans(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    result = cbs("call", "greeter.say_hello", '{"name": "Ada"}', "--tracing-file", str(spans))
    assert result.returncode == 0, result.stderr
    names = [json.loads(line)["name"] for line in spans.read_text().splitlines()]
    assert "greeter.say_hello" in " ".join(names)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("run", "--request-timeout", "0"), "--request-timeout: '0' (must be > 0)"),
        (("run", "--request-timeout", "nan"), "(not a finite number)"),
        (("run", "--drain-timeout", "-1"), "--drain-timeout: '-1' (must be >= 0)"),
        (("run", "--transport", "nats", "--nats-connect-timeout", "-1"), "(must be > 0)"),
        (("run", "--metrics-port", "99999"), "--metrics-port: '99999' (must be <= 65535)"),
        (("run", "--metrics-port", "http"), "--metrics-port: 'http' (not a whole number)"),
        (("call", "greeter.say_hello", "--timeout", "0"), "argument --timeout: must be > 0"),
        (("server", "--port", "70000"), "argument --port: must be <= 65535"),
        (("replay", "greeter", "--from-seq", "0"), "argument --from-seq: must be >= 1"),
        (("dlq", "show", "greeter", "zero"), "argument SEQ: not a whole number"),
    ],
)
def test_bad_option_values_are_one_line_and_exit_2(args: tuple[str, ...], says: str) -> None:
    line = one_line_failure(cbs(*args), 2)
    assert line.startswith("cbs: error: ") and says in line, line


def test_an_option_value_from_the_environment_is_checked_too() -> None:
    line = one_line_failure(cbs("plugins", CBS_REQUEST_TIMEOUT="-5"), 2)
    assert line == "cbs: error: bad value for CBS_REQUEST_TIMEOUT: '-5' (must be > 0)"


def test_an_unreachable_nats_url_is_one_line_without_its_password() -> None:
    url = "nats://user:s3cret@127.0.0.1:1,nats://t0ken@127.0.0.1:1"
    args = ("--transport", "nats", "--nats-url", url, "--nats-connect-timeout", "0.5")
    for command in (("run",), ("cells",), ("call", "greeter.say_hello"), ("send", "a.b")):
        result = cbs(*command, *args)
        line = one_line_failure(result, 1)
        assert line.startswith("Unavailable: Cannot connect to NATS at nats://127.0.0.1:1,")
        assert "user" not in line
        assert "s3cret" not in result.stderr and "t0ken" not in result.stderr


def test_cbs_server_on_a_port_in_use_fails_instead_of_reporting_the_other_server(
    nats_server: Any,
) -> None:
    result = cbs("server", "--port", str(nats_server.port))
    line = one_line_failure(result, 1)
    assert line == f"Unavailable: port {nats_server.port} on 127.0.0.1 is already in use"
    assert result.stdout == ""


def test_a_reader_that_went_away_is_not_reported() -> None:
    """``cbs plugins | head -1``: stdout's reader closes; no traceback, no line."""
    read, write = os.pipe()
    os.close(read)  # before cbs starts: its first write fails, every time
    try:
        done = subprocess.run(
            [CBS_EXECUTABLE, "plugins"], stdout=write, stderr=subprocess.PIPE, env=ENV, timeout=60
        )
    finally:
        os.close(write)
    assert done.returncode == 1
    assert done.stderr == b""
