"""cbs.kernel.entry_points gives importlib_metadata's answer, or none at all.

Plugins are found by reading the metadata directories on sys.path directly
(importlib_metadata costs about 40 ms of every command's start-up). These
tests compare the two on this environment, on made-up paths with shadowed,
invalid and legacy distributions, and on arbitrary entry_points.txt texts;
and check that a path only importlib_metadata can read is left to it.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import importlib_metadata
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbs.kernel import Body
from cbs.kernel.entry_points import distributions, scan
from cbs.kernel.plugins import Selection, core_distribution

GROUPS = ("cbs", "console_scripts", "pytest11", "opentelemetry_traces_exporter", "none_such")


def theirs(group: str) -> list[tuple[str, str, str, str]]:
    return [
        (e.name, e.value, e.group, str(e.dist._path))  # type: ignore[attr-defined]
        for e in importlib_metadata.entry_points(group=group)
    ]


def mine(group: str) -> list[tuple[str, str, str, str]]:
    found = scan(group)
    assert found is not None
    return [(e.name, e.value, e.group, e.dist.path) for e in found]


@pytest.mark.parametrize("group", GROUPS)
def test_this_environment_gives_the_same_entry_points(group: str) -> None:
    assert mine(group) == theirs(group)


def test_the_plugins_load_to_the_same_objects() -> None:
    found = scan("cbs")
    assert found is not None and len(found) >= 10
    expected = {e.name: e.load() for e in importlib_metadata.entry_points(group="cbs")}
    assert {e.name: e.load() for e in found} == expected


def test_the_core_distribution_is_found_as_importlib_metadata_finds_it() -> None:
    found = core_distribution()
    assert found is not None
    assert found[1] == importlib_metadata.version(found[0])


def dist(root: Path, stem: str, *, metadata: str | None = "Name: x\n", eps: str = "") -> Path:
    path = root / stem
    path.mkdir(parents=True)
    if metadata is not None:
        (path / "METADATA").write_text(metadata)
    if eps:
        (path / "entry_points.txt").write_text(eps)
    return path


def test_made_up_paths_give_the_same_distributions_and_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    dist(first, "zeta-1.0.dist-info", eps="[probe]\nz = m:z\n")
    dist(
        first, "Foo.Bar-1.0.dist-info", eps="[probe]\n# a comment\n\n  fb =  m.n : o.p [extra]  \n"
    )
    # no metadata here: the valid one further along the path wins, and comes first
    dist(first, "qux-1.0.dist-info", metadata=None, eps="[probe]\nq = shadowed:q\n")
    dist(first, "foo_bar-0.9.dist-info", eps="[probe]\nfb = later:same_name\n")
    dist(second, "foo-bar-2.0.dist-info", eps="[probe]\nfb = shadowed:fb\n")
    dist(second, "qux-2.0.dist-info", eps="[probe]\nq = m:q\n[other]\nq = no:no\n")
    legacy = second / "old_thing.egg-info"
    legacy.mkdir()
    (legacy / "PKG-INFO").write_text("Name: old-thing\n")
    (legacy / "entry_points.txt").write_text("[probe]\nold = old_thing\n")
    dist(second, "empty-1.0.dist-info", metadata="", eps="[probe]\ne = m:e\n")  # valid: it is there
    dist(second, "none-1.0.dist-info", metadata=None, eps="[probe]\nn = m:n\n")
    monkeypatch.setattr(sys, "path", [str(first), str(second), str(tmp_path / "missing")])
    assert mine("probe") == theirs("probe")
    names = [n for n, *_ in mine("probe")]
    assert names[-1] == "n" and "q" in names  # the invalid ones come last
    chosen = distributions()
    assert chosen is not None
    assert chosen["qux"].path.endswith("qux-2.0.dist-info")
    assert chosen["foo_bar"].path.startswith(str(first))


def test_a_zip_on_the_path_is_left_to_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cbs_zipped.py", "from cbs.kernel import hookimpl\n")
        zf.writestr("cbs_zipped-1.0.dist-info/METADATA", "Name: cbs-zipped\nVersion: 1.0\n")
        zf.writestr("cbs_zipped-1.0.dist-info/entry_points.txt", "[cbs]\nzipped = cbs_zipped\n")
    monkeypatch.setattr(sys, "path", [str(archive), *sys.path])
    assert scan("cbs") is None
    body = Body(selection=Selection(autoload=False, allow=frozenset({"zipped"})), environ={})
    assert body.plugins["zipped"].distribution == "cbs-zipped"
    assert body.plugins["zipped"].version == "1.0"
    sys.modules.pop("cbs_zipped", None)


def test_a_line_importlib_metadata_cannot_parse_is_left_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist(tmp_path, "broken-1.0.dist-info", eps="[probe]\nno equals sign here\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert scan("probe") is None


LINE = st.one_of(
    st.sampled_from(["[probe]", "[other]", "[ probe ]", "[[probe]]", "", "   ", "# x = y", "="]),
    st.builds(
        lambda n, v, pad: f"{pad}{n}{pad}={pad}{v}{pad}",
        st.text("ab_. -", min_size=0, max_size=4),
        st.text("ab.:_ [x]", min_size=0, max_size=8),
        st.sampled_from(["", " ", "\t"]),
    ),
    st.text("ab=[]# \t", max_size=6),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(LINE, max_size=8))
def test_any_entry_points_text_reads_as_importlib_metadata_reads_it(
    lines: list[str], tmp_path: Path
) -> None:
    root = tmp_path / "eps"
    path = root / "probe-1.0.dist-info"
    path.mkdir(parents=True, exist_ok=True)
    (path / "METADATA").write_text("Name: probe\n")
    text = "\n".join(lines)
    (path / "entry_points.txt").write_text(text)
    try:
        everything = list(importlib_metadata.Distribution.at(path).entry_points)
    except Exception:  # a line with no '=' in a section: importlib_metadata fails
        for group in ("probe", "[probe]"):
            assert scan(group, [str(root)]) is None
        return
    for group in ("probe", "[probe]", "other"):
        found = scan(group, [str(root)])
        assert found is not None
        expected = [(e.name, e.value) for e in everything if e.group == group]
        assert [(e.name, e.value) for e in found] == expected
