"""`cbs chaos run` as a subprocess: it starts its own nats-server and a greet
cell process, checks the hypothesis, injects a fault, rolls back, and writes
the JSON and Markdown reports."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from cbs_process import CLI

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "examples" / "chaos_experiment.yaml"
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CBS_", "NATS_"))}


def run(experiment: Path, report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "chaos", "run", str(experiment), "--report", str(report)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_fault_breaks_the_hypothesis_during_and_rollback_restores_it(tmp_path: Path) -> None:
    done = run(EXAMPLE, tmp_path / "report")
    assert done.returncode == 0, done.stderr
    journal = json.loads((tmp_path / "report.json").read_text())
    assert journal["hypothesis_held"] == {"before": True, "during": False, "after": True}
    assert journal["status"] == "deviated" and journal["recovered"] is True

    states = journal["steady_states"]
    for phase in ("before", "after"):
        ratio, p99 = states[phase]["probes"]
        assert ratio["value"] >= 0.95 and ratio["tolerance_met"]
        assert ratio["measurement"]["sent"] == 40  # rate 40/s for 1 s
        assert p99["value"] == ratio["measurement"]["latency_p99"]  # one measurement shared
    ratio = states["during"]["probes"][0]
    assert ratio["tolerance_met"] is False and ratio["value"] < 0.95
    assert set(ratio["measurement"]["errors"]) == {"Internal"}

    (inject,) = journal["run"]
    assert inject["status"] == "succeeded"
    (ack,) = inject["output"]["acknowledged"]
    (proc,) = journal["processes"]
    assert ack["pid"] == proc["pid"] and proc["name"] == "greet"
    assert proc["exit_codes"] == [0]  # stopped by SIGTERM at the end, drained
    assert not pid_alive(proc["pid"])
    (heal,) = journal["rollbacks"]
    assert heal["status"] == "succeeded" and heal["output"]["rules"] == []

    markdown = (tmp_path / "report.md").read_text()
    assert "| status | **deviated** |" in markdown
    assert "| during: after the method, its faults in force | NOT held | greetings-succeed |" in (
        markdown
    )
    assert done.stdout.splitlines()[0].startswith("before: held")


def test_pausing_the_process_and_resuming_it(tmp_path: Path) -> None:
    experiment: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    for probe in experiment["steady-state-hypothesis"]["probes"]:
        probe["provider"]["arguments"].update({"rate": 20, "window": 0.5, "timeout": 0.3})
    action = {"module": "cbs.chaos.actions", "type": "python"}
    experiment["method"] = [
        {
            "type": "action",
            "name": "freeze",
            "provider": {**action, "func": "pause_process", "arguments": {"process": "greet"}},
        }
    ]
    experiment["rollbacks"] = [
        {
            "type": "action",
            "name": "thaw",
            "provider": {**action, "func": "resume_process", "arguments": {"process": "greet"}},
        }
    ]
    path = tmp_path / "pause.yaml"
    path.write_text(yaml.safe_dump(experiment))
    done = run(path, tmp_path / "pause")
    assert done.returncode == 0, done.stderr
    journal = json.loads((tmp_path / "pause.json").read_text())
    assert journal["hypothesis_held"] == {"before": True, "during": False, "after": True}
    during = journal["steady_states"]["during"]["probes"][0]["measurement"]
    assert during["ok"] == 0 and set(during["errors"]) == {"Timeout"}
    assert journal["run"][0]["output"]["signal"] == "SIGSTOP"
    assert journal["rollbacks"][0]["output"]["signal"] == "SIGCONT"


def test_the_docs_show_the_tested_experiment() -> None:
    assert EXAMPLE.read_text() in (ROOT / "docs" / "chaos.md").read_text()


def test_a_bad_experiment_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("title: x\nmethod:\n  - {type: action, name: a, provider: {func: explode}}\n")
    done = run(path, tmp_path / "bad")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "provider func must be one of" in done.stderr
    assert not (tmp_path / "bad.json").exists()
