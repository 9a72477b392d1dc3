"""The Markdown report of ``cbs chaos run``, and its summary lines."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["markdown", "summary_lines"]

PHASES = (
    ("before", "before the method"),
    ("during", "during: after the method, its faults in force"),
    ("after", "after the rollbacks"),
)


def _held(value: bool | None) -> str:
    return "not checked" if value is None else "held" if value else "NOT held"


def _tolerance(tolerance: Any) -> str:
    if isinstance(tolerance, dict):
        tolerance = tolerance.get("range")
    return json.dumps(tolerance)


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in errors.items()) or "none"


def summary_lines(journal: dict[str, Any]) -> list[str]:
    lines = []
    for phase, _ in PHASES:
        state = journal["steady_states"].get(phase)
        held = journal["hypothesis_held"].get(phase)
        detail = ""
        if state:
            detail = "  " + "; ".join(
                f"{p['name']} = {p['value']} (tolerance {_tolerance(p['tolerance'])})"
                for p in state["probes"]
            )
        lines.append(f"{phase}: {_held(held)}{detail}")
    recovered = "recovered" if journal.get("recovered") else "not recovered"
    lines.append(f"status: {journal['status']}, {recovered} ({journal.get('duration', 0):g} s)")
    return lines


def _activity_rows(records: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| activity | type | func | status | duration (s) | output |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        output = r.get("error") or json.dumps(r.get("output", {}), separators=(", ", ": "))
        if len(output) > 200:
            output = output[:197] + "..."
        output = output.replace("|", "\\|")
        rows.append(
            f"| {r['name']} | {r['type']} | {r['func']} | {r.get('status')} |"
            f" {r.get('duration')} | {output} |"
        )
    return rows


def markdown(journal: dict[str, Any]) -> str:
    recovered = "yes" if journal.get("recovered") else "no"
    out = [
        f"# {journal['title']}",
        "",
        journal.get("description") or "",
        "",
        "| | |",
        "|---|---|",
        f"| status | **{journal['status']}** |",
        f"| recovered | {recovered} |",
        f"| started | {journal['started']} |",
        f"| ended | {journal.get('ended', '')} |",
        f"| duration | {journal.get('duration', 0):g} s |",
        f"| nats | {journal.get('nats', {}).get('url', '')} |",
    ]
    if journal.get("error"):
        out.append(f"| error | {journal['error']} |")
    out += ["", f"## Steady-state hypothesis: {journal.get('hypothesis') or ''}", ""]
    out += [
        "| check | held | probe | value | tolerance | sent | ok | errors | p50 (s) | p99 (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase, label in PHASES:
        state = journal["steady_states"].get(phase)
        held = _held(journal["hypothesis_held"].get(phase))
        if not state:
            out.append(f"| {label} | {held} | | | | | | | | |")
            continue
        for p in state["probes"]:
            m = p["measurement"]
            out.append(
                f"| {label} | {held} | {p['name']} | {p['value']} | {_tolerance(p['tolerance'])}"
                f" | {m['sent']} | {m['ok']} | {_errors(m['errors'])} | {m['latency_p50']}"
                f" | {m['latency_p99']} |"
            )
    out += ["", "## Method", "", *_activity_rows(journal["run"]), ""]
    out += ["## Rollbacks", "", *_activity_rows(journal["rollbacks"]), ""]
    out += ["## Processes", "", "| name | pid | exit codes | command |", "|---|---|---|---|"]
    for p in journal.get("processes", []):
        out.append(f"| {p['name']} | {p['pid']} | {p['exit_codes']} | `{' '.join(p['command'])}` |")
    return "\n".join(out) + "\n"
