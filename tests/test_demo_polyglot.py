"""``cbs demo --polyglot``: prompt_name (Python) -> greet (a JavaScript
sidecar from sdks/js) -> print_greeting (Python), on the embedded server."""

from __future__ import annotations

from pathlib import Path

from cbs_process import run_cbs
from pool_kit import cbs_env, need_node


def test_the_polyglot_demo_greets_through_the_javascript_cell() -> None:
    need_node()
    done = run_cbs("demo", "--polyglot", "--name", "Ada Lovelace", env=cbs_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello Ada Lovelace!\n"
    assert "cbs-js: serving cells greet" in done.stderr  # greet answered from node
    asked = run_cbs("demo", "--polyglot", env=cbs_env(), stdin="Grace\n")
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.endswith("Hello Grace!\n")


def test_a_missing_javascript_cell_is_one_line(tmp_path: Path) -> None:
    need_node()
    missing = tmp_path / "nope.js"
    done = run_cbs("demo", "--polyglot", "--greet-js", str(missing), "--name", "x", env=cbs_env())
    assert done.returncode == 2
    assert done.stderr == (
        f"cbs: error: cbs demo --polyglot: no JavaScript greet cell at {missing} (--greet-js)\n"
    )
