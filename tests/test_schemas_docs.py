"""docs/schemas.md's worked example, run as written: its files into an empty
folder, the cell module run with this Python, the check run with ``cbs``,
outputs compared line by line."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from cbs_process import CBS_EXECUTABLE, run_cbs
from markdown_blocks import file_blocks
from schema_cells import cli_env

DOC = Path(__file__).resolve().parents[1] / "docs" / "schemas.md"
SECTION = "## A worked example"


def written(tmp_path: Path) -> dict[str, str]:
    blocks = file_blocks(DOC.read_text(), SECTION)
    assert set(blocks) >= {
        "name_v1.json",
        "name_v2.json",
        "greeter_v2.py",
        "output.txt",
        "check.txt",
    }
    for name in ("name_v1.json", "name_v2.json", "greeter_v2.py"):
        (tmp_path / name).write_text(blocks[name])
    return blocks


def test_the_cell_serves_v2_and_upcasts_v1(tmp_path: Path) -> None:
    blocks = written(tmp_path)
    done = subprocess.run(
        [sys.executable, "greeter_v2.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == blocks["output.txt"]


def test_the_check_as_shown(tmp_path: Path) -> None:
    lines = written(tmp_path)["check.txt"].splitlines()
    command = shlex.split(lines[0].removeprefix("$ "))
    assert command[0] == "cbs"
    done = subprocess.run(
        [CBS_EXECUTABLE, *command[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        check=False,
    )
    stdout = [line for line in lines[1:] if not line.startswith(("2> ", "exit "))]
    stderr = [line.removeprefix("2> ") for line in lines if line.startswith("2> ")]
    assert done.stdout.splitlines() == stdout
    assert done.stderr.splitlines() == stderr
    assert f"exit {done.returncode}" == lines[-1]


def test_without_the_bump_it_fails(tmp_path: Path) -> None:
    written(tmp_path)
    v2 = json.loads((tmp_path / "name_v2.json").read_text())
    (tmp_path / "same.json").write_text(json.dumps({**v2, "$id": "demo/v1/Name"}))
    done = run_cbs(
        "schema",
        "check",
        str(tmp_path / "name_v1.json"),
        str(tmp_path / "same.json"),
        env=cli_env(),
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "cbs: error: 3 breaking change(s) in BACKWARD mode without a major version bump"
    )
