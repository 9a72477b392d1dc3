"""Resident memory of a body, for ``python -m benchmarks`` (scenario ``memory``).

    python -m benchmarks.memory nats://127.0.0.1:PORT [--loop uvloop]

Prints one JSON object, in KiB: ``idle body`` (a started body with every
first-party plugin, serving the bench cell, after a few requests), ``per 1000
requests in flight`` (the growth with 1000 requests waiting in a held handler,
caller and responder sides in this process).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
from typing import Any

from benchmarks.stacks import PAYLOAD, cbs_call, full_plugins, make_body
from cbs.kernel import Cell, CellRegistry, Config, hookimpl
from cbs.kernel.cli import loop_factory

IN_FLIGHT = 1000


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Hold:
    """A cell whose handler waits until ``release`` is set."""

    name = "hold"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.all_arrived = asyncio.Event()
        self.arrived = 0

    async def handle(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.arrived += 1
        if self.arrived == IN_FLIGHT:
            self.all_arrived.set()
        await self.release.wait()
        return {"n": payload["id"]}

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cell = Cell(
            "hold_cell",
            service="hold",
            category="logic",
            version="1.0.0",
            purpose="Holds requests",
            max_concurrency=2 * IN_FLIGHT,
        )
        cell.add_verb("wait", self.handle, schema="bench/v1/Hold")
        cells.add(cell)


async def main(url: str) -> dict[str, int]:
    hold = Hold()
    body = make_body(*full_plugins(), hold, nats_url=url)
    await body.start()
    call = cbs_call(body)
    for _ in range(200):
        await call(PAYLOAD)
    gc.collect()
    figures = {"idle body": rss_kib()}
    waiting = [
        asyncio.ensure_future(body.request("hold", "wait", PAYLOAD, timeout=60))
        for _ in range(IN_FLIGHT)
    ]
    await asyncio.wait_for(hold.all_arrived.wait(), 30)
    figures["per 1000 requests in flight"] = rss_kib() - figures["idle body"]
    hold.release.set()
    await asyncio.gather(*waiting)
    await body.stop()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--loop", default="asyncio")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        print(json.dumps(runner.run(main(args.url))))
