"""``cbs demo``: the greeting flow prompt_name -> greet -> print_greeting.

``cbs demo --polyglot`` runs the same flow with greet written in JavaScript
(``sdks/js/examples/greet.js``, a sidecar process on the embedded NATS server
or ``--nats-url``), prompt_name and print_greeting in Python.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from cbs.kernel import Body, UsageError

__all__ = ["DEMO_CELLS", "configure_demo", "run_demo"]

#: The cells of the demo flow, in the order the flow calls them.
DEMO_CELLS = ("prompt_name", "greet", "print_greeting")


def configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="the name to greet (default: ask for it)")
    parser.add_argument(
        "--no-serve",
        action="store_true",
        help="only run the flow; the cells are served by other processes",
    )
    parser.add_argument(
        "--polyglot",
        action="store_true",
        help="greet in JavaScript: a sidecar from sdks/js (needs node and npm ci there)",
    )
    parser.add_argument(
        "--greet-js",
        metavar="FILE",
        help="the JavaScript greet cell for --polyglot (default: sdks/js/examples/greet.js)",
    )


#: The JavaScript greet cell, in a source checkout (plugins/greeter/cbs/greeter/demo.py).
GREET_JS = Path(__file__).resolve().parents[4] / "sdks" / "js" / "examples" / "greet.js"


def _sidecar_command(args: argparse.Namespace) -> list[str]:
    node = shutil.which("node")
    if node is None:
        raise UsageError("cbs demo --polyglot needs node (Node.js 20 or later) on PATH")
    script = Path(args.greet_js) if args.greet_js else GREET_JS
    if not script.is_file():
        raise UsageError(f"cbs demo --polyglot: no JavaScript greet cell at {script} (--greet-js)")
    packages = script.parent.parent / "node_modules"
    if args.greet_js is None and not packages.is_dir():
        raise UsageError(f"cbs demo --polyglot: run 'npm ci' in {script.parent.parent} first")
    return [node, str(script)]


async def _wait_served(client: Any, proc: asyncio.subprocess.Process, seconds: float = 20) -> None:
    """Until the sidecar's cell answers discovery (``$SRV.PING.greet``), so
    that no request of the flow finds nobody (nor opens a breaker)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            await client.request("$SRV.PING.greet", b"", timeout=0.5)
            return
        except Exception:
            if proc.returncode is not None:
                raise UsageError("the JavaScript greet cell exited at start (see above)") from None
            if loop.time() > deadline:
                raise UsageError(
                    f"the JavaScript greet cell did not serve within {seconds:g} s"
                ) from None
            await asyncio.sleep(0.05)


async def _run_polyglot(body: Body, args: argparse.Namespace) -> int:
    command = _sidecar_command(args)
    if body.transport_name() != "nats":
        raise UsageError("cbs demo --polyglot runs on NATS (install cbs-nats)")
    from cbs.nats import NatsConnection

    await body.start(serve=["prompt_name", "print_greeting"])
    conn = body.capabilities.require(NatsConnection, needed_by="cbs demo --polyglot")
    proc = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, "NATS_URL": conn.url}, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        await _wait_served(conn.client, proc)
        await _flow(body, args.name, echo=False)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # the sidecar drains, then exits
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await body.stop()
    return 0


async def _flow(body: Body, name: str | None, *, echo: bool) -> None:
    if name is None:
        asked = await body.request("prompt_name", "read", {"prompt": "What is your name? "})
        name = asked["name"]
    greeting = await body.request("greeter", "say_hello", {"name": name})
    await body.request("printer", "write", {"message": greeting["message"]})
    if echo:
        # The printer wrote to its own process's stdout: show it here too.
        print(greeting["message"], flush=True)


async def run_demo(body: Body, args: argparse.Namespace) -> int:
    if args.polyglot:
        if args.no_serve:
            raise UsageError("--polyglot serves the Python cells itself: leave out --no-serve")
        return await _run_polyglot(body, args)
    if not args.no_serve:
        missing = [c for c in DEMO_CELLS if c not in body.cells]
        if missing:  # e.g. blocked with -p or replaced by another plugin's cell
            raise UsageError(f"the demo needs cell '{missing[0]}' (is it blocked?)")
    await body.start(serve=False if args.no_serve else DEMO_CELLS)
    try:
        await _flow(body, args.name, echo=args.no_serve)
    finally:
        await body.stop()
    return 0
