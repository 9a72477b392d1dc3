"""Benchmarks: CBS against raw nats-py (and the local bus against a direct await),
measured in the same run on the same nats-server.

    python -m benchmarks                 # full run (a minute or two), table on stdout
    python -m benchmarks --split         # responders in a separate process too
    python -m benchmarks --out bench.json
    python -m benchmarks --smoke         # tiny counts: checks that it works (CI)
    python -m benchmarks --loop asyncio,uvloop   # every scenario on both loops

Every measurement warms up, runs N rounds (3), and reports the median of the
rounds; each CBS figure's ratio is to the baseline of the same round, and each
row has the CPU µs per request of the caller, the responder process and
nats-server (from /proc). With ``--split``, the responder process also serves
CBS with every first-party plugin and FastStream (when installed: pip install
'cell-body-system[bench]'; otherwise one line says it is skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import importlib_metadata
import nats
import nats.errors

from benchmarks.pools import polyglot, pool_scaling
from benchmarks.stacks import (
    ECHO_SCHEMA,
    EXPORTED_SERVICE,
    FULL_SERVICE,
    PAYLOAD,
    SAMPLED_RATIO,
    SAMPLED_SERVICE,
    BenchPlugin,
    Call,
    Settled,
    cbs_call,
    direct_call,
    exporting,
    faststream_caller,
    faststream_missing,
    full_plugins,
    make_body,
    raw_call,
    raw_responder,
)
from cbs.kernel.cli import loop_factory
from cbs.kernel.errors import UsageError
from cbs.nats import plugin as nats_plugin
from cbs.nats.server import NatsServer, find_binary

ROOT = Path(__file__).resolve().parent.parent
SEQUENTIAL = "sequential"
CONCURRENT = "concurrent"


#: Processes whose CPU time is read around each measurement, by side:
#: ``caller`` (this process), ``responder`` (the ``--split`` subprocess) and
#: ``server`` (nats-server). A side that is absent is not reported.
SIDES: dict[str, int] = {"caller": os.getpid()}
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@contextlib.contextmanager
def sides(**pids: int | None) -> Iterator[None]:
    """Measure these sides (besides the caller) while the block runs."""
    saved = dict(SIDES)
    SIDES.update({side: pid for side, pid in pids.items() if pid})
    try:
        yield
    finally:
        SIDES.clear()
        SIDES.update(saved)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` from ``/proc/<pid>/stat`` (0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


async def measure(call: Call, count: int, in_flight: int) -> dict[str, float]:
    """``count`` calls, ``in_flight`` at a time: throughput, latency, and CPU
    µs per request of each side in :data:`SIDES`."""
    latencies: list[int] = []
    sides = dict(SIDES)
    cpu_before = {side: cpu_seconds(pid) for side, pid in sides.items()}
    clock = time.perf_counter_ns
    todo = iter(range(count))

    async def worker() -> None:
        for _ in todo:
            began = clock()
            await call(PAYLOAD)
            latencies.append(clock() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    if isinstance(call, Settled):
        await call.settle()  # its background work counts, and ends here
    elapsed = time.perf_counter() - began
    cpu = {
        f"cpu_{side}_us": (cpu_seconds(pid) - cpu_before[side]) * 1e6 / count
        for side, pid in sides.items()
    }
    latencies.sort()
    return {
        "rps": count / elapsed,
        "p50_us": latencies[len(latencies) // 2] / 1000,
        "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000,
        **cpu,
    }


class Runner:
    def __init__(self, args: argparse.Namespace, loop: str = "asyncio") -> None:
        self.args = args
        self.loop = loop
        self.memory: dict[str, dict[str, int]] = {}
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
                    "scenario": self.label(scenario),
                    "loop": self.loop,
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

    def label(self, scenario: str) -> str:
        """The scenario's name in rows: suffixed with the loop unless asyncio's."""
        return scenario if self.loop == "asyncio" else f"{scenario} {self.loop}"

    def print_row(self, row: dict[str, Any]) -> None:
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "(base)"
        p50r = f"{row['p50_ratio']:.2f}x" if "p50_ratio" in row else ""
        print(
            f"{row['scenario']:<25} {row['mode']:<11} {row['stack']:<24}"
            f" {row['rps']:>9.0f} {row['p50_us']:>8.1f} {row['p99_us']:>8.1f}"
            f"  {ratio:>7} {p50r:>7}  {cpu_columns(row)}",
            flush=True,
        )


def cpu_columns(row: dict[str, Any]) -> str:
    """``caller/responder/server`` CPU µs per request, for the sides measured."""
    return " / ".join(
        f"{row[key]:.0f}" if key in row else "-"
        for key in ("cpu_caller_us", "cpu_responder_us", "cpu_server_us")
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


@contextlib.contextmanager
def otlp_sink() -> Iterator[tuple[str, list[str]]]:
    """A local OTLP/HTTP sink in its own process: (url, its last line once stopped)."""
    sink = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.otlp_sink"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert sink.stdin is not None and sink.stdout is not None
    said: list[str] = []
    try:
        ready = sink.stdout.readline().split()
        if ready[:1] != ["ready"]:
            raise RuntimeError(f"OTLP sink did not start: {ready!r}")
        yield f"http://127.0.0.1:{ready[1]}", said
    finally:
        sink.stdin.close()
        try:
            said.append(sink.stdout.read().strip())
            sink.wait(10)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait(10)


async def nats_split(runner: Runner, url: str) -> None:
    with otlp_sink() as (sink_url, sink_said):
        await _nats_split(runner, url, sink_url)
    print(f"OTLP sink: {sink_said[0] if sink_said else 'no report'}")


async def _nats_split(runner: Runner, url: str, sink_url: str) -> None:
    command = [sys.executable, "-m", "benchmarks.responder", url, "--loop", runner.loop]
    responder = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
        [*command, "--otlp", sink_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert responder.stdout is not None
        for _ in range(20):  # FastStream may log a line of its own first
            ready = responder.stdout.readline()
            if not ready or ready.strip() == "ready":
                break
        if ready.strip() != "ready":
            raise RuntimeError(f"responder did not start: {ready!r}")
        client_nc = await nats.connect(url)
        caller = make_body(nats_plugin, nats_url=url)
        full = make_body(*full_plugins(), service=FULL_SERVICE, nats_url=url)
        exported = make_body(*full_plugins(), service=EXPORTED_SERVICE, nats_url=url)
        sampled = make_body(*full_plugins(), service=SAMPLED_SERVICE, nats_url=url)
        candidates = [
            ("cbs", cbs_call(caller)),
            ("cbs all plugins", cbs_call(full, FULL_SERVICE)),
            ("cbs all, spans exported", Settled(exported, EXPORTED_SERVICE)),
            ("cbs all, 10% sampled", Settled(sampled, SAMPLED_SERVICE)),
        ]
        broker = None
        missing = faststream_missing()
        if missing:
            print(missing)
        else:
            broker, faststream_call = await faststream_caller(url)
            candidates.append(("faststream", faststream_call))
        try:
            await caller.start(serve=False)
            await full.start(serve=False)
            with exporting(sink_url):
                await exported.start(serve=False)
            with exporting(sink_url, SAMPLED_RATIO):
                await sampled.start(serve=False)
            with sides(responder=responder.pid):
                await runner.compare(
                    "nats split-process", ("raw nats-py", raw_call(client_nc)), candidates
                )
        finally:
            if broker is not None:
                await broker.stop()
            for body in (sampled, exported, full, caller):
                await body.stop()
            await client_nc.close()
    finally:
        responder.terminate()
        responder.wait(10)


async def observability(runner: Runner) -> None:
    """CBS over NATS with cbs-tracing and cbs-metrics installed against CBS
    without them. Each stack has its own nats-server: the bench cell's queue
    group would otherwise mix the two responders. First as installed (no
    OTEL_* variables: trace context propagates, spans are not recorded), then
    with spans recorded into a batch processor whose exporter drops them."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from cbs.metrics import plugin as metrics_plugin
    from cbs.tracing import TRACER_PROVIDER
    from cbs.tracing import plugin as tracing_plugin

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    observed = (nats_plugin, tracing_plugin, metrics_plugin)
    with (
        NatsServer(jetstream=False) as plain,
        NatsServer(jetstream=False) as light,
        NatsServer(jetstream=False) as recorded,
    ):
        bodies = [
            make_body(*plugins, nats_url=server.url)
            for server, plugins in (
                (plain, (nats_plugin,)),
                (light, observed),
                (recorded, observed),
            )
            for _ in ("responder", "caller")
        ]
        try:
            pairs = list(zip(bodies[::2], bodies[1::2], strict=True))
            plain_call, light_call, recorded_call = (cbs_call(c) for _, c in pairs)
            for responder, caller in pairs[:2]:
                await responder.start()
                await caller.start(serve=False)
            await runner.compare(
                "observability", ("cbs", plain_call), [("cbs+tracing+metrics", light_call)]
            )
            # The third pair records with a TracerProvider of its own.
            provider = TracerProvider()
            provider.add_span_processor(BatchSpanProcessor(Drop()))
            for body in pairs[2]:
                body.stash[TRACER_PROVIDER] = provider
            await pairs[2][0].start()
            await pairs[2][1].start(serve=False)
            await runner.compare(
                "observability rec",
                ("cbs", plain_call),
                [("cbs+tracing+metrics", recorded_call)],
            )
        finally:
            for body in reversed(bodies):
                await body.stop()


