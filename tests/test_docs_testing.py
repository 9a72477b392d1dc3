"""docs/writing-plugins.md "Testing your plugin": its example test file runs as
written, next to the README's cbs_hello.py, in a folder of its own (no
conftest.py, no pytest configuration: pytest-asyncio's default strict mode),
with the kit found through its pytest11 entry point."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from markdown_blocks import file_blocks

ROOT = Path(__file__).resolve().parents[1]


def test_the_documented_test_file_passes(tmp_path: Path) -> None:
    docs = file_blocks(
        (ROOT / "docs" / "writing-plugins.md").read_text(encoding="utf-8"),
        "## Testing your plugin",
    )
    readme = file_blocks(
        (ROOT / "README.md").read_text(encoding="utf-8"), "## Write your own cell plugin"
    )
    assert list(docs) == ["test_hello.py"]
    (tmp_path / "test_hello.py").write_text(docs["test_hello.py"], encoding="utf-8")
    (tmp_path / "cbs_hello.py").write_text(readme["cbs_hello.py"], encoding="utf-8")
    assert not list(tmp_path.parent.glob("conftest.py"))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env["CBS_TRANSPORT"] = "bogus"  # a shell setting that the kit's bodies ignore
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_hello.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"asyncio: mode=(Mode\.)?strict", done.stdout, re.I), done.stdout
    assert "plugins: cell-body-system-" in done.stdout, done.stdout  # the pytest11 entry
    assert "3 passed" in done.stdout, done.stdout
