"""``cbs run body.yaml``, ``cbs apply`` and ``cbs diff`` as real processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cbs_process import CbsProcess, processes, run_cbs

__all__ = ["processes"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}


def test_an_invalid_spec_is_one_line_with_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "body.yaml"
    path.write_text("version: 1\ncells:\n  greet: {replicas: two}\n")
    for command in ("run", "diff"):
        done = run_cbs(command, str(path), env=_env())
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"cbs: error: {path}:3:21: cells.greet.replicas: expected an integer or {{min, max}}"
        ]


def test_run_then_diff_and_apply_over_nats(
    nats_server: Any, tmp_path: Path, processes: list[CbsProcess]
) -> None:
    env, url = _env(), nats_server.url
    path = tmp_path / "demo.yaml"
    path.write_text("version: 1\ncells: {greet: {}}\n")
    body = CbsProcess("run", str(path), "--nats-url", url, env=env)
    processes.append(body)
    body.wait_for(r"serving spec .* cells greet")
    new = tmp_path / "new.yaml"
    new.write_text(
        "version: 1\nbody: {id: demo}\ncells: {greet: {}, prompt_name: {}}\n"
        "settings: {request_timeout: 9}\n"
    )
    diff = run_cbs("diff", str(new), "--nats-url", url, "--expect", "1", env=env)
    assert diff.returncode == 0, diff.stderr
    assert "+ add      prompt_name: installed" in diff.stdout
    assert "! restart  request_timeout: 5.0 -> 9.0 (fixed at start: needs a restart)" in diff.stdout
    applied = run_cbs("apply", str(new), "--nats-url", url, "--expect", "1", env=env)
    assert applied.returncode == 0, applied.stderr
    assert "1 change(s)" in applied.stdout and "prompt_name" in applied.stdout
    again = run_cbs("apply", str(new), "--nats-url", url, "--expect", "1", env=env)
    assert "no change" in again.stdout
    called = run_cbs("call", "greeter.say_hello", '{"name": "Ada"}', "--nats-url", url, env=env)
    assert called.stdout.strip() == '{"message": "Hello Ada!"}'
    refused = run_cbs("apply", str(tmp_path / "missing.yaml"), "--nats-url", url, env=env)
    assert refused.returncode == 2 and "cannot read" in refused.stderr
    code, _, err = body.stop()
    assert code == 0, err


def test_run_spec_without_a_spec_server_and_a_bad_strategy_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "body.yaml"
    path.write_text("version: 1\ncells:\n  greet: {}\n")
    bare = run_cbs("--disable-plugin-autoload", "run", str(path), env=_env())
    assert (bare.returncode, bare.stderr.strip().splitlines()) == (
        2,
        ["cbs: error: cbs run SPEC needs a deployment plugin (pip install cbs-spec)"],
    )
    path.write_text("version: 1\ncells:\n  greet: {}\nbalancing: {strategy: random}\n")
    bad = run_cbs("run", str(path), env=_env())
    assert bad.returncode == 2
    assert "balancing.strategy" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    flag = run_cbs("run", "--balancing", "rr", "--cells", "greet", env=_env())
    assert (flag.returncode, flag.stderr.strip().splitlines()) == (
        2,
        ["cbs: error: balancing: 'rr' is not one of: queue, p2c"],
    )
