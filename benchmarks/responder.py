"""The responders of ``--split``, in their own process: a raw nats-py
subscriber and a CBS body serving the benchmark cell on the same server.

    python -m benchmarks.responder nats://127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys

import nats

from benchmarks.stacks import make_body, raw_responder
from cbs.nats import plugin as nats_plugin


async def main(url: str) -> None:
    nc = await nats.connect(url)
    await raw_responder(nc)
    body = make_body(nats_plugin, nats_url=url)
    await body.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await body.stop()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
