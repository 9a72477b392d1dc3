"""A pool worker for the ``pool`` benchmark: a body serving one CPU-bound cell
(``cbs.bench_cpu.work``), with cbs-pool's heartbeats.

    python -m benchmarks.cpu_worker nats://127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from cbs.kernel import Body, Cell, CellRegistry, Config, hookimpl
from cbs.nats import plugin as nats_plugin
from cbs.pool import plugin as pool_plugin

#: Work per request: about 20 ms of pure Python on this machine, so that the
#: caller and nats-server (on the same two cores) take a small share.
SPINS = 240_000


def work(payload: dict[str, Any]) -> dict[str, Any]:
    total = 0
    for i in range(int(payload.get("spins", SPINS))):
        total += i * i % 7
    return {"total": total}


class CpuPlugin:
    name = "bench_cpu"

    @hookimpl
    def cbs_register_cells(self, cells: CellRegistry, config: Config) -> None:
        cell = Cell("bench_cpu", category="logic", version="1.0.0", purpose="burns CPU", threads=1)
        cell.add_verb("work", work, schema="bench/v1/Work")
        cells.add(cell)


async def main(url: str) -> None:
    body = Body(
        {"transport": "nats", "nats_url": url},
        plugins=[nats_plugin, pool_plugin, CpuPlugin()],
        autoload=False,
    )
    await body.start()
    await body.run_until_signal()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
