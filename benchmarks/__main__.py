"""Benchmarks: CBS against raw nats-py (and the local bus against a direct await),
measured in the same run on the same nats-server.

    python -m benchmarks                 # full run (a minute or two), table on stdout
    python -m benchmarks --split         # responders in a separate process too
    python -m benchmarks --out bench.json
    python -m benchmarks --smoke         # tiny counts: checks that it works (CI)

Every measurement warms up, runs N rounds (3), and reports the median of the
rounds; each CBS figure's ratio is to the baseline of the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import importlib_metadata
import nats

from benchmarks.stacks import (
    PAYLOAD,
    Call,
    cbs_call,
    direct_call,
    make_body,
    raw_call,
    raw_responder,
)
from cbs.nats import plugin as nats_plugin
from cbs.nats.server import NatsServer, find_binary

ROOT = Path(__file__).resolve().parent.parent
SEQUENTIAL = "sequential"
CONCURRENT = "concurrent"


async def measure(call: Call, count: int, in_flight: int) -> dict[str, float]:
    """``count`` calls, ``in_flight`` at a time: throughput and latency."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    todo = iter(range(count))

    async def worker() -> None:
        for _ in todo:
            began = clock()
            await call(PAYLOAD)
            latencies.append(clock() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": count / elapsed,
        "p50_us": latencies[len(latencies) // 2] / 1000,
        "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000,
    }


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counts = {SEQUENTIAL: (args.sequential, 1), CONCURRENT: (args.concurrent, 64)}
        self.rows: list[dict[str, Any]] = []

    async def compare(
        self, scenario: str, baseline: tuple[str, Call], candidates: list[tuple[str, Call]]
    ) -> None:
        """Warm up, then rounds of baseline and candidates back to back, per mode."""
        for mode, (count, in_flight) in self.counts.items():
            stacks = [baseline, *candidates]
            for _, call in stacks:
                await measure(call, max(50, count // 10), in_flight)  # warm-up
            rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _ in stacks}
            for _ in range(self.args.rounds):
                base = await measure(baseline[1], count, in_flight)
                rounds[baseline[0]].append(base)
                for name, call in candidates:
                    result = await measure(call, count, in_flight)
                    result["ratio"] = result["rps"] / base["rps"]
                    result["p50_ratio"] = result["p50_us"] / base["p50_us"]
                    rounds[name].append(result)
            for name, results in rounds.items():
                row: dict[str, Any] = {
                    "scenario": scenario,
                    "mode": mode,
                    "stack": name,
                    "count": count,
                    "in_flight": in_flight,
                    "rounds": results,
                }
                for key in results[0]:
                    row[key] = statistics.median(r[key] for r in results)
                self.rows.append(row)
                self.print_row(row)

    def print_row(self, row: dict[str, Any]) -> None:
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "(base)"
        p50r = f"{row['p50_ratio']:.2f}x" if "p50_ratio" in row else ""
        print(
            f"{row['scenario']:<18} {row['mode']:<11} {row['stack']:<22}"
            f" {row['rps']:>9.0f} {row['p50_us']:>8.1f} {row['p99_us']:>8.1f}"
            f"  {ratio:>7} {p50r:>7}",
            flush=True,
        )


async def nats_same_process(runner: Runner, url: str) -> None:
    server_nc = await nats.connect(url)
    client_nc = await nats.connect(url)
    await raw_responder(server_nc)
    responder = make_body(nats_plugin, nats_url=url)
    await responder.start()
    caller = make_body(nats_plugin, nats_url=url)
    await caller.start(serve=False)
    try:
        await runner.compare(
            "nats same-process",
            ("raw nats-py", raw_call(client_nc)),
            [("cbs", cbs_call(caller))],
        )
    finally:
        await caller.stop()
        await responder.stop()
        await client_nc.close()
        await server_nc.close()


async def nats_split(runner: Runner, url: str) -> None:
    responder = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
        [sys.executable, "-m", "benchmarks.responder", url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert responder.stdout is not None
        ready = responder.stdout.readline()
        if "ready" not in ready:
            raise RuntimeError(f"responder did not start: {ready!r}")
        client_nc = await nats.connect(url)
        caller = make_body(nats_plugin, nats_url=url)
        await caller.start(serve=False)
        try:
            await runner.compare(
                "nats split-process",
                ("raw nats-py", raw_call(client_nc)),
                [("cbs", cbs_call(caller))],
            )
        finally:
            await caller.stop()
            await client_nc.close()
    finally:
        responder.terminate()
        responder.wait(10)


async def local_bus(runner: Runner) -> None:
    body = make_body(transport="local")
    await body.start()
    try:
        await runner.compare(
            "local bus", ("direct await", direct_call()), [("cbs", cbs_call(body))]
        )
    finally:
        await body.stop()


def wall_time(command: list[str], runs: int) -> float:
    """Median wall time of a command, in seconds."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def startup_figures(runs: int) -> dict[str, float]:
    cbs = str(Path(sys.executable).parent / "cbs")
    return {
        "cbs demo --name Ada": wall_time([cbs, "-q", "demo", "--name", "Ada"], runs),
        "cbs plugins": wall_time([cbs, "plugins"], runs),
    }


BUDGET: list[tuple[str, str, str, str, Callable[[float], bool], str]] = [
    ("nats same-process", CONCURRENT, "cbs", "ratio", lambda v: v >= 0.9, ">= 0.90x throughput"),
    ("nats split-process", CONCURRENT, "cbs", "ratio", lambda v: v >= 0.9, ">= 0.90x throughput"),
    ("nats same-process", SEQUENTIAL, "cbs", "p50_ratio", lambda v: v <= 1.15, "<= 1.15x p50"),
    ("nats split-process", SEQUENTIAL, "cbs", "p50_ratio", lambda v: v <= 1.15, "<= 1.15x p50"),
    ("local bus", CONCURRENT, "cbs", "ratio", lambda v: v >= 0.5, ">= 0.50x throughput"),
    ("local bus", SEQUENTIAL, "cbs", "ratio", lambda v: v >= 0.5, ">= 0.50x throughput"),
]


def check_budget(rows: list[dict[str, Any]], startup: dict[str, float]) -> list[dict[str, Any]]:
    verdicts = []
    for scenario, mode, stack, key, ok, target in BUDGET:
        row = next(
            (r for r in rows if (r["scenario"], r["mode"], r["stack"]) == (scenario, mode, stack)),
            None,
        )
        if row is not None:
            value = row[key]
            verdicts.append(
                {
                    "what": f"{scenario} {mode} {key}",
                    "value": round(value, 3),
                    "target": target,
                    "met": ok(value),
                }
            )
    for name, limit in (("cbs demo --name Ada", 1.0), ("cbs plugins", 0.3)):
        if name in startup:
            verdicts.append(
                {
                    "what": f"{name} wall time (s)",
                    "value": round(startup[name], 3),
                    "target": f"< {limit} s",
                    "met": startup[name] < limit,
                }
            )
    return verdicts


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("cbs", "cbs-nats", "nats-py", "orjson", "pluggy", "attrs"):
        try:
            found[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            found[dist] = "not installed"
    out = subprocess.run([find_binary(), "--version"], capture_output=True, text=True, check=False)
    found["nats-server"] = out.stdout.strip()
    return found


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu": model}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runner = Runner(args)
    print(
        f"{'scenario':<18} {'mode':<11} {'stack':<22} {'req/s':>9} {'p50 us':>8} {'p99 us':>8}"
        f"  {'ratio':>7} {'p50 r':>7}"
    )
    with NatsServer(jetstream=False) as server:
        await nats_same_process(runner, server.url)
        if args.split:
            await nats_split(runner, server.url)
    await local_bus(runner)
    startup = {} if args.no_startup else startup_figures(args.startup_runs)
    for name, seconds in startup.items():
        print(f"{name:<30} {seconds:.3f} s (median of {args.startup_runs})")
    verdicts = check_budget(runner.rows, startup)
    print("\nbudget:")
    for v in verdicts:
        print(f"  {'met ' if v['met'] else 'MISS'}  {v['what']:<45} {v['value']:<8} {v['target']}")
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "payload_bytes": len(json.dumps(PAYLOAD, separators=(",", ":"))),
        "results": runner.rows,
        "startup_seconds": startup,
        "budget": verdicts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sequential", type=int, default=5000, help="requests, one at a time")
    parser.add_argument("--concurrent", type=int, default=20000, help="requests, 64 in flight")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--split", action="store_true", help="also run responders in a subprocess")
    parser.add_argument("--startup-runs", type=int, default=3)
    parser.add_argument("--no-startup", action="store_true", help="skip the CLI wall times")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one round (CI)")
    parser.add_argument("--out", help="write every figure as JSON to this file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sequential, args.concurrent, args.rounds, args.startup_runs = 100, 400, 1, 1
    report = asyncio.run(main_async(args))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
