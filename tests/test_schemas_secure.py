"""Under --secure only admin may write the schema registry: a body running as
a cell identity serves its verbs (validation included) and says in one
WARNING line that it published nothing; an admin body publishes them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from schema_cells import greeter

import cbs.nats.plugin
import cbs.schemas.plugin
from cbs.contracts import BadRequest
from cbs.kernel import Body
from cbs.nats import NatsConnection
from cbs.nats.secure import SecureSetup
from cbs.nats.server import NatsServer
from cbs.schemas import Registry, published
from cbs.testing import CellsPlugin


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[tuple[SecureSetup, NatsServer]]:
    setup = SecureSetup.create(tmp_path / "secure")
    setup.add_cell("greeter")
    server = NatsServer(extra_config=setup.server_config()).start()
    try:
        yield setup, server
    finally:
        server.stop()


def body_as(setup: SecureSetup, url: str, name: str, *plugins: Any) -> Body:
    config = {
        "nats_url": url,
        "nats_creds": str(setup.creds_path(name)),
        "tls_ca": str(setup.ca.cert),
    }
    return Body(config, plugins=[cbs.nats.plugin, *plugins], autoload=False, environ={})


async def test_only_admin_publishes(
    secure: tuple[SecureSetup, NatsServer], caplog: pytest.LogCaptureFixture
) -> None:
    setup, server = secure
    caplog.set_level(logging.WARNING, logger="cbs.schemas")
    cell = body_as(setup, server.url, "greeter", cbs.schemas.plugin, CellsPlugin(greeter()))
    admin = body_as(setup, server.url, "admin", cbs.schemas.plugin)
    try:
        await cell.start()
        await admin.start(serve=False)
        await published(cell)
        warnings = [r.getMessage() for r in caplog.records if r.name == "cbs.schemas"]
        assert len(warnings) == 1 and "schemas not published to CBS_SCHEMAS" in warnings[0]
        reply = await admin.request(
            "greeter", "say_hello", {"name": "Ada Lovelace"}, schema="demo/v1/Name"
        )
        assert reply == {"message": "Hello Ada Lovelace!"}
        with pytest.raises(BadRequest):
            await admin.request("greeter", "say_hello", {"first": 1}, schema="demo/v2/Name")
        conn = admin.capabilities.require(NatsConnection, needed_by="test")
        assert await Registry(conn.jetstream(timeout=5.0)).history("greeter", "say_hello") == []

        await admin.add_cell(greeter())  # the admin body serves (and publishes) too
        await published(admin)
        versions = await Registry(conn.jetstream(timeout=5.0)).history("greeter", "say_hello")
        assert [e["label"] for e in versions] == ["demo/v1/Name", "demo/v2/Name"]
    finally:
        await admin.stop()
        await cell.stop()
