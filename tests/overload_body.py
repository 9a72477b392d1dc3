"""A body serving one slow verb on NATS, run as a subprocess by the overload
tests: ``python overload_body.py NATS_URL CONCURRENCY``. Prints ``ready`` on
stdout once it serves; stops (drains) on SIGTERM. Options such as
``CBS_MAX_PENDING_BYTES`` come from the environment."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from cbs.kernel import Body, Cell
from cbs.nats import plugin as nats_plugin
from cbs.testing import CellsPlugin

SCHEMA = "overload/v1/Work"


def slow_cell(concurrency: int) -> Cell:
    cell = Cell(
        "slow",
        category="logic",
        version="1.0.0",
        purpose="takes its time",
        max_concurrency=concurrency,
    )

    @cell.verb("work", schema=SCHEMA)
    async def work(payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(float(payload.get("seconds", 1.0)))
        return {"n": payload.get("n")}

    return cell


async def main(url: str, concurrency: int) -> None:
    body = Body(
        {"transport": "nats", "nats_url": url},
        plugins=[nats_plugin, CellsPlugin(slow_cell(concurrency))],
        autoload=False,
        environ=os.environ,
    )
    await body.start()
    await body.run_until_signal(on_ready=lambda: print("ready", flush=True))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
