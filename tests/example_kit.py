"""Loading tests/examples/example_plugin.py, the example plugin the docs quote."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

EXAMPLE = Path(__file__).parent / "examples" / "example_plugin.py"


def load_example() -> types.ModuleType:
    """A fresh copy of the example module (test bodies do not share its objects)."""
    spec = importlib.util.spec_from_file_location("example_plugin", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
