"""Names, durations and settings of the JetStream plugin. Imports no NATS
client, so the entry point stays fast.

Subject space (beside request/reply on ``cbs.{service}.{verb}``):

=========================  ==========================  ===========================
what                       subject                     stream / consumer
=========================  ==========================  ===========================
durable request            ``cbsd.{service}.{verb}``   ``CBS_{service}``
dead letter                ``cbsdlq.{service}.{verb}`` ``CBS_DLQ_{service}``
a durable verb's inbox     (filter of the consumer)    ``CBS_{service}_{verb}``
=========================  ==========================  ===========================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from cbs.contracts import Cell, Endpoint
from cbs.contracts.envelope import NAME_RE
from cbs.kernel import ConfigError, EndpointOption

__all__ = [
    "DURABLE_PREFIX",
    "DLQ_PREFIX",
    "Settings",
    "backoff_delay",
    "consumer_name",
    "dlq_stream",
    "dlq_subject",
    "durable_subject",
    "durable_verbs",
    "parse_duration",
    "parse_durable",
    "parse_time",
    "stream_name",
]

DURABLE_PREFIX = "cbsd"
DLQ_PREFIX = "cbsdlq"


def durable_subject(service: str, verb: str) -> str:
    """``cbsd.{service}.{verb}``: where ``Body.send`` stores a request."""
    return f"{DURABLE_PREFIX}.{service}.{verb}"


def dlq_subject(service: str, verb: str) -> str:
    """``cbsdlq.{service}.{verb}``: where a dead letter of that verb is stored."""
    return f"{DLQ_PREFIX}.{service}.{verb}"


def stream_name(service: str) -> str:
    return f"CBS_{service}"


def dlq_stream(service: str) -> str:
    return f"CBS_DLQ_{service}"


def consumer_name(service: str, verb: str) -> str:
    """The durable consumer shared by every instance serving that verb."""
    return f"CBS_{service}_{verb}"


# -- durations and times ------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m|h|d|w)?\s*")


def parse_duration(text: str) -> float:
    """``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``, ``"7d"``, ``"1w"`` or a plain
    number of seconds -> seconds."""
    found = _DURATION_RE.fullmatch(text)
    if found is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 2m, 1h, 7d)")
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (no zone: local time) or a duration ago (``10m``,
    ``2h``) -> an aware UTC datetime."""
    now = now or datetime.now(UTC)
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (ISO 8601 like 2026-11-27T10:00:00Z, or 10m / 2h ago)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as a person typing it means
    return moment.astimezone(UTC)


# -- durable verbs ------------------------------------------------------------------------


def parse_durable(spec: str | None) -> frozenset[tuple[str, str]]:
    """``"printer.write, greeter.*"`` -> ``{("printer", "write"), ("greeter", "*")}``."""
    found: set[tuple[str, str]] = set()
    for item in (spec or "").replace(" ", ",").split(","):
        if not item:
            continue
        service, _, verb = item.partition(".")
        if NAME_RE.fullmatch(service) is None or (verb != "*" and NAME_RE.fullmatch(verb) is None):
            raise ConfigError(
                f"bad value for durable: {item!r} (expected SERVICE.VERB or SERVICE.*,"
                " comma-separated)"
            )
        found.add((service, verb))
    return frozenset(found)


#: The endpoint option a cell sets to serve a verb from a durable inbox too:
#: ``@cell.verb("write", schema=..., durable=True)``.
DURABLE = EndpointOption(
    "durable", bool, False, help="also serve Body.send deliveries from a JetStream inbox"
)


def durable_verbs(cell: Cell, configured: frozenset[tuple[str, str]]) -> list[Endpoint]:
    """The endpoints of ``cell`` served from a durable inbox: declared with
    ``durable=True`` or named by the ``durable`` option."""
    service = cell.service
    every = (service, "*") in configured
    return [e for e in cell.endpoints if DURABLE.of(e) or every or (service, e.verb) in configured]


# -- settings ------------------------------------------------------------------------------


def backoff_delay(deliveries: int, base: float, cap: float) -> float:
    """Delay before the next delivery after ``deliveries`` failed ones:
    ``min(base * 2 ** (deliveries - 1), cap)``."""
    return min(base * 2.0 ** max(deliveries - 1, 0), cap)


@attrs.frozen
class Settings:
    """The plugin's resolved options (see ``cbs_add_options`` in plugin.py)."""

    durable: frozenset[tuple[str, str]] = frozenset()
    max_deliveries: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0
    ack_wait: float = 30.0
    max_age: float = 7 * 86400.0
    duplicate_window: float = 120.0
    #: Replicas of streams and consumers; ``None``: 3 on a cluster of 3 or
    #: more servers, else 1 (``NatsConnection.stream_replicas``).
    replicas: int | None = None
    batch: int = 256
    concurrency: int | None = None
    publish_timeout: float = 10.0
    #: Durable deliveries are deduplicated by envelope id for this long (0: off).
    dedup_window: float = 120.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        def number(name: str, minimum: float) -> float:
            value = float(config[name])
            if value < minimum:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"bad value for {flag}: {value:g} (must be >= {minimum:g})")
            return value

        concurrency = config.get("jetstream_concurrency")
        dedup = config.get("jetstream_dedup_window")
        settings = cls(
            durable=parse_durable(config.get("durable")),
            max_deliveries=int(number("jetstream_max_deliveries", 1)),
            backoff=number("jetstream_backoff", 0.001),
            backoff_max=number("jetstream_backoff_max", 0.001),
            ack_wait=number("jetstream_ack_wait", 0.1),
            max_age=number("jetstream_max_age", 1.0),
            duplicate_window=number("jetstream_duplicate_window", 0.1),
            replicas=(
                None
                if config.get("jetstream_replicas") is None
                else int(number("jetstream_replicas", 1))
            ),
            batch=int(number("jetstream_batch", 1)),
            concurrency=None if concurrency is None else int(number("jetstream_concurrency", 1)),
            publish_timeout=number("jetstream_publish_timeout", 0.1),
            dedup_window=(
                number("jetstream_duplicate_window", 0.1)
                if dedup is None
                else number("jetstream_dedup_window", 0.0)
            ),
        )
        if settings.duplicate_window > settings.max_age:
            raise ConfigError(
                f"bad value for --jetstream-duplicate-window: {settings.duplicate_window:g} s"
                f" is longer than --jetstream-max-age ({settings.max_age:g} s)"
            )
        return settings

    def delay(self, deliveries: int) -> float:
        return backoff_delay(deliveries, self.backoff, self.backoff_max)
