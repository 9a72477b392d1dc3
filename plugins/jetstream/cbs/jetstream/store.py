"""Reading stored envelopes back: replay and dead letters (``cbs replay``,
``cbs dlq``). Everything here works on a started body's runtime.

Stored messages are read through a short-lived ephemeral consumer (no acks,
memory storage) positioned by sequence or time. The range ends at the stream's
last sequence when the operation began, so what a replay publishes into the
same stream is never read back by that replay.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RawStreamMsg

from cbs.contracts import BadRequest, CbsError, Internal, NotFound, Timeout, Unavailable
from cbs.contracts.envelope import NAME_RE
from cbs.jetstream.inbox import (
    DELIVERIES_HEADER,
    ERROR_HEADER,
    STREAM_SEQ_HEADER,
    SUBJECT_HEADER,
)
from cbs.jetstream.publish import publish_stored
from cbs.jetstream.runtime import JetStreamRuntime
from cbs.jetstream.settings import (
    DLQ_PREFIX,
    dlq_stream,
    dlq_subject,
    durable_subject,
    stream_name,
)

__all__ = [
    "Range",
    "ReplayResult",
    "stored",
    "replay",
    "dlq_list",
    "dlq_show",
    "dlq_retry",
    "dlq_purge",
    "REPLAY_HEADER",
    "RETRY_HEADER",
]

log = logging.getLogger("cbs.jetstream")

#: On a replayed copy: the stream sequence of the original.
REPLAY_HEADER = "Cbs-Replay-Of"
#: On a retried dead letter: its sequence in the dead-letter stream.
RETRY_HEADER = "Cbs-Retry-Of"

_FETCH = 256


@attrs.frozen
class Range:
    """Which stored messages: from a sequence or a time (inclusive; default:
    the first), up to a sequence or a time (inclusive; default: the last one
    stored when the read began)."""

    from_seq: int | None = None
    since: datetime | None = None
    to_seq: int | None = None
    until: datetime | None = None


def _caller_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The headers a sender set (trace context, ...), without JetStream's and ours."""
    return {k: v for k, v in (headers or {}).items() if not k.startswith(("Nats-", "Cbs-"))}


def _envelope_id(data: bytes | None, fallback: str) -> str:
    try:
        found = orjson.loads(data or b"").get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return fallback
    return found if isinstance(found, str) else fallback


def _iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: JetStream API error codes (``err_code``) that mean "no such thing".
_NO_STREAM = 10059  # stream not found
#: no message found, sequence not found, message delete failed
_NO_MESSAGE = frozenset({10037, 10043, 10057})


def _check_service(service: str) -> None:
    if NAME_RE.fullmatch(service) is None:
        raise BadRequest(f"Service name {service!r} must be lower snake_case")


@contextlib.contextmanager
def _jetstream(what: str, missing: str | None = None) -> Iterator[None]:
    """Turn a NATS or JetStream failure of ``what`` into a one-line
    :class:`CbsError`: ``missing`` (a :class:`NotFound` message) for a stream
    or message that does not exist; never the raw NATS error."""
    try:
        yield
    except CbsError:
        raise
    except nats.js.errors.APIError as exc:
        code, status = exc.err_code, exc.code
        if missing is not None and (code == _NO_STREAM or code in _NO_MESSAGE or status == 404):
            raise NotFound(missing) from None
        if status == 404:
            raise NotFound(f"JetStream found nothing to {what}") from None
        if status == 400:
            raise BadRequest(f"JetStream refused to {what} (error {code})") from None
        if status == 503:
            raise Unavailable(f"JetStream is unavailable: cannot {what}") from None
        raise Internal(f"JetStream failed to {what} (error {code})") from None
    except nats.errors.TimeoutError:
        raise Timeout(f"JetStream did not answer: cannot {what}") from None
    except (nats.errors.ConnectionClosedError, nats.errors.NoRespondersError):
        raise Unavailable(f"JetStream is not reachable: cannot {what}") from None


async def stored(
    rt: JetStreamRuntime, stream: str, subject: str, where: Range = Range()
) -> AsyncGenerator[Msg, None]:
    """The messages of ``stream`` on ``subject`` (wildcards allowed) in
    ``where``, in order. Use with ``contextlib.aclosing``."""
    jsm = rt.jsm
    with _jetstream(f"read {stream}", f"No stream {stream}: nothing stored there yet"):
        info = await jsm.stream_info(stream)
    last = info.state.last_seq
    end = last if where.to_seq is None else min(where.to_seq, last)
    start = max(where.from_seq or 1, info.state.first_seq)
    if info.state.messages == 0 or start > end:
        return
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        filter_subject=subject,
        inactive_threshold=30.0,
        mem_storage=True,
        num_replicas=1,
        max_deliver=1,
    )
    if where.since is not None:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = where.since
    else:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start
    with _jetstream(f"read {stream}"):
        consumer = await jsm.add_consumer(stream, config)
    sub = None
    try:
        if not consumer.num_pending:
            return
        with _jetstream(f"read {stream}"):
            sub = await rt.js.pull_subscribe_bind(consumer=consumer.name, stream=stream)
        while True:
            try:
                msgs = await sub.fetch(_FETCH, timeout=5.0)
            except nats.errors.TimeoutError:
                return
            except (nats.errors.Error, nats.js.errors.Error):
                raise Unavailable(f"JetStream stopped answering while reading {stream}") from None
            for msg in msgs:
                meta = msg.metadata
                if meta.sequence.stream > end:
                    return
                if where.until is not None and meta.timestamp > where.until:
                    return
                if meta.sequence.stream >= start:
                    yield msg
                if meta.sequence.stream >= end or meta.num_pending == 0:
                    return
    finally:
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await jsm.delete_consumer(stream, consumer.name)


