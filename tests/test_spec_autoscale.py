"""The autoscaling policy engine, on a fake clock: a burst of durable work
grows the pool to max within the up window, idle shrinks it back to min after
the down window, an oscillating load does not flap; and a real burst of
durable sends on JetStream read through the lag signal."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from cbs.spec import Engine, Signals
from cbs.spec.model import Autoscale


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def engine(clock: Clock, **policy: Any) -> Engine:
    settings = {"lag": 100, "scale_up_window": 0, "scale_down_window": 60, "cooldown": 10}
    settings.update(policy)
    return Engine("worker", Autoscale(**settings), low=1, high=5, clock=clock)


def run(e: Engine, clock: Clock, signals: list[Signals], *, step: float = 5.0) -> list[int]:
    """Evaluate every ``step`` seconds, applying each decision; the counts."""
    current, counts = e.low, []
    for s in signals:
        clock.now += step
        decision = e.decide(current, s)
        current = decision.desired
        counts.append(current)
    return counts


def test_a_burst_grows_to_max_at_once_and_idle_shrinks_to_min_after_the_window() -> None:
    clock = Clock()
    e = engine(clock)
    counts = run(e, clock, [Signals(pending=2000)] * 3 + [Signals(pending=0)] * 20)
    assert counts[0] == 5  # ceil(2000 / 100) = 20, kept at max, within one interval
    assert all(n == 5 for n in counts[: 3 + 11])  # held for the 60 s down window
    assert counts[-1] == 1
    downs = [i for i in range(1, len(counts)) if counts[i] < counts[i - 1]]
    assert len(downs) == 1  # straight back to min, once: no staircase


def test_an_oscillating_load_does_not_flap() -> None:
    clock = Clock()
    e = engine(clock, scale_up_window=15)
    wave = [Signals(pending=400), Signals(pending=0)] * 20  # 4 replicas, then idle, every 5 s
    counts = run(e, clock, wave)
    changes = sum(1 for a, b in itertools.pairwise(counts) if a != b)
    assert changes == 0  # the up window sees the idle dips: no move at all
    assert e.changes == 0


def test_a_sustained_load_scales_up_after_the_up_window_and_the_reason_says_why() -> None:
    clock = Clock()
    e = engine(clock, scale_up_window=15)
    first = e.decide(1, Signals(pending=300))
    assert not first.changed and "held by the up window" in first.reason
    clock.now += 16
    second = e.decide(1, Signals(pending=300))
    assert second.desired == 3 and second.reason == "lag 300/100"


def test_cooldown_holds_a_second_change() -> None:
    clock = Clock()
    e = engine(clock, scale_down_window=0, cooldown=30)
    assert e.decide(1, Signals(pending=500)).desired == 5
    clock.now += 5
    held = e.decide(5, Signals(pending=0))
    assert held.desired == 5 and "cooldown" in held.reason
    clock.now += 30
    assert e.decide(5, Signals(pending=0)).desired == 1


def test_in_flight_and_latency_vote_and_the_largest_wins() -> None:
    clock = Clock()
    e = engine(clock, lag=None, in_flight=0.5, p95_ms=100)
    busy = e.decide(2, Signals(busy=1.0, p95_ms=20))  # 2 * 1.0 / 0.5 = 4
    assert busy.desired == 4 and busy.reason.startswith("busy")
    clock.now += 100
    slow = e.decide(4, Signals(busy=0.4, p95_ms=250))
    assert slow.proposed == 5 and slow.reason.startswith("p95 250 ms")
    no_data = Engine("w", Autoscale(lag=10), low=2, high=5, clock=clock).propose(3, Signals())
    assert no_data == (2, "idle")


# -- a real burst of durable work --------------------------------------------------------


class RecordingScaler:
    """A pool stand-in that records what it is asked (the contract of Scaler)."""

    def __init__(self) -> None:
        from cbs.spec import Scaler

        class _Scaler(Scaler):
            def __init__(inner) -> None:
                inner.asked: list[int] = []
                inner.now: dict[str, int] = {}

            async def scale(inner, service: str, n: int) -> int:
                inner.asked.append(n)
                inner.now[service] = n
                return n

            def replicas(inner, service: str) -> int:
                return inner.now.get(service, 1)

        self.capability = _Scaler()


async def test_a_burst_of_durable_work_grows_the_pool_to_max_and_idle_shrinks_it(
    nats_server: Any, make_body: Any, tmp_path: Any
) -> None:
    from jetstream_kit import FAST, SCHEMA, Sink, eventually

    import cbs.jetstream.plugin
    import cbs.metrics.plugin
    import cbs.nats.plugin
    import cbs.spec.plugin
    from cbs.spec import SpecRunner

    path = tmp_path / "body.yaml"
    path.write_text(
        "version: 1\ncells:\n  sink: {replicas: {min: 1, max: 4}}\n"
        "services:\n  sink:\n    autoscale: {lag: 25, interval: 0.1, scale_up_window: 0,"
        " scale_down_window: 0.5, cooldown: 0.2}\n"
    )
    sink = Sink(max_concurrency=1)
    body = make_body(
        cbs.nats.plugin,
        cbs.jetstream.plugin,
        cbs.metrics.plugin,
        cbs.spec.plugin,
        sink,
        config={"nats_url": nats_server.url, **FAST},
    )
    scaler = RecordingScaler().capability
    body.capabilities.provide(scaler, plugin="test")
    runner = SpecRunner(body, path)
    await runner.start()
    for i in range(200):
        await body.send("sink", "slow", {"sleep": 0.01, "i": i}, schema=SCHEMA)
    await eventually(lambda: 4 in scaler.asked, 10, "scaled to max on the backlog")
    grew = next(d for d in runner.decisions if d.desired == 4)
    assert grew.reason.startswith("lag ")
    await eventually(lambda: scaler.now.get("sink") == 1, 30, "back to min once idle")
    assert scaler.asked[-1] == 1
    from cbs.spec.autoscale import metrics_text

    assert 'cbs_autoscale_replicas{service="sink"} 1' in metrics_text(runner)
    from cbs.metrics import registry

    exported = registry(body)
    assert exported is not None
    assert exported.get_sample_value("cbs_autoscale_replicas", {"service": "sink"}) == 1
    changes = exported.get_sample_value("cbs_autoscale_changes_total", {"service": "sink"})
    assert changes is not None and changes >= 2  # up, then down


async def test_a_new_policy_in_an_applied_spec_starts_its_engine(
    make_body: Any, tmp_path: Any
) -> None:
    from spec_cells import worker

    import cbs.spec.plugin
    from cbs.spec import SpecRunner, read_text
    from cbs.testing import CellsPlugin

    path = tmp_path / "body.yaml"
    path.write_text("version: 1\ncells: {worker: {}}\n")
    runner = SpecRunner(make_body(cbs.spec.plugin, CellsPlugin(worker())), path)
    await runner.start()
    assert runner.engines == {}
    assert runner.reconciler is not None
    spec = read_text(
        "version: 1\ncells: {worker: {replicas: {min: 1, max: 3}}}\n"
        "services: {worker: {autoscale: {in_flight: 0.5}}}\n"
    )
    assert (await runner.reconciler.apply(spec)).ok
    assert runner.spec is spec
    assert runner.engines["worker"].high == 3
    await runner.reconciler.apply(read_text("version: 1\ncells: {worker: {}}\n"))
    assert runner.engines == {}


async def test_the_in_flight_signal_counts_every_instance_of_the_service(
    nats_server: Any, make_body: Any, tmp_path: Any
) -> None:
    """The deciding body has stepped out (it handles nothing itself); the
    other instance is saturated: the cluster's load ($SRV.STATS) scales up."""
    from spec_cells import slow

    import cbs.nats.plugin
    import cbs.spec.plugin
    from cbs.spec import SpecRunner
    from cbs.testing import CellsPlugin

    config = {"transport": "nats", "nats_url": nats_server.url}
    path = tmp_path / "body.yaml"
    path.write_text(
        "version: 1\ncells:\n  worker: {factory: 'spec_cells:slow', replicas: {min: 1, max: 4}}\n"
        "services:\n  worker:\n    autoscale: {in_flight: 0.2, interval: 0.2,"
        " scale_up_window: 0, scale_down_window: 600, cooldown: 0}\n"
    )
    body = make_body(cbs.nats.plugin, cbs.spec.plugin, config=config)
    scaler = RecordingScaler().capability
    body.capabilities.provide(scaler, plugin="test")
    runner = SpecRunner(body, path)
    await runner.start()
    other = make_body(cbs.nats.plugin, CellsPlugin(slow()), config=config)
    await other.start()
    assert await body.step_out("worker")
    caller = make_body(cbs.nats.plugin, config=config)
    await caller.start(serve=False)
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            await caller.request("worker", "work", {}, schema="bench/v1/Job")

    clients = [asyncio.ensure_future(client()) for _ in range(16)]  # 16 = max_concurrency
    try:
        from jetstream_kit import eventually

        await eventually(lambda: any(n > 1 for n in scaler.asked), 15, "scaled up")
    finally:
        stop.set()
        await asyncio.gather(*clients)
    grew = next(d for d in runner.decisions if d.desired > 1)
    assert grew.reason.startswith("busy ")
    assert body.stash[cbs.spec.plugin.STATS].of("worker").in_flight == 0  # none here
