"""Streams and consumers, created idempotently at every start.

``ensure_stream`` and ``ensure_consumer`` create what is missing, leave alone
what matches, update what differs in a field the plugin manages (keeping any
other field an operator set), and turn a refusal of the server into one
``ConfigError`` line naming the stream or consumer, the field and both values.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.manager import JetStreamManager

from cbs.jetstream.settings import (
    Settings,
    consumer_name,
    dlq_stream,
    dlq_subject,
    durable_subject,
    stream_name,
)
from cbs.kernel import ConfigError

__all__ = [
    "ensure_consumer",
    "ensure_stream",
    "inbox_config",
    "dlq_config",
    "requests_config",
    "STREAM_FIELDS",
    "CONSUMER_FIELDS",
]

log = logging.getLogger("cbs.jetstream")

#: The stream fields this plugin sets; others are left as they are.
STREAM_FIELDS = (
    "subjects",
    "storage",
    "retention",
    "discard",
    "max_age",
    "duplicate_window",
    "num_replicas",
)
#: The consumer fields this plugin sets.
CONSUMER_FIELDS = ("filter_subject", "ack_policy", "ack_wait", "max_deliver", "num_replicas")

_STREAM_EXISTS = 10058  # "stream name already in use with a different configuration"


def requests_config(service: str, settings: Settings) -> StreamConfig:
    """``CBS_{service}``: every durable request to the service, kept for
    ``max_age`` (limits retention, so that replay has something to read)."""
    return _stream(stream_name(service), durable_subject(service, "*"), settings)


def dlq_config(service: str, settings: Settings) -> StreamConfig:
    """``CBS_DLQ_{service}``: the service's dead letters."""
    return _stream(dlq_stream(service), dlq_subject(service, "*"), settings)


def _stream(name: str, subject: str, settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=name,
        subjects=[subject],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=settings.max_age,
        duplicate_window=settings.duplicate_window,
        num_replicas=settings.replicas,
    )


def inbox_config(service: str, verb: str, settings: Settings) -> ConsumerConfig:
    """The durable pull consumer ``CBS_{service}_{verb}`` shared by every
    instance (work-queue semantics: each message goes to one of them).
    ``max_deliver`` is unlimited on the server: the plugin counts deliveries
    itself and dead-letters a message after the last one (see inbox.py)."""
    name = consumer_name(service, verb)
    return ConsumerConfig(
        name=name,
        durable_name=name,
        filter_subject=durable_subject(service, verb),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait,
        max_deliver=-1,
        num_replicas=settings.replicas,
    )


def _same(field: str, have: Any, want: Any) -> bool:
    if field == "subjects":
        return sorted(have or []) == sorted(want or [])
    if isinstance(want, float) or isinstance(have, float):
        return have is not None and want is not None and math.isclose(have, want, rel_tol=1e-6)
    if hasattr(want, "value"):  # enums: compare their wire values
        want = want.value
    if hasattr(have, "value"):
        have = have.value
    return bool(have == want)


def _changes(have: Any, want: Any, fields: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    changes = []
    for field in fields:
        new = getattr(want, field)
        if new is None:
            continue
        old = getattr(have, field)
        if not _same(field, old, new):
            changes.append((field, _show(old), _show(new)))
    return changes


def _show(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def _describe(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{field} {old!r} -> {new!r}" for field, old, new in changes)


async def ensure_stream(jsm: JetStreamManager, want: StreamConfig) -> None:
    """Create ``want.name`` if missing; update it if a managed field differs;
    raise ``ConfigError`` when the server refuses either."""
    name = want.name
    try:
        info = await jsm.stream_info(name)  # type: ignore[arg-type]
    except nats.js.errors.NotFoundError:
        try:
            await jsm.add_stream(want)
            log.info("stream %s created (%s)", name, ", ".join(want.subjects or []))
            return
        except nats.js.errors.APIError as exc:
            if exc.err_code != _STREAM_EXISTS:  # else: created meanwhile by another process
                raise ConfigError(f"stream {name}: cannot create it: {exc.description}") from exc
        info = await jsm.stream_info(name)  # type: ignore[arg-type]
    changes = _changes(info.config, want, STREAM_FIELDS)
    if not changes:
        return
    updated = replace(info.config, **{field: getattr(want, field) for field, _, _ in changes})
    try:
        await jsm.update_stream(updated)
    except nats.js.errors.APIError as exc:
        raise ConfigError(
            f"stream {name}: the server refuses to change {_describe(changes)}: {exc.description}"
        ) from exc
    log.warning("stream %s updated: %s", name, _describe(changes))


async def ensure_consumer(jsm: JetStreamManager, stream: str, want: ConsumerConfig) -> None:
    """Create the durable consumer ``want.durable_name`` on ``stream`` if
    missing; update it if a managed field differs; ``ConfigError`` if refused."""
    name = want.durable_name
    assert name is not None
    try:
        info = await jsm.consumer_info(stream, name)
        changes = _changes(info.config, want, CONSUMER_FIELDS)
        if not changes:
            return
    except nats.js.errors.NotFoundError:
        changes = []
    try:
        await jsm.add_consumer(stream, want)  # creates, or updates in place
    except nats.js.errors.APIError as exc:
        what = f"change {_describe(changes)}" if changes else "create it"
        raise ConfigError(
            f"consumer {name} of stream {stream}: the server refuses to {what}: {exc.description}"
        ) from exc
    if changes:
        log.warning("consumer %s of stream %s updated: %s", name, stream, _describe(changes))
    else:
        log.info("consumer %s of stream %s created", name, stream)
