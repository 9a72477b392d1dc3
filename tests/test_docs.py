"""The docs cannot drift: every hook has a section in docs/writing-plugins.md
whose code is quoted verbatim from tests/examples/example_plugin.py, which
implements every hook and is itself tested."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from example_kit import load_example

from cbs.kernel import hookspecs

ROOT = Path(__file__).resolve().parents[1]
WRITING_PLUGINS = ROOT / "docs" / "writing-plugins.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
EXAMPLE = ROOT / "tests" / "examples" / "example_plugin.py"

HOOKS: dict[str, Callable[..., Any]] = {
    name: value
    for name, value in vars(hookspecs).items()
    if name.startswith("cbs_") and inspect.isfunction(value)
}

_HEADING = re.compile(r"^(#{1,3}) (.+)$", re.M)
_CODE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
_MARKED = re.compile(r"^# --- docs: (\w+) ---\n(.*?)^# --- end ---$", re.S | re.M)


def doc_sections(text: str) -> dict[str, str]:
    """``### name`` heading -> the text up to the next heading of level 1 to 3."""
    headings = list(_HEADING.finditer(text))
    sections = {}
    for here, after in zip(headings, [*headings[1:], None], strict=True):
        if here.group(1) == "###":
            end = after.start() if after else len(text)
            sections[here.group(2).strip()] = text[here.end() : end]
    return sections


def code_blocks(text: str) -> list[str]:
    return [block.rstrip("\n") for block in _CODE.findall(text)]


def marked_sections(text: str) -> dict[str, str]:
    """Hook name -> the lines between its ``# --- docs:`` and ``# --- end ---``
    markers, without the blank lines around them."""
    found: dict[str, str] = {}
    for match in _MARKED.finditer(text):
        assert match.group(1) not in found, f"section {match.group(1)} is marked twice"
        found[match.group(1)] = match.group(2).strip("\n")
    return found


def signature_line(name: str) -> str:
    """``def name(arg: Type, ...) -> None`` as the hookspec declares it."""
    sig = inspect.signature(HOOKS[name])
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {name}({params}) -> {sig.return_annotation}"


DOC_SECTIONS = doc_sections(WRITING_PLUGINS.read_text(encoding="utf-8"))
EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")
MARKED = marked_sections(EXAMPLE_TEXT)


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 11


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_has_a_section(name: str) -> None:
    assert name in DOC_SECTIONS, f"docs/writing-plugins.md lacks a '### {name}' section"


def test_no_section_for_a_hook_that_does_not_exist() -> None:
    stale = sorted(h for h in DOC_SECTIONS if h.startswith("cbs_") and h not in HOOKS)
    assert stale == []


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_section_shows_the_signature(name: str) -> None:
    blocks = code_blocks(DOC_SECTIONS[name])
    assert blocks, f"section {name} has no python code block"
    assert blocks[0] == signature_line(name)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_section_code_is_quoted_from_the_example(name: str) -> None:
    quotes = code_blocks(DOC_SECTIONS[name])[1:]
    assert name in MARKED, f"example_plugin.py has no '# --- docs: {name} ---' section"
    for quote in quotes:
        assert quote in EXAMPLE_TEXT, f"section {name} quotes code not in example_plugin.py"
        assert quote in MARKED[name], f"section {name} quotes code from another section"
    # The whole marked section is quoted, so a change to it must reach the docs.
    assert MARKED[name] in quotes, f"section {name} does not quote the marked section whole"


def test_marked_sections_are_hooks() -> None:
    assert sorted(MARKED) == sorted(HOOKS)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_example_implements_the_hook(name: str) -> None:
    example = load_example()
    impl = getattr(example, name, None)
    assert impl is not None, f"example_plugin.py does not implement {name}"
    assert hasattr(impl, "cbs_impl"), f"{name} in example_plugin.py lacks @hookimpl"
    assert f"def {name}(" in MARKED[name], f"{name} is defined outside its marked section"


def test_an_async_lifecycle_hook_is_shown() -> None:
    example = load_example()
    assert any(inspect.iscoroutinefunction(getattr(example, name)) for name in HOOKS)


def test_architecture_lists_the_firing_order() -> None:
    """The order in docs/architecture.md is the one in the hookspecs docstring."""

    def order(text: str) -> list[str]:
        return list(dict.fromkeys(re.findall(r"cbs_[a-z_]+", text)))

    documented = order((hookspecs.__doc__ or "").split("Firing order")[1])
    assert sorted(documented) == sorted(HOOKS)
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Hooks and their firing order")[1].split("\n## ")[0]
    assert order(section) == documented
