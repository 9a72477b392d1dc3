"""The responders of ``--split``, in their own process: a raw nats-py
subscriber, a CBS body with the nats plugin only, a CBS body with every
first-party plugin, and a FastStream subscriber (when installed), all on the
same server.

    python -m benchmarks.responder nats://127.0.0.1:PORT [--loop uvloop] [--otlp URL]

With ``--otlp``, two more bodies with every first-party plugin export their
spans to that OTLP/HTTP sink: every span, and 10 % of new traces.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import nats

from benchmarks.stacks import (
    EXPORTED_SERVICE,
    FULL_SERVICE,
    SAMPLED_RATIO,
    SAMPLED_SERVICE,
    exporting,
    faststream_missing,
    faststream_responder,
    full_plugins,
    make_body,
    raw_responder,
)
from cbs.kernel.cli import loop_factory
from cbs.nats import plugin as nats_plugin


async def main(url: str, otlp: str | None) -> None:
    nc = await nats.connect(url)
    await raw_responder(nc)
    bodies = [
        make_body(nats_plugin, nats_url=url),
        make_body(*full_plugins(), service=FULL_SERVICE, nats_url=url),
    ]
    for body in bodies:
        await body.start()
    if otlp:
        for service, ratio in ((EXPORTED_SERVICE, None), (SAMPLED_SERVICE, SAMPLED_RATIO)):
            body = make_body(*full_plugins(), service=service, nats_url=url)
            with exporting(otlp, ratio):
                await body.start()
            bodies.append(body)
    broker = None if faststream_missing() else await faststream_responder(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    if broker is not None:
        await broker.stop()
    for body in bodies:
        await body.stop()
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--otlp", default=None)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(main(args.url, args.otlp))
