"""A consuming body for the kill -9 tests, run as its own process:

    python tests/jetstream_ledger_body.py NATS_URL DB_PATH [KEY=VALUE ...]

It serves the durable verb ``ledger.apply``, whose handler records every run
in the sqlite file ``DB_PATH`` (table ``runs``: envelope id, ``Cbs-Delivery``,
``Cbs-Redelivered``, pid, and whether it applied the effect). It follows the
documented pattern for flagged deliveries: a run flagged ``Cbs-Redelivered``
first looks whether the effect is there already (the only runs that need to
look). Prints ``ready`` once the inbox pulls; runs until killed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from typing import Any

from cbs.jetstream import plugin as jetstream_plugin
from cbs.jetstream.inbox import DELIVERY_HEADER, REDELIVERED_HEADER
from cbs.kernel import Body, Cell, CellRegistry, Config, current_request, hookimpl
from cbs.nats import plugin as nats_plugin

SCHEMA = "ledger/v1/Entry"


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS runs (id TEXT, delivery INT, redelivered INT,"
        " pid INT, applied INT)"
    )
    return db


class Ledger:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.cell = Cell(
            "ledger",
            category="storage",
            version="1.0.0",
            purpose="Applies each entry once",
            max_concurrency=100,
        )
        pid = os.getpid()

        @self.cell.verb("apply", schema=SCHEMA, durable=True)
        async def apply(payload: dict[str, Any]) -> dict[str, Any]:
            request = current_request()
            ident = request.envelope.id
            flagged = request.headers.get(REDELIVERED_HEADER) == "1"
            delivery = int(request.headers.get(DELIVERY_HEADER, "0"))
            applied = 1
            if flagged:  # may have run before: look
                seen = db.execute("SELECT 1 FROM runs WHERE id = ? AND applied = 1", (ident,))
                applied = 0 if seen.fetchone() else 1
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
                (ident, delivery, int(flagged), pid, applied),
            )
            return {"ok": True}

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cells.add(self.cell)


async def main(url: str, path: str, options: list[str]) -> None:
    config: dict[str, Any] = {"nats_url": url}
    for option in options:
        name, _, value = option.partition("=")
        config[name] = value
    body = Body(
        config,
        plugins=[nats_plugin, jetstream_plugin, Ledger(connect(path))],
        autoload=False,
        environ={},
    )
    await body.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
