"""What the ``nats`` transport offers other plugins: :class:`NatsConnection`.

Ask for it by type on a started body::

    from cbs.nats import NatsConnection

    conn = body.capabilities.require(NatsConnection, needed_by="cbs-jetstream")
    js = conn.jetstream(timeout=5.0)

Present only while the body's transport is ``nats`` and connected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from cbs.kernel import Capability

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

__all__ = ["NatsConnection"]

#: Called with no argument after each reconnect (subscriptions are restored).
ReconnectListener = Callable[[], Awaitable[None]]


class NatsConnection(Capability):
    """The body's NATS connection: the nats-py client, where it connects
    (URLs without credentials) and its connection events."""

    provided_by = "cbs-nats (with the nats transport)"

    def __init__(self, client: Client, url: str) -> None:
        self.client = client
        #: The server URLs, comma-separated, without user, password or token.
        self.url = url
        self._listeners: list[ReconnectListener] = []

    def jetstream(self, **kwargs: Any) -> JetStreamContext:
        """A JetStream context on this connection (``nc.jetstream(**kwargs)``)."""
        return self.client.jetstream(**kwargs)

    @property
    def reconnects(self) -> int:
        """How often the connection was re-established so far."""
        return int(self.client.stats["reconnects"])

    def on_reconnected(self, listener: ReconnectListener) -> Callable[[], None]:
        """Call ``await listener()`` after every reconnect; returns an undo."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def reconnected(self) -> None:
        """Run the listeners (the transport calls this)."""
        for listener in list(self._listeners):
            await listener()
