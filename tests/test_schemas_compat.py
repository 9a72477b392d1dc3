"""cbs schema check: every kind of breaking change named, the Confluent modes
(reader and writer the right way round, TRANSITIVE against every version),
and the exit code of the CLI (a break fails unless the major version grew)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cbs_process import run_cbs
from schema_cells import cli_env

from cbs.schemas.compat import breaking_changes, check, major_of

BASE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 100},
        "age": {"type": "number"},
        "kind": {"enum": ["a", "b", "c"]},
        "note": {"type": "string"},
    },
    "required": ["name"],
    "additionalProperties": False,
}


def changed(**edits: Any) -> dict[str, Any]:
    new = json.loads(json.dumps(BASE))
    for key, value in edits.items():
        if key.startswith("prop_"):
            name = key.removeprefix("prop_")
            if value is None:
                del new["properties"][name]
            else:
                new["properties"][name] = value
        else:
            new[key] = value
    return new


@pytest.mark.parametrize(
    ("new", "path", "kind"),
    [
        (changed(prop_note=None), "note", "field_removed"),
        (changed(prop_age={"type": "integer"}), "age", "type_narrowed"),
        (changed(required=["name", "age"]), "age", "required_added"),
        (changed(prop_kind={"enum": ["a", "b"]}), "kind", "enum_shrunk"),
        (changed(prop_name={"type": "string", "maxLength": 10}), "name", "bound_tightened"),
        (
            changed(prop_name={"type": "string", "maxLength": 100, "pattern": "^A"}),
            "name",
            "pattern_changed",
        ),
    ],
)
def test_each_breaking_change_is_named(new: dict[str, Any], path: str, kind: str) -> None:
    changes = check("BACKWARD", [BASE], new)
    assert [(c.path, c.kind, c.direction) for c in changes] == [(path, kind, "BACKWARD")]


def test_additional_properties_tightened() -> None:
    old = {**BASE, "additionalProperties": True}
    (change,) = check("BACKWARD", [old], BASE)
    assert change.kind == "additional_properties_tightened"


def test_compatible_changes_pass() -> None:
    widened = changed(prop_age={"type": ["number", "string"]}, prop_kind={"enum": list("abcd")})
    assert check("BACKWARD", [BASE], widened) == []
    optional_added = changed(prop_title={"type": "string"})
    assert check("BACKWARD", [BASE], optional_added) == []
    # Old readers of a closed model refuse it (as Confluent has it): not FULL.
    assert [c.kind for c in check("FULL", [BASE], optional_added)] == ["field_added"]
    assert check("FULL", [BASE], {**BASE, "description": "a name"}) == []
    assert breaking_changes(BASE, BASE) == []


def test_modes_put_reader_and_writer_the_right_way_round() -> None:
    # A required field added: new readers refuse old payloads (BACKWARD breaks);
    # old readers accept new payloads, which carry the field (FORWARD holds).
    # (Open models: a closed old model refuses any field added, as in Confluent.)
    old = {**BASE, "additionalProperties": True}
    new = {**changed(prop_title={}, required=["name", "title"]), "additionalProperties": True}
    assert [c.kind for c in check("BACKWARD", [old], new)] == ["required_added"]
    assert check("FORWARD", [old], new) == []
    # A field removed from a closed model: the opposite.
    gone = changed(prop_note=None)
    assert [c.direction for c in check("FULL", [BASE], gone)] == ["BACKWARD"]
    assert [c.kind for c in check("FORWARD", [gone], BASE)] == ["field_added"]


def test_transitive_modes_look_at_every_version() -> None:
    v1 = changed(prop_kind={"enum": ["a", "b", "c", "d"]})
    v2, v3 = BASE, BASE  # v2 dropped "d"; v3 repeats v2
    assert check("BACKWARD", [v1, v2], v3) == []
    (change,) = check("BACKWARD_TRANSITIVE", [v1, v2], v3)
    assert change.kind == "enum_shrunk" and "'d'" in change.text
    assert check("NONE", [v1], {"type": "string"}) == []


def test_major_of() -> None:
    assert major_of("demo/v2/Name") == 2
    assert major_of("schemas/v10/name.json") == 10
    assert major_of("name.json") is None


def write(tmp_path: Path, name: str, schema: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(schema))
    return str(path)


def test_cli_exits_non_zero_on_a_break_without_a_major_bump(tmp_path: Path) -> None:
    old = write(tmp_path, "old.json", {**BASE, "$id": "demo/v1/Name"})
    same_major = write(tmp_path, "new.json", {**changed(prop_note=None), "$id": "demo/v1/Name"})
    bumped = write(tmp_path, "v2.json", {**changed(prop_note=None), "$id": "demo/v2/Name"})
    ok = write(tmp_path, "ok.json", {**BASE, "description": "a name", "$id": "demo/v1/Name"})

    broke = run_cbs("schema", "check", old, same_major, env=cli_env())
    assert broke.returncode == 1
    assert "BACKWARD: note: field_removed" in broke.stdout
    assert broke.stderr.strip().splitlines() == [
        "cbs: error: 1 breaking change(s) in BACKWARD mode without a major version bump"
    ]
    allowed = run_cbs("schema", "check", old, bumped, env=cli_env())
    assert allowed.returncode == 0, allowed.stderr
    assert "field_removed" in allowed.stdout and "v1 -> v2" in allowed.stderr
    fine = run_cbs("schema", "check", "--mode", "full", old, ok, "--json", env=cli_env())
    assert fine.returncode == 0
    assert json.loads(fine.stdout)["compatible"] is True
    missing = run_cbs("schema", "check", old, str(tmp_path / "nope.json"), env=cli_env())
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