# -- replay ------------------------------------------------------------------------------


@attrs.frozen
class ReplayResult:
    replayed: list[tuple[int, str]]  # (stream sequence, envelope id), in order
    duplicates: int  # copies the stream already had (a replay repeated by its run id)
    target: str  # the subject(s) published to


async def replay(
    rt: JetStreamRuntime,
    service: str,
    where: Range = Range(),
    *,
    verb: str | None = None,
    to: str | None = None,
    dry_run: bool = False,
) -> ReplayResult:
    """Re-deliver the stored requests of ``service`` (one verb, or all) in
    ``where``, in stream order.

    By default each is published again to its durable subject
    (``cbsd.{service}.{verb}``) and so goes through the normal durable path:
    stored, delivered to one instance, retried, dead-lettered. The copy keeps
    the envelope (same id) and the sender's headers, gets a fresh
    ``Nats-Msg-Id`` (``{envelope id}.replay.{sequence}.{run}``) and the header
    ``Cbs-Replay-Of: {sequence}``. With ``to``, the envelope bytes go to that
    subject instead: through JetStream (with a PubAck) if a stream captures
    it, else as a plain NATS publish.
    """
    subject = durable_subject(service, verb or "*")
    run = os.urandom(4).hex()  # a new run re-delivers even inside the window
    to_stream = False
    if to is not None and not dry_run:
        try:
            await rt.jsm.find_stream_name_by_subject(to)
            to_stream = True
        except nats.js.errors.NotFoundError:
            to_stream = False
    replayed: list[tuple[int, str]] = []
    duplicates = 0
    async with contextlib.aclosing(stored(rt, stream_name(service), subject, where)) as msgs:
        async for msg in msgs:
            seq = msg.metadata.sequence.stream
            ident = _envelope_id(msg.data, f"seq-{seq}")
            replayed.append((seq, ident))
            if dry_run:
                continue
            headers = _caller_headers(msg.headers)
            headers["Nats-Msg-Id"] = f"{ident}.replay.{seq}.{run}"
            headers[REPLAY_HEADER] = str(seq)
            if to is not None and not to_stream:
                await rt.nc.publish(to, msg.data, headers=headers)
                continue
            ack = await publish_stored(
                rt.js, to or msg.subject, msg.data, headers, timeout=rt.settings.publish_timeout
            )
            duplicates += bool(ack.duplicate)
    if to is not None and not to_stream and not dry_run:
        await rt.nc.flush()
    return ReplayResult(replayed, duplicates, to or subject)


# -- dead letters ------------------------------------------------------------------------


def _dead_letter(
    seq: int,
    subject: str,
    data: bytes | None,
    headers: Mapping[str, str] | None,
    time: datetime | None,
) -> dict[str, Any]:
    headers = headers or {}
    try:
        reply = orjson.loads(headers.get(ERROR_HEADER, "{}"))
    except orjson.JSONDecodeError:
        reply = {}
    error = reply.get("error") if isinstance(reply, dict) else None
    try:
        request: Any = orjson.loads(data or b"")
    except orjson.JSONDecodeError:
        request = (data or b"").decode("utf-8", "replace")
    return {
        "seq": seq,
        "time": _iso(time),
        "verb": subject.rsplit(".", 1)[-1],
        "id": _envelope_id(data, ""),
        "deliveries": int(headers.get(DELIVERIES_HEADER, "0") or 0),
        "stream_seq": int(headers.get(STREAM_SEQ_HEADER, "0") or 0),
        "subject": headers.get(SUBJECT_HEADER, ""),
        "error": error or {},
        "request": request,
        "error_reply": reply,
        "headers": dict(headers),
    }


async def dlq_list(rt: JetStreamRuntime, service: str) -> list[dict[str, Any]]:
    """Every dead letter of ``service``, oldest first (no stream yet: none)."""
    _check_service(service)
    entries = []
    try:
        async with contextlib.aclosing(
            stored(rt, dlq_stream(service), dlq_subject(service, "*"))
        ) as msgs:
            async for msg in msgs:
                meta = msg.metadata
                entries.append(
                    _dead_letter(
                        meta.sequence.stream, msg.subject, msg.data, msg.headers, meta.timestamp
                    )
                )
    except NotFound:
        return []
    return entries


