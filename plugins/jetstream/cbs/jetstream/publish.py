"""Publishing into a stream, at least once: retry until a PubAck or a deadline.

Every retry carries the same ``Nats-Msg-Id``, so a message whose first
attempt was stored but whose PubAck was lost (a server killed at the wrong
moment, a reconnect) is stored once, as long as the retry comes inside the
stream's duplicate window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import nats.errors
import nats.js.errors
from nats.js.api import PubAck
from nats.js.client import JetStreamContext

from cbs.contracts import Timeout, Unavailable

__all__ = ["publish_stored", "GONE", "RETRYABLE"]

log = logging.getLogger("cbs.jetstream")

#: The connection is closed, draining or has no room: nothing was sent.
GONE: tuple[type[Exception], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
)
#: Worth another attempt with the same message id.
RETRYABLE: tuple[type[Exception], ...] = (
    *GONE,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)
#: Longest single attempt: a lost PubAck is retried after this.
ATTEMPT = 2.0


async def publish_stored(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    on_no_stream: Callable[[], Awaitable[None]] | None = None,
) -> PubAck:
    """Publish and wait for the PubAck, retrying with the same headers (and so
    the same ``Nats-Msg-Id``) until ``timeout`` seconds have passed.

    ``on_no_stream`` runs before a retry when no stream took the message (it
    can create the stream again). Raises ``Timeout`` when no PubAck came in
    time (the message may or may not be stored: retry with the same id) and
    ``Unavailable`` when the server refused the message.
    """
    deadline = time.monotonic() + timeout
    hdrs = headers if isinstance(headers, dict) else dict(headers)
    pause = 0.05
    attempts = 0
    while True:
        attempts += 1
        left = deadline - time.monotonic()
        try:
            return await js.publish(
                subject, data, timeout=max(min(left, ATTEMPT), 0.01), headers=hdrs
            )
        except RETRYABLE as exc:
            error: Exception = exc
        except nats.js.errors.APIError as exc:
            raise Unavailable(
                f"JetStream refused the message on {subject}: {exc.description}"
            ) from None
        if time.monotonic() + pause >= deadline:
            raise Timeout(
                f"No PubAck for {subject} within {timeout:g} s ({attempts} attempts,"
                f" last: {type(error).__name__}); retry with the same id"
            ) from error
        log.debug("publish on %s: %s; retrying", subject, type(error).__name__)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)
        if on_no_stream is not None and isinstance(
            error, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError
        ):
            try:
                await on_no_stream()
            except Exception as exc:  # the server may still be starting
                log.debug("re-creating the stream for %s failed: %s", subject, exc)
