"""Plugin discovery through real entry points, packaging rules, failure messages."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import importlib_metadata
import pytest

from cbs.kernel import Body, PluginError, hookimpl

ROOT = Path(__file__).resolve().parent.parent


def run_cbs(*args: str, pythonpath: Path | None = None, **env: str) -> Any:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CBS_")}
    full_env.update(CBS_TRANSPORT="local", **env)
    if pythonpath is not None:
        full_env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "cbs.kernel.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


def fake_distribution(site: Path, dist: str, entry_name: str, module: str, code: str) -> None:
    """A real installed distribution (dist-info with an entry point) in ``site``."""
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[cbs]\n{entry_name} = {module}\n")


# -- packaging ------------------------------------------------------------------------------


def test_no_distribution_ships_cbs_init() -> None:
    """``cbs`` is a PEP 420 namespace shared by several distributions."""
    for dist in importlib_metadata.distributions():
        name = dist.metadata["Name"] or ""
        if not name.startswith(("cbs", "cell-body-system")):
            continue
        files = [str(f) for f in dist.files or []]
        assert "cbs/__init__.py" not in files, name
    assert not list(ROOT.glob("*/cbs/__init__.py"))
    assert not list(ROOT.glob("plugins/*/cbs/__init__.py"))


def test_nothing_installs_bare_kernel_or_contracts() -> None:
    code = "import importlib.util as u; print(u.find_spec('kernel'), u.find_spec('contracts'))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    )
    assert out.stdout.strip() == "None None"


def test_kernel_never_imports_first_party_plugins() -> None:
    forbidden = {
        "nats",
        "cbs.nats",
        "cbs.jetstream",
        "cbs.tracing",
        "cbs.metrics",
        "cbs.breaker",
        "cbs.chaos",
    }
    for path in (ROOT / "kernel" / "cbs" / "kernel").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in forbidden), (
                    f"{path.name} imports {name}"
                )


def test_loading_happens_at_body_build_not_at_import() -> None:
    code = (
        "import sys, cbs.kernel, cbs.contracts;"
        "print(any(m.startswith('cbs.greeter') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- a real third-party plugin distribution -------------------------------------------------


@pytest.fixture(scope="module")
def hello_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/plugins/hello installed (pip, no dependencies) into a private folder."""
    site = tmp_path_factory.mktemp("hello-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(ROOT / "tests" / "plugins" / "hello"),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return site


def test_installed_third_party_plugin_is_discovered_and_served(hello_site: Path) -> None:
    plugins = run_cbs("plugins", "--json", pythonpath=hello_site)
    assert plugins.returncode == 0, plugins.stderr
    hello = next(p for p in json.loads(plugins.stdout) if p["name"] == "hello")
    assert hello["distribution"] == "cbs-hello"
    assert hello["registered"] == {"cells": ["hello"]}
    assert hello["version"] == "1.0.0"
    cells = json.loads(run_cbs("cells", "--json", pythonpath=hello_site).stdout)
    assert any(c["id"] == "hello" and c["plugin"] == "hello" for c in cells)
    call = run_cbs("call", "hello.hi", '{"who": "you"}', pythonpath=hello_site)
    assert call.returncode == 0, call.stderr
    assert json.loads(call.stdout) == {"text": "hi you"}
    blocked = run_cbs("-p", "no:hello", "call", "hello.hi", "{}", pythonpath=hello_site)
    assert blocked.returncode == 1 and blocked.stderr.startswith("NotFound:")


# -- failures name the plugin ------------------------------------------------------------


def test_plugin_failing_to_import_stops_startup_with_one_line(tmp_path: Path) -> None:
    fake_distribution(
        tmp_path, "cbs-broken", "broken", "cbs_broken", "raise ImportError('no module x')\n"
    )
    result = run_cbs("cells", pythonpath=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "'broken'" in lines[0] and "cbs-broken" in lines[0] and "no module x" in lines[0]
    debug = run_cbs("--debug", "cells", pythonpath=tmp_path)
    assert "Traceback" in debug.stderr and "no module x" in debug.stderr
    # Blocking the broken plugin lets everything else start.
    assert run_cbs("-p", "no:broken", "cells", pythonpath=tmp_path).returncode == 0


def test_misspelled_hook_is_refused(tmp_path: Path) -> None:
    code = """
        import pluggy
        hookimpl = pluggy.HookimplMarker("cbs")

        @hookimpl
        def cbs_register_cell(cells, config):
            pass
    """
    fake_distribution(tmp_path, "cbs-typo", "typo", "cbs_typo", code)
    result = run_cbs("plugins", pythonpath=tmp_path)
    assert result.returncode == 2
    assert "cbs_register_cell" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unmarked_hook_function_is_refused() -> None:
    class Unmarked:
        name = "unmarked"

        def cbs_register_cells(self, cells: Any, config: Any) -> None:
            pass

    with pytest.raises(PluginError, match="lacks the @hookimpl marker"):
        Body(plugins=[Unmarked()], autoload=False)


def test_failing_registration_names_the_plugin() -> None:
    class Failing:
        name = "failing"

        @hookimpl
        def cbs_add_options(self, options: Any) -> None:
            raise RuntimeError("kaput")

    with pytest.raises(PluginError, match=r"plugin 'failing' failed in cbs_add_options"):
        Body(plugins=[Failing()], autoload=False)


def test_two_plugins_registering_one_name_conflict() -> None:
    class Dup:
        name = "dup"

        @hookimpl
        def cbs_add_options(self, options: Any) -> None:
            options.add("transport", help="again")

    # Hooks run in pluggy's order (the last registered first): dup comes first.
    with pytest.raises(
        PluginError,
        match="plugin 'core' registers option 'transport', already registered by plugin 'dup'",
    ):
        Body(plugins=[Dup()], autoload=False)


def test_readme_plugin_example_is_the_tested_plugin() -> None:
    """The README's 'write your own cell plugin' is tests/plugins/hello, verbatim."""
    readme = (ROOT / "README.md").read_text()
    hello = ROOT / "tests" / "plugins" / "hello"
    assert f"# cbs_hello.py\n{(hello / 'cbs_hello.py').read_text()}```" in readme
    assert f"# pyproject.toml\n{(hello / 'pyproject.toml').read_text()}```" in readme


# -- commands named by reference ------------------------------------------------------------


def test_a_command_named_by_reference_is_imported_only_when_it_runs(tmp_path: Path) -> None:
    fake_distribution(
        tmp_path,
        "cbs-late",
        "late",
        "cbs_late",
        """
        import pluggy
        hookimpl = pluggy.HookimplMarker("cbs")

        @hookimpl
        def cbs_add_commands(commands):
            commands.add(
                "late",
                help="a command in a module of its own",
                run="cbs_late_command:run",
                configure="cbs_late_command:configure",
            )
            commands.add("broken", help="names a module that is not there", run="cbs_nowhere:run")
        """,
    )
    (tmp_path / "cbs_late_command.py").write_text(
        textwrap.dedent(
            """
            import sys
            print("imported", file=sys.stderr)

            def configure(parser):
                parser.add_argument("word")

            async def run(body, args):
                print(args.word.upper())
                return 3
            """
        )
    )
    listed = run_cbs("plugins", pythonpath=tmp_path)
    assert listed.returncode == 0 and "imported" not in listed.stderr
    assert "late" in listed.stdout
    ran = run_cbs("late", "hi", pythonpath=tmp_path)
    assert (ran.returncode, ran.stdout, ran.stderr) == (3, "HI\n", "imported\n")
    broken = run_cbs("broken", pythonpath=tmp_path)
    assert broken.returncode == 2
    assert broken.stderr.strip().splitlines() == [
        "cbs: error: plugin 'late': 'cbs_nowhere:run' cannot be loaded"
        " (ModuleNotFoundError: No module named 'cbs_nowhere')"
    ]


@pytest.mark.parametrize("given", ["cbs_late_command", "cbs late:run", "a:b:c", ":run", "mod:"])
def test_a_reference_that_is_not_module_colon_function_is_refused(given: str) -> None:
    class Commands:
        name = "refs"

        @hookimpl
        def cbs_add_commands(self, commands: Any) -> None:
            commands.add("refs", help="a bad reference", run=given)

    with pytest.raises(PluginError, match=r"not a 'package.module:function' reference"):
        Body(plugins=[Commands()], autoload=False)
