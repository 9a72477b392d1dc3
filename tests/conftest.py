from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest_plugins = ["cbs_process", "otlp_receiver"]


def _process_globals() -> tuple[Any, ...]:
    """What bodies must leave as they found it: OpenTelemetry's global tracer
    provider (``None`` while none is set), the log record factory, and the
    CBS metric families in prometheus_client's default registry (none)."""
    provider = None
    trace = sys.modules.get("opentelemetry.trace")
    if trace is not None:
        current = trace.get_tracer_provider()
        provider = None if isinstance(current, trace.ProxyTracerProvider) else current
    families: list[str] = []
    prometheus = sys.modules.get("prometheus_client")
    if prometheus is not None:
        collected = prometheus.REGISTRY.collect()
        families = sorted(m.name for m in collected if m.name.startswith("cbs_"))
    return provider, logging.getLogRecordFactory(), families


@pytest.fixture(autouse=True)
def _no_process_global_leaks() -> Iterator[None]:
    """Every test leaves the process globals as it found them (checked after
    its other fixtures, ``make_body``'s stopping of bodies included)."""
    before = _process_globals()
    yield
    after = _process_globals()
    names = ("tracer provider", "log record factory", "cbs_* families in REGISTRY")
    changed = [n for n, b, a in zip(names, before, after, strict=True) if b is not a and b != a]
    assert not changed, f"the test left process-global state changed: {', '.join(changed)}"