async def resilience(runner: Runner, url: str) -> None:
    """Callers of one responder, over NATS: plain CBS, and CBS with cbs-breaker
    (deadline, circuit breaker and attempt-timeout layers), as installed (each
    request carries a cbs-deadline header) and with propagate_deadline off. The
    responder has cbs-breaker too, so headed requests pay for its deadline
    guard; requests without the header pass it with one dict lookup."""
    from cbs.breaker import plugin as breaker_plugin

    no_header = {"default": {"propagate_deadline": False}}
    responder = make_body(nats_plugin, breaker_plugin, nats_url=url)
    callers = [
        make_body(nats_plugin, nats_url=url),
        make_body(nats_plugin, breaker_plugin, nats_url=url),
        make_body(nats_plugin, breaker_plugin, nats_url=url, breaker_config=no_header),
    ]
    await responder.start()
    try:
        for caller in callers:
            await caller.start(serve=False)
        plain, guarded, headless = (cbs_call(caller) for caller in callers)
        await runner.compare(
            "breaker",
            ("cbs", plain),
            [("cbs+breaker", guarded), ("cbs+breaker no header", headless)],
        )
    finally:
        for body in (*reversed(callers), responder):
            await body.stop()


async def durable_send(runner: Runner) -> None:
    """cbs-jetstream: ``Body.send`` (envelope, ``Nats-Msg-Id``, PubAck) against
    raw ``js.publish`` of the same payload with a ``Nats-Msg-Id``, each into its
    own stream with the same settings (file storage, 7 d, 2 min duplicate
    window), on one nats-server with JetStream and ``sync_interval: always``.

    Every publish waits for an fsync, whose time swings by 2x within seconds
    here, so the stacks alternate in short chunks (raw, cbs, cbs, raw, ...)
    instead of whole rounds; throughput is over all chunks of a stack."""
    import orjson

    from cbs.jetstream import plugin as jetstream_plugin
    from cbs.jetstream.settings import Settings
    from cbs.jetstream.streams import requests_config

    with NatsServer() as server, sides(server=server.pid):
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(requests_config("bench_raw", Settings()))
        sender = make_body(nats_plugin, jetstream_plugin, nats_url=server.url)
        await sender.start(serve=False)

        async def raw_publish(payload: dict[str, Any]) -> dict[str, Any]:
            msg_id = os.urandom(16).hex()
            await js.publish(
                "cbsd.bench_raw.echo", orjson.dumps(payload), headers={"Nats-Msg-Id": msg_id}
            )
            return payload

        async def cbs_send(payload: dict[str, Any]) -> dict[str, Any]:
            await sender.send("bench", "echo", payload)
            return payload

        stacks = [("raw js.publish", raw_publish), ("cbs send", cbs_send)]
        try:
            for mode, (count, in_flight) in runner.counts.items():
                chunks = max(8, 8 * runner.args.rounds)
                size = max(50, count // chunks)
                for _, call in stacks:
                    await measure(call, size, in_flight)  # warm-up
                parts: dict[str, list[dict[str, float]]] = {name: [] for name, _ in stacks}
                for i in range(chunks):
                    for name, call in stacks if i % 4 in (0, 3) else stacks[::-1]:
                        parts[name].append(await measure(call, size, in_flight))
                base: dict[str, float] = {}
                for name, results in parts.items():
                    row: dict[str, Any] = {
                        "scenario": runner.label("jetstream"),
                        "loop": runner.loop,
                        "mode": mode,
                        "stack": name,
                        "count": size * chunks,
                        "in_flight": in_flight,
                        "rounds": results,
                        "rps": size * chunks / sum(size / r["rps"] for r in results),
                        "p50_us": statistics.median(r["p50_us"] for r in results),
                        "p99_us": statistics.median(r["p99_us"] for r in results),
                        **{
                            key: statistics.median(r[key] for r in results)
                            for key in results[0]
                            if key.startswith("cpu_")
                        },
                    }
                    if not base:
                        base = row
                    else:
                        row["ratio"] = row["rps"] / base["rps"]
                        row["p50_ratio"] = row["p50_us"] / base["p50_us"]
                    runner.rows.append(row)
                    runner.print_row(row)
            await batch_send(runner, js, sender)
        finally:
            await sender.stop()
            await nc.close()


BATCH = 100


async def batch_send(runner: Runner, js: Any, sender: Any) -> None:
    """``Body.send_many`` (publishes out, then the PubAcks gathered) in batches
    of :data:`BATCH` against one-by-one ``js.publish`` and ``Body.send`` of
    the same messages, alternating in chunks like :func:`durable_send`."""
    import orjson

    async def raw_each(batch: list[dict[str, Any]]) -> None:
        for payload in batch:
            msg_id = os.urandom(16).hex()
            await js.publish(
                "cbsd.bench_raw.echo", orjson.dumps(payload), headers={"Nats-Msg-Id": msg_id}
            )

    async def cbs_each(batch: list[dict[str, Any]]) -> None:
        for payload in batch:
            await sender.send("bench", "echo", payload)

    async def cbs_many(batch: list[dict[str, Any]]) -> None:
        await sender.send_many("bench", "echo", batch)

    stacks = [("raw js.publish", raw_each), ("cbs send", cbs_each), ("cbs send_many", cbs_many)]
    count = runner.counts[SEQUENTIAL][0]
    chunks = max(4, 4 * runner.args.rounds)
    batches = max(1, count // BATCH // chunks)
    batch = [PAYLOAD] * BATCH
    times: dict[str, list[float]] = {name: [] for name, _ in stacks}
    for _, call in stacks:
        await call(batch)  # warm-up
    for i in range(chunks):
        for name, call in stacks if i % 2 == 0 else stacks[::-1]:
            began = time.perf_counter()
            for _ in range(batches):
                await call(batch)
            times[name].append(time.perf_counter() - began)
    base = 0.0
    for name, _ in stacks:
        total = sum(times[name])
        sent = BATCH * batches * chunks
        row: dict[str, Any] = {
            "scenario": runner.label("jetstream batch"),
            "loop": runner.loop,
            "mode": f"batch {BATCH}",
            "stack": name,
            "count": sent,
            "in_flight": BATCH,
            "rps": sent / total,
            "p50_us": statistics.median(times[name]) / (BATCH * batches) * 1e6,
            "p99_us": max(times[name]) / (BATCH * batches) * 1e6,
        }
        if base:
            row["ratio"] = row["rps"] / base
        else:
            base = row["rps"]
        runner.rows.append(row)
        runner.print_row(row)


async def connections(runner: Runner, url: str) -> None:
    """Does a second NATS connection per body help? Raw nats-py requests over
    one connection against the same spread round-robin over two and four, to
    the same responders (the split responder process when ``--split``, else
    this process's)."""
    ncs = [await nats.connect(url) for _ in range(4)]
    server_nc = await nats.connect(url)
    await raw_responder(server_nc)
    await server_nc.flush()
    for nc in ncs:  # each connection sees the responder before measuring
        deadline = time.monotonic() + 5
        while True:
            try:
                await raw_call(nc)(PAYLOAD)
                break
            except nats.errors.NoRespondersError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    def spread(count: int) -> Call:
        calls = [raw_call(nc) for nc in ncs[:count]]
        turn = itertools.cycle(calls)

        async def call(payload: dict[str, Any]) -> dict[str, Any]:
            return await next(turn)(payload)

        return call

    try:
        await runner.compare(
            "connections",
            ("1 connection", spread(1)),
            [("2 connections", spread(2)), ("4 connections", spread(4))],
        )
    finally:
        for nc in (*ncs, server_nc):
            await nc.close()


async def memory(runner: Runner, url: str) -> None:
    """Resident memory: of a started body serving the bench cell (every
    first-party plugin), and its growth with 1000 requests in flight (caller
    and responder bodies in this process, the handlers held until all 1000
    arrived). Run in a fresh subprocess so nothing else sits in its heap."""
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "benchmarks.memory", url, "--loop", runner.loop],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    figures = json.loads(out.stdout)
    runner.memory[runner.loop] = figures
    for name, kib in figures.items():
        print(f"memory {runner.loop:<8} {name:<40} {kib / 1024:8.1f} MiB")


async def local_bus(runner: Runner) -> None:
    body = make_body(transport="local")
    await body.start()
    try:
        await runner.compare(
            "local bus", ("direct await", direct_call()), [("cbs", cbs_call(body))]
        )
    finally:
        await body.stop()


async def schemas(runner: Runner) -> None:
    """The cost of checking every request against a JSON Schema (cbs-schemas),
    on the local bus so that nothing else hides it."""
    import cbs.schemas.plugin

    plain = make_body(cbs.schemas.plugin, transport="local")
    checked = make_body(
        cbs.schemas.plugin, cells=BenchPlugin(json_schema=ECHO_SCHEMA), transport="local"
    )
    await plain.start()
    await checked.start()
    try:
        await runner.compare(
            "schemas", ("no schema", cbs_call(plain)), [("json_schema", cbs_call(checked))]
        )
    finally:
        await checked.stop()
        await plain.stop()


def wall_time(command: list[str], runs: int) -> float:
    """Median wall time of a command, in seconds, after one run that is not
    counted: as a user's second command, with its modules' bytecode cached
    (so PYTHONDONTWRITEBYTECODE, which would make each run compile them, is
    left out of the command's environment)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(command, check=True, capture_output=True, timeout=60, env=env)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, timeout=60, env=env)
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
    ("nats same-process", SEQUENTIAL, "cbs", "p50_ratio", lambda v: v <= 1.1, "<= 1.10x p50"),
    ("nats split-process", SEQUENTIAL, "cbs", "p50_ratio", lambda v: v <= 1.1, "<= 1.10x p50"),
    (
        "nats split-process",
        CONCURRENT,
        "cbs all plugins",
        "ratio",
        lambda v: v >= 0.8,
        ">= 0.80x throughput",
    ),
    (
        "nats split-process",
        CONCURRENT,
        "cbs all, spans exported",
        "ratio",
        lambda v: v >= 0.6,
        ">= 0.60x throughput",
    ),
    ("local bus", CONCURRENT, "cbs", "ratio", lambda v: v >= 0.5, ">= 0.50x throughput"),
    ("observability", CONCURRENT, "cbs+tracing+metrics", "ratio", lambda v: v >= 0.8, ">= 0.80x"),
    ("local bus", SEQUENTIAL, "cbs", "ratio", lambda v: v >= 0.5, ">= 0.50x throughput"),
    ("breaker", CONCURRENT, "cbs+breaker", "ratio", lambda v: v >= 0.9, ">= 0.90x throughput"),
    ("jetstream", CONCURRENT, "cbs send", "ratio", lambda v: v >= 0.85, ">= 0.85x throughput"),
    ("jetstream", SEQUENTIAL, "cbs send", "ratio", lambda v: v >= 0.85, ">= 0.85x throughput"),
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
                    "what": f"{scenario} {mode} {stack} {key}",
                    "value": round(value, 3),
                    "target": target,
                    "met": ok(value),
                }
            )
    for name, limit in (("cbs demo --name Ada", 0.6), ("cbs plugins", 0.3)):
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
    for dist in (
        "cell-body-system",
        "cbs-nats",
        "nats-py",
        "orjson",
        "pluggy",
        "attrs",
        "uvloop",
        "faststream",
        "opentelemetry-sdk",
    ):
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


SCENARIOS = (
    "nats",
    "connections",
    "breaker",
    "memory",
    "observability",
    "jetstream",
    "local",
    "pool",
    "polyglot",
    "schemas",
    "startup",
)


async def run_scenarios(runner: Runner, wanted: set[str]) -> None:
    args = runner.args
    with NatsServer(jetstream=False) as server, sides(server=server.pid):
        if "nats" in wanted:
            await nats_same_process(runner, server.url)
            if args.split:
                await nats_split(runner, server.url)
        if "connections" in wanted:
            await connections(runner, server.url)
        if "breaker" in wanted:
            await resilience(runner, server.url)
        if "memory" in wanted:
            await memory(runner, server.url)
        if "pool" in wanted:
            await pool_scaling(runner, server.url, measure)
        if "polyglot" in wanted:
            await polyglot(runner, server.url)
    if "observability" in wanted:
        await observability(runner)
    if "jetstream" in wanted:
        await durable_send(runner)
    if "local" in wanted:
        await local_bus(runner)
    if "schemas" in wanted:
        await schemas(runner)


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    print(
        f"{'scenario':<25} {'mode':<11} {'stack':<24} {'req/s':>9} {'p50 us':>8} {'p99 us':>8}"
        f"  {'ratio':>7} {'p50 r':>7}  CPU us/req caller / responder / server"
    )
    wanted = set(args.only.split(",")) if args.only else set(SCENARIOS)
    unknown = wanted - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario {sorted(unknown)[0]!r}; choose from {SCENARIOS}")
    rows: list[dict[str, Any]] = []
    memory_kib: dict[str, dict[str, int]] = {}
    for loop in args.loop.split(","):
        try:
            factory = loop_factory(loop)
        except UsageError as exc:
            raise SystemExit(str(exc)) from None
        runner = Runner(args, loop)
        with asyncio.Runner(loop_factory=factory) as event_loop:
            event_loop.run(run_scenarios(runner, wanted))
        rows += runner.rows
        memory_kib.update(runner.memory)
    startup = (
        {} if args.no_startup or "startup" not in wanted else startup_figures(args.startup_runs)
    )
    for name, seconds in startup.items():
        print(f"{name:<30} {seconds:.3f} s (median of {args.startup_runs})")
    verdicts = check_budget(rows, startup)
    print("\nbudget:")
    for v in verdicts:
        print(f"  {'met ' if v['met'] else 'MISS'}  {v['what']:<55} {v['value']:<8} {v['target']}")
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "payload_bytes": len(json.dumps(PAYLOAD, separators=(",", ":"))),
        "results": rows,
        "memory_kib": memory_kib,
        "startup_seconds": startup,
        "budget": verdicts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only", metavar="NAMES", help=f"comma-separated scenarios, from {','.join(SCENARIOS)}"
    )
    parser.add_argument("--sequential", type=int, default=5000, help="requests, one at a time")
    parser.add_argument("--concurrent", type=int, default=20000, help="requests, 64 in flight")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cpu-requests", type=int, default=200, help="requests per round of the pool scenario"
    )
    parser.add_argument("--split", action="store_true", help="also run responders in a subprocess")
    parser.add_argument("--startup-runs", type=int, default=3)
    parser.add_argument("--no-startup", action="store_true", help="skip the CLI wall times")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one round (CI)")
    parser.add_argument(
        "--loop",
        default="asyncio",
        metavar="LOOPS",
        help="event loops to run every scenario on, comma-separated: asyncio,uvloop",
    )
    parser.add_argument("--out", help="write every figure as JSON to this file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sequential, args.concurrent, args.rounds, args.startup_runs = 100, 400, 1, 1
        args.cpu_requests = 20
    report = run_all(args)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
