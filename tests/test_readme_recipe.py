"""The README's "Write your own cell plugin" recipe, followed as written: its
files into a folder outside the repository, a fresh virtual environment, the
core installed from this repository, the recipe installed next to it, then the
``cbs`` command of that environment (the local transport: no NATS plugin there).

pip may fetch the core's dependencies and the build backend; nothing else.
Without a package index the test skips, naming the connection error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from markdown_blocks import file_blocks

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## Write your own cell plugin"
#: What pip prints when it cannot reach an index at all.
_OFFLINE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name"
    r" resolution|Network is unreachable|ProxyError|Name or service not known"
)
#: The core's dependencies (setup.cfg); pip may add theirs, nothing else.
CORE_DEPENDENCIES = {"attrs", "pluggy", "orjson", "importlib-metadata"}
#: Prints {distribution: [required distributions]} of the environment it runs in.
_LIST_REQUIREMENTS = """
import importlib.metadata as m, json, re
def name(text):
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", text).group(0)).lower()
print(json.dumps({
    name(d.metadata["Name"]): [name(r) for r in d.requires or [] if "extra ==" not in r]
    for d in m.distributions()
}))
"""


def recipe_files() -> dict[str, str]:
    """File name -> text of the fenced blocks in the README's recipe section."""
    return file_blocks(README.read_text(encoding="utf-8"), SECTION)


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without CBS, NATS and Python path settings."""
    drop = ("CBS_", "NATS_", "PYTHON", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def run(args: list[str], cwd: Path, timeout: float = 60) -> Any:
    return subprocess.run(
        args, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )


def pip_install(python: Path, target: Path, cwd: Path) -> None:
    done = run([str(python), "-m", "pip", "install", "--quiet", str(target)], cwd, timeout=75)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if offline := _OFFLINE.search(output):
            pytest.skip(f"no package index reachable for pip ({offline.group(0)})")
        raise AssertionError(f"pip install {target} failed:\n{output}")


def installed_requirements(python: Path, cwd: Path) -> dict[str, list[str]]:
    done = run([str(python), "-c", _LIST_REQUIREMENTS], cwd)
    assert done.returncode == 0, done.stderr
    found: dict[str, list[str]] = json.loads(done.stdout)
    return found


def closure(requirements: dict[str, list[str]], roots: list[str]) -> set[str]:
    """The installed distributions that ``roots`` need, themselves included."""
    needed: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in requirements and name not in needed:
            needed.add(name)
            todo.extend(requirements[name])
    return needed


def test_readme_blocks_are_found() -> None:
    files = recipe_files()
    assert set(files) == {"cbs_hello.py", "pyproject.toml"}
    assert 'dependencies = ["cell-body-system"]' in files["pyproject.toml"]


def test_readme_recipe_in_a_fresh_venv(tmp_path: Path) -> None:
    assert ROOT not in tmp_path.parents
    recipe = tmp_path / "cbs-hello"
    recipe.mkdir()
    for name, text in recipe_files().items():
        (recipe / name).write_text(text, encoding="utf-8")

    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    pip_install(python, ROOT, tmp_path)  # the core, not editable
    pip_install(python, recipe, tmp_path)

    installed = installed_requirements(python, tmp_path)
    assert "cbs" not in installed  # the unrelated PyPI project
    assert {"cell-body-system", "cbs-hello", *CORE_DEPENDENCIES} <= set(installed)
    needed = closure(installed, ["cbs-hello"])
    assert set(installed) - {"pip", "setuptools", "wheel"} == needed
    where = run([str(python), "-c", "import cbs.kernel; print(cbs.kernel.__file__)"], tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    cbs = str(venv / "bin" / "cbs")
    switches = ["--disable-plugin-autoload", "-p", "hello"]
    call = run([cbs, "call", "hello.hi", '{"who": "you"}', *switches], tmp_path)
    assert call.returncode == 0, call.stderr
    assert call.stdout.strip() == '{"text": "hi you"}'

    cells = run([cbs, "cells", "--json"], tmp_path)
    assert cells.returncode == 0, cells.stderr
    assert [(c["id"], c["plugin"]) for c in json.loads(cells.stdout)] == [("hello", "hello")]

    plugins = run([cbs, "plugins", "--json"], tmp_path)
    by_name = {p["name"]: p for p in json.loads(plugins.stdout)}
    assert by_name["core"]["distribution"] == "cell-body-system"
    assert by_name["hello"]["distribution"] == "cbs-hello"
