"""cbs.testing as a pytest plugin: registered once through the pytest11 entry
point, bodies that ignore the user's CBS_*/NATS_* variables unless asked, and
pytest still works for a user without pytest-asyncio."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import importlib_metadata
import pytest

import cbs.testing.pytest_plugin
from cbs.kernel import Cell, ConfigError
from cbs.testing import CellsPlugin, MakeBody

echo = Cell("kit_echo", category="logic", version="1.0.0", purpose="Echoes")


@echo.verb("echo", schema="kit/v1/Any")
async def _echo(payload: dict[str, object]) -> dict[str, object]:
    return dict(payload)


def test_registered_once_through_the_pytest11_entry_point(
    pytestconfig: pytest.Config,
) -> None:
    (entry,) = importlib_metadata.entry_points(group="pytest11", name="cbs")
    assert entry.value == "cbs.testing.pytest_plugin"
    assert entry.dist is not None and entry.dist.name == "cell-body-system"
    plugins = pytestconfig.pluginmanager.get_plugins()
    assert [p for p in plugins if p is cbs.testing.pytest_plugin] == [cbs.testing.pytest_plugin]
    assert pytestconfig.pluginmanager.get_plugin("cbs") is cbs.testing.pytest_plugin


async def test_make_body_ignores_the_environment(
    make_body: MakeBody, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CBS_TRANSPORT", "bogus")
    monkeypatch.setenv("CBS_PLUGINS", "no:local")
    monkeypatch.setenv("CBS_REQUEST_TIMEOUT", "0.001")
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:1")
    body = make_body(CellsPlugin(echo))
    assert "local" in body.plugins
    await body.start()
    assert body.bus is not None and body.bus.name == "local"
    assert await body.request("kit_echo", "echo", {"a": 1}) == {"a": 1}

    asked = make_body(CellsPlugin(echo), environ=os.environ)  # opt in: the same variables bite
    assert "local" not in asked.plugins
    with pytest.raises(ConfigError, match="unknown transport 'bogus'"):
        await asked.start()
    given = make_body(environ={"CBS_REQUEST_TIMEOUT": "2.5"})
    assert given.config["request_timeout"] == 2.5


def test_helpers_import_without_pytest() -> None:
    code = "import sys; sys.modules['pytest'] = None; import cbs.testing"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_pytest_works_without_pytest_asyncio(tmp_path: Path) -> None:
    """pytest-asyncio made unimportable: the sync fixtures work, make_body
    errors with one line naming the extra, nothing else breaks."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            def test_plain(hook_recorder):
                assert hook_recorder.calls == []

            def test_needs_asyncio(make_body):
                pass
            """
        )
    )
    shadow = tmp_path / "shadow" / "pytest_asyncio"  # as if it were not installed
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'pytest_asyncio\'", name="pytest_asyncio")\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(shadow.parent)
    args = ["-p", "no:asyncio", "-p", "no:cacheprovider", "-rE", "test_user.py"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 passed, 1 error" in out, out
    reason = "the make_body fixture needs pytest-asyncio: pip install 'cell-body-system[testing]'"
    assert f"\n{reason}\n" in out, out  # one line at the setup error of that test
    assert "Traceback" not in out, out
