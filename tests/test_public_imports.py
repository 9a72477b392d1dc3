"""Distributions meet only through public names: no module imports another
distribution's private modules or names, and nothing depends on the
unrelated PyPI project ``cbs``."""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: package folder -> distribution folder (the core ships kernel, contracts, testing)
SOURCES = {
    **{p: ROOT for p in ("kernel/cbs/kernel", "kernel/cbs/testing", "contracts/cbs/contracts")},
    **{str(d.relative_to(ROOT) / "cbs" / d.name): d for d in (ROOT / "plugins").iterdir()},
}


def _package(module: str) -> str:
    """``cbs.nats.transport`` -> ``cbs.nats``."""
    return ".".join(module.split(".")[:2])


def _distribution_of_package() -> dict[str, Path]:
    return {"cbs." + Path(folder).name: dist for folder, dist in SOURCES.items()}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((a.name, [], node.lineno) for a in node.names)
    return [f for f in found if f[0].startswith("cbs.")]


def cross_imports() -> list[tuple[str, str, list[str], int]]:
    owner = _distribution_of_package()
    rows = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            here = owner["cbs." + Path(folder).name]
            for module, names, line in _imports(path):
                there = owner.get(_package(module))
                if there is not None and there != here:
                    rows.append((str(path.relative_to(ROOT)), module, names, line))
    return rows


def test_there_are_imports_across_distributions() -> None:
    assert len(cross_imports()) > 20


@pytest.mark.parametrize("where,module,names,line", cross_imports())
def test_only_public_names_cross_a_distribution(
    where: str, module: str, names: list[str], line: int
) -> None:
    assert not any(part.startswith("_") for part in module.split(".")), (
        f"{where}:{line} imports the private module {module}"
    )
    target = importlib.import_module(module)
    public = getattr(target, "__all__", None)
    for name in names:
        assert not name.startswith("_"), f"{where}:{line} imports private {module}.{name}"
        if public is not None and name not in public:
            is_package = hasattr(target, "__path__")
            submodule = f"{module}.{name}"
            assert is_package and importlib.util.find_spec(submodule) is not None, (
                f"{where}:{line} imports {module}.{name}, which {module}.__all__ does not list"
            )


def test_the_check_catches_a_private_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from cbs.nats._watchdog import is_receiving\n", encoding="utf-8")
    assert _imports(bad) == [("cbs.nats._watchdog", ["is_receiving"], 1)]


@pytest.mark.parametrize(
    "setup", sorted(ROOT.glob("plugins/*/setup.cfg")), ids=lambda p: p.parent.name
)
def test_no_distribution_depends_on_the_unrelated_cbs(setup: Path) -> None:
    config = configparser.ConfigParser()
    config.read(setup)
    requires = config.get("options", "install_requires", fallback="").split()
    names = {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in requires}
    assert "cbs" not in names
    assert "cell-body-system" in names


#: Packages whose public names are imported when first read (PEP 562).
PLUGIN_PACKAGES = sorted(
    f"cbs.{d.name}" for d in (ROOT / "plugins").iterdir() if (d / "cbs" / d.name).is_dir()
)
LAZY_PACKAGES = ["cbs.kernel", "cbs.contracts", *PLUGIN_PACKAGES]


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    names = getattr(module, "__all__", [])
    assert names, f"{package} lists no public names"
    missing = [name for name in names if not hasattr(module, name)]
    assert missing == [], f"{package}.__all__ names what it cannot give: {missing}"
    assert set(names) <= set(dir(module))
