"""The transport conformance suite of cbs.testing, on every transport CBS has:
the built-in local bus, NATS on a real nats-server, and the example plugin's
third-party transport (built on the public transport kit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from example_kit import load_example

from cbs.testing.conformance import TransportConformance, TransportUnderTest

EXAMPLE = Path(__file__).parent / "examples" / "example_plugin.py"


@pytest.fixture(params=["local", "nats", "example_local"])
def cbs_transport(request: pytest.FixtureRequest) -> TransportUnderTest:
    if request.param == "nats":
        import cbs.nats.plugin

        server: Any = request.getfixturevalue("nats_server")
        return TransportUnderTest([cbs.nats.plugin], {"transport": "nats", "nats_url": server.url})
    if request.param == "example_local":
        return TransportUnderTest([load_example()], {"transport": "example_local"})
    return TransportUnderTest([], {"transport": "local"})


class TestEveryTransport(TransportConformance):
    pass