def _missing(service: str, seqs: list[int], outcome: str = "") -> NotFound:
    which = ", ".join(map(str, seqs))
    noun = "dead letter" if len(seqs) == 1 else "dead letters"
    return NotFound(f"No {noun} {which} for service {service}{outcome}", details={"missing": seqs})


async def _get(rt: JetStreamRuntime, service: str, seq: int) -> RawStreamMsg | None:
    """Dead letter ``seq`` of ``service``, or ``None`` if there is none."""
    try:
        with _jetstream(f"read dead letter {seq} of {service}", "missing"):
            return await rt.jsm.get_msg(dlq_stream(service), seq)
    except NotFound:
        return None


async def _get_all(
    rt: JetStreamRuntime, service: str, seqs: list[int], outcome: str
) -> list[tuple[int, RawStreamMsg]]:
    """The dead letters ``seqs`` (duplicates once, in order) with their
    sequences, or ``NotFound`` naming every missing one."""
    seqs = list(dict.fromkeys(seqs))
    found = [(seq, await _get(rt, service, seq)) for seq in seqs]
    missing = [seq for seq, msg in found if msg is None]
    if missing:
        raise _missing(service, missing, outcome)
    return [(seq, msg) for seq, msg in found if msg is not None]


async def dlq_show(rt: JetStreamRuntime, service: str, seq: int) -> dict[str, Any]:
    """One dead letter, with the request envelope, the error reply and all headers."""
    _check_service(service)
    [(_, msg)] = await _get_all(rt, service, [seq], "")
    return _dead_letter(seq, msg.subject or "", msg.data, msg.headers, msg.time)


async def _delete(rt: JetStreamRuntime, service: str, seq: int) -> None:
    with _jetstream(
        f"delete dead letter {seq} of {service}",
        f"Dead letter {seq} for service {service} was removed meanwhile",
    ):
        await rt.jsm.delete_msg(dlq_stream(service), seq)


async def dlq_retry(
    rt: JetStreamRuntime, service: str, seqs: list[int] | None = None
) -> list[tuple[int, str]]:
    """Deliver dead letters again (those of ``seqs``, or all): each is stored
    again on its durable subject, with fresh deliveries, then removed from the
    dead letters. Returns (dead-letter sequence, envelope id) of each.

    With ``seqs``, every one must exist: if one is missing, ``NotFound`` names
    them all and nothing is retried."""
    _check_service(service)
    letters: list[tuple[int, str, bytes | None, Mapping[str, str] | None]] = []
    if seqs is None:
        with contextlib.suppress(NotFound):  # no stream: nothing to retry
            async with contextlib.aclosing(
                stored(rt, dlq_stream(service), dlq_subject(service, "*"))
            ) as msgs:
                async for msg in msgs:
                    seq = msg.metadata.sequence.stream
                    letters.append((seq, msg.subject, msg.data, msg.headers))
    else:
        for seq, raw in await _get_all(rt, service, seqs, ": nothing retried"):
            letters.append((seq, raw.subject or "", raw.data, raw.headers))
    done = []
    for seq, subject, data, headers in letters:
        prefix, _, verb = subject.rpartition(".")
        if prefix != f"{DLQ_PREFIX}.{service}" or not data:
            log.warning("dead letter %d of %s has an unexpected subject %s", seq, service, subject)
            continue
        ident = _envelope_id(data, f"dlq-{seq}")
        out = _caller_headers(headers)
        out["Nats-Msg-Id"] = f"{ident}.retry.{seq}"
        out[RETRY_HEADER] = str(seq)
        with _jetstream(f"store dead letter {seq} of {service} again"):
            await rt.ensure_service(service)
            await publish_stored(
                rt.js,
                durable_subject(service, verb),
                data,
                out,
                timeout=rt.settings.publish_timeout,
            )
        await _delete(rt, service, seq)
        done.append((seq, ident))
    return done


async def dlq_purge(rt: JetStreamRuntime, service: str, seqs: list[int] | None = None) -> int:
    """Remove dead letters (those of ``seqs``, or all); returns how many.

    With ``seqs``, every one must exist: if one is missing, ``NotFound`` names
    them all and nothing is removed."""
    _check_service(service)
    stream = dlq_stream(service)
    if seqs is None:
        try:
            with _jetstream(f"purge {stream}", "missing"):
                info = await rt.jsm.stream_info(stream)
        except NotFound:
            return 0
        with _jetstream(f"purge {stream}"):
            await rt.jsm.purge_stream(stream)
        return info.state.messages
    letters = await _get_all(rt, service, seqs, ": nothing purged")
    for seq, _ in letters:
        await _delete(rt, service, seq)
    return len(letters)
