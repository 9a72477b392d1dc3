"""Probes of ``cbs chaos run``: traffic to one verb, measured.

A probe sends ``rate`` requests per second to ``target`` (``SERVICE.VERB``)
for ``window`` seconds, each with ``payload`` and a ``timeout``, and waits for
every reply. ``success_ratio`` is the share of successful replies (0 to 1);
``latency_p99`` the 99th percentile of the time to a reply, in seconds, over
every request (a failed one counts with the time it took to fail). Probes of
one check with the same traffic arguments share one measurement.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from cbs.contracts import CbsError, parse_subject

if TYPE_CHECKING:
    from cbs.chaos.runner import Run

__all__ = ["measure", "success_ratio", "latency_p99", "percentile"]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of ``values`` (``None`` if empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


async def measure(run: Run, arguments: dict[str, Any]) -> dict[str, Any]:
    service, verb = parse_subject(f"cbs.{arguments['target']}")
    payload = arguments.get("payload") or {}
    rate = float(arguments.get("rate", 10))
    window = float(arguments.get("window", 2))
    timeout = float(arguments.get("timeout", 1.0))
    schema = arguments.get("schema") or run.schema_of(service, verb)
    body = run.prober
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def one() -> None:
        began = time.monotonic()
        try:
            await body.request(service, verb, payload, schema=schema, timeout=timeout)
        except CbsError as exc:
            errors[exc.code] += 1
        except Exception as exc:  # anything else is a failure of the request too
            errors[type(exc).__name__] += 1
        latencies.append(time.monotonic() - began)

    count = max(1, round(rate * window))
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)
    sent = len(latencies)
    ok = sent - sum(errors.values())

    def seconds(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "target": f"{service}.{verb}",
        "sent": sent,
        "ok": ok,
        "errors": dict(sorted(errors.items())),
        "success_ratio": round(ok / sent, 4) if sent else 0.0,
        "latency_p50": seconds(percentile(latencies, 50)),
        "latency_p99": seconds(percentile(latencies, 99)),
        "latency_max": seconds(max(latencies, default=None)),
        "rate": rate,
        "window": window,
        "timeout": timeout,
    }


def success_ratio(measurement: dict[str, Any]) -> Any:
    return measurement["success_ratio"]


def latency_p99(measurement: dict[str, Any]) -> Any:
    return measurement["latency_p99"]
