"""Autoscaling: replicas of a service between min and max, on durable-inbox
lag, in-flight saturation and p95 latency, with stabilization windows and a
cooldown.

How a decision is made (:class:`Engine`, a pure object with its own clock,
so tests drive it with a fake one), after KEDA's NATS JetStream scaler and
the Kubernetes HPA:

1. Each signal proposes a replica count; the largest wins (the HPA takes the
   largest across metrics):

   - lag (KEDA ``lagThreshold``): ``ceil(pending / lag)``;
   - in-flight (HPA's ratio): ``ceil(current * busy / in_flight)``, where
     ``busy`` is in-flight requests over ``max_concurrency``;
   - p95 latency: ``current + 1`` above ``p95_ms``, ``current`` above half
     of it, else no vote;

   a signal with no data does not vote; with no vote at all the proposal is
   ``min`` (idle). The proposal is kept within min and max.
2. Stabilization (HPA ``behavior``): the count moves up only to the *lowest*
   proposal of the last ``scale_up_window`` seconds and down only to the
   *highest* proposal of the last ``scale_down_window`` seconds, so a spike
   or a dip shorter than its window does not move it (a window of 0 follows
   the proposal at once; before the first evaluation the count in force
   counts as a proposal).
3. Cooldown: no change within ``cooldown`` seconds of the last one.

Each evaluation is a :class:`Decision` with its reason; a change is logged
(INFO) and counted; with cbs-metrics the counts are on ``/metrics``
(:func:`export_metrics`), and :func:`metrics_text` gives them in the
Prometheus text format.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from cbs.spec.model import Autoscale

if TYPE_CHECKING:
    from cbs.spec.runner import SpecRunner

__all__ = [
    "Signals",
    "Decision",
    "Engine",
    "start_autoscaling",
    "metrics_text",
    "export_metrics",
    "ClusterLoad",
]

log = logging.getLogger("cbs.spec.autoscale")


@attrs.frozen
class Signals:
    """What was measured for a service at one evaluation (``None``: unknown)."""

    pending: int | None = None
    busy: float | None = None
    p95_ms: float | None = None


@attrs.frozen
class Decision:
    at: float
    service: str
    current: int
    proposed: int
    desired: int
    reason: str

    @property
    def changed(self) -> bool:
        return self.desired != self.current


@attrs.define
class Engine:
    """The policy of one service; :meth:`decide` once per interval."""

    service: str
    policy: Autoscale
    low: int
    high: int
    clock: Callable[[], float] = time.monotonic
    history: deque[tuple[float, int]] = attrs.Factory(deque)
    last_change: float | None = None
    decisions: int = 0
    changes: int = 0

    def propose(self, current: int, signals: Signals) -> tuple[int, str]:
        policy = self.policy
        votes: list[tuple[int, str]] = []
        if policy.lag is not None and signals.pending is not None:
            votes.append(
                (math.ceil(signals.pending / policy.lag), f"lag {signals.pending}/{policy.lag}")
            )
        if policy.in_flight is not None and signals.busy is not None:
            n = math.ceil(max(current, 1) * signals.busy / policy.in_flight)
            votes.append((n, f"busy {signals.busy:.2f}/{policy.in_flight:g}"))
        if policy.p95_ms is not None and signals.p95_ms is not None:
            if signals.p95_ms > policy.p95_ms:
                votes.append((current + 1, f"p95 {signals.p95_ms:.0f} ms > {policy.p95_ms:g}"))
            elif signals.p95_ms > policy.p95_ms / 2:
                votes.append((current, f"p95 {signals.p95_ms:.0f} ms near {policy.p95_ms:g}"))
        if not votes:
            return self.low, "idle"
        n, reason = max(votes, key=lambda v: v[0])
        return max(self.low, min(self.high, n)), reason

    def decide(self, current: int, signals: Signals) -> Decision:
        now = self.clock()
        proposed, reason = self.propose(current, signals)
        if not self.history:  # before the first evaluation, the count was right
            self.history.append((now, current))
        self.history.append((now, proposed))
        policy = self.policy
        horizon = max(policy.scale_up_window, policy.scale_down_window)
        while self.history and self.history[0][0] < now - horizon:
            self.history.popleft()
        up, down = proposed, proposed  # a window of 0: the proposal at once
        if policy.scale_up_window:
            up = min(n for t, n in self.history if t >= now - policy.scale_up_window)
        if policy.scale_down_window:
            down = max(n for t, n in self.history if t >= now - policy.scale_down_window)
        desired = current
        if up > current:
            desired = up
        elif down < current:
            desired = down
        elif proposed != current:
            reason += f"; held by the {'up' if proposed > current else 'down'} window"
        if (
            desired != current
            and self.last_change is not None
            and now - self.last_change < policy.cooldown
        ):
            reason += f"; cooldown ({policy.cooldown:g} s)"
            desired = current
        self.decisions += 1
        if desired != current:
            self.last_change = now
            self.changes += 1
        return Decision(now, self.service, current, proposed, desired, reason)


async def _signals(runner: SpecRunner, service: str) -> Signals:
    from cbs.spec.capabilities import QueueDepth
    from cbs.spec.plugin import STATS
    from cbs.spec.signals import JetStreamDepth

    body = runner.body
    depth = body.capabilities.get(QueueDepth) or JetStreamDepth(body)
    pending: int | None = None
    for cell in body.served_cells:
        if cell.service == service:
            for endpoint in cell.endpoints:
                n = await depth.pending(service, endpoint.verb)
                if n is not None:
                    pending = (pending or 0) + n
    stats = body.stash[STATS].of(service) if STATS in body.stash else None
    if stats is None:
        return Signals(pending=pending)
    busy = stats.busy
    cluster = await runner.cluster.busy(body, service, stats.capacity)
    if cluster is not None:
        busy = cluster
    return Signals(pending=pending, busy=busy, p95_ms=stats.p95_ms())


class ClusterLoad:
    """The in-flight load of every instance of a service, from ``$SRV.STATS``
    through the kernel's :class:`~cbs.kernel.Directory`: between two
    evaluations, the handler time an instance added (``processing_ns``) over
    the time passed is its mean number of requests in flight (Little's law).
    Summed over the instances seen both times and divided by their
    ``max_concurrency``, it is the service's busy fraction; ``None`` (this
    body's own count is used) without a Directory, at the first evaluation,
    or with fewer than two instances."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        #: Service -> (when, instance id -> total handler ns).
        self.samples: dict[str, tuple[float, dict[str, int]]] = {}

    async def busy(self, body: Any, service: str, capacity: int) -> float | None:
        from cbs.kernel import Directory

        directory = body.capabilities.get(Directory)
        if directory is None:
            return None
        try:
            rows = await directory.list_cells()
        except Exception as exc:
            log.debug("autoscale %s: no directory: %s", service, exc)
            return None
        now = self.clock()
        totals: dict[str, int] = {}
        for row in rows:
            if row.get("service") != service:
                continue
            for instance, counts in (row.get("per_instance") or {}).items():
                ns = counts.get("processing_ns") if isinstance(counts, dict) else None
                if isinstance(ns, int):
                    totals[instance] = totals.get(instance, 0) + ns
        before = self.samples.get(service)
        self.samples[service] = (now, totals)
        if before is None or now <= before[0]:
            return None
        then, previous = before
        both = [i for i in totals if i in previous and totals[i] >= previous[i]]
        if len(both) < 2:
            return None
        in_flight = sum(totals[i] - previous[i] for i in both) / 1e9 / (now - then)
        return in_flight / (len(both) * max(capacity, 1))


async def _loop(runner: SpecRunner, engine: Engine) -> None:
    reconciler = runner.reconciler
    assert reconciler is not None
    while True:
        await asyncio.sleep(engine.policy.interval)
        current = reconciler.replicas.get(engine.service, engine.low)
        decision = engine.decide(current, await _signals(runner, engine.service))
        runner.decisions.append(decision)
        del runner.decisions[:-1000]
        if decision.changed:
            log.info(
                "autoscale %s: %d -> %d (%s)",
                decision.service,
                decision.current,
                decision.desired,
                decision.reason,
            )
            try:
                await reconciler.scale(engine.service, decision.desired)
            except Exception as exc:
                log.error(
                    "autoscale %s: scaling failed: %s: %s", engine.service, type(exc).__name__, exc
                )


def start_autoscaling(runner: SpecRunner) -> list[asyncio.Task[None]]:
    """One evaluation loop per service with a policy and a replica range."""
    tasks = []
    reconciler = runner.reconciler
    assert reconciler is not None
    for service, policy in runner.spec.autoscale.items():
        cells = [c for c in runner.spec.cells.values() if reconciler.service_of(c) == service]
        if not cells:
            log.warning("autoscale %s: no cell of the spec serves this service", service)
            continue
        engine = Engine(service, policy, cells[0].min_replicas, cells[0].max_replicas)
        runner.engines[service] = engine
        tasks.append(asyncio.ensure_future(_loop(runner, engine)))
    return tasks


def metrics_text(runner: SpecRunner) -> str:
    """The autoscaler's state in the Prometheus text format."""
    lines = [
        "# TYPE cbs_autoscale_replicas gauge",
        "# TYPE cbs_autoscale_decisions_total counter",
        "# TYPE cbs_autoscale_changes_total counter",
    ]
    reconciler = runner.reconciler
    for service, engine in sorted(runner.engines.items()):
        replicas = reconciler.replicas.get(service, engine.low) if reconciler else engine.low
        lines.append(f'cbs_autoscale_replicas{{service="{service}"}} {replicas}')
        lines.append(f'cbs_autoscale_decisions_total{{service="{service}"}} {engine.decisions}')
        lines.append(f'cbs_autoscale_changes_total{{service="{service}"}} {engine.changes}')
    return "\n".join(lines) + "\n"


class _Collector:
    """The autoscaler's state for a Prometheus registry (cbs-metrics)."""

    def __init__(self, runner: SpecRunner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        runner = self.runner
        replicas = GaugeMetricFamily(
            "cbs_autoscale_replicas", "Replicas the autoscaler asks for", labels=["service"]
        )
        decisions = CounterMetricFamily(
            "cbs_autoscale_decisions", "Autoscaling evaluations", labels=["service"]
        )
        changes = CounterMetricFamily(
            "cbs_autoscale_changes",
            "Autoscaling decisions that changed replicas",
            labels=["service"],
        )
        reconciler = runner.reconciler
        for service, engine in sorted(runner.engines.items()):
            n = reconciler.replicas.get(service, engine.low) if reconciler else engine.low
            replicas.add_metric([service], n)
            decisions.add_metric([service], engine.decisions)
            changes.add_metric([service], engine.changes)
        yield from (replicas, decisions, changes)


def export_metrics(runner: SpecRunner) -> Callable[[], None] | None:
    """Register the autoscaler's metrics in the body's cbs-metrics registry
    (when that plugin is there); returns how to unregister them."""
    try:
        from cbs.metrics import MetricsRegistry
    except ImportError:
        return None
    metrics = runner.body.capabilities.get(MetricsRegistry)
    if metrics is None:
        return None
    return metrics.add(lambda: _Collector(runner))
