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
    from cbs.nats.cluster import ServerInfo
    from cbs.nats.stats import StatsTable
    from nats.aio.client import Client
    from nats.js import JetStreamContext

__all__ = ["NatsConnection"]

#: Called with no argument after each reconnect (subscriptions are restored).
ReconnectListener = Callable[[], Awaitable[None]]


class NatsConnection(Capability):
    """The body's NATS connection: the nats-py client, where it connects
    (URLs without credentials) and its connection events."""

    provided_by = "cbs-nats (with the nats transport)"

    def __init__(self, client: Client, url: str, stats: StatsTable | None = None) -> None:
        self.client = client
        #: The server URLs, comma-separated, without user, password or token.
        self.url = url
        #: Counters of each subject served on this connection, by subject
        #: (what discovery answers on ``$SRV.STATS``); the transport keeps them.
        self.stats: StatsTable = {} if stats is None else stats
        self._listeners: list[ReconnectListener] = []
        self._server: ServerInfo | None = None

    def jetstream(self, **kwargs: Any) -> JetStreamContext:
        """A JetStream context on this connection (``nc.jetstream(**kwargs)``)."""
        return self.client.jetstream(**kwargs)

    @property
    def reconnects(self) -> int:
        """How often the connection was re-established so far."""
        return int(self.client.stats["reconnects"])

    @property
    def connected_url(self) -> str:
        """The URL of the server the client is connected to now ("" if none)."""
        url = self.client.connected_url
        if url is None or not self.client.is_connected:
            return ""
        return f"{url.scheme}://{url.hostname}:{url.port}"

    @property
    def servers(self) -> list[str]:
        """Every server URL the client knows: the seeds and those the cluster
        announced (the client reconnects to any of them)."""
        return [f"{u.scheme}://{u.hostname}:{u.port}" for u in self.client.servers]

    async def server(self) -> ServerInfo:
        """Which server and cluster the connection is on now (its name,
        cluster name and the cluster's client URLs); read once per connection."""
        url = self.connected_url
        if self._server is None or self._server.url != url:
            from cbs.nats.cluster import server_info

            self._server = await server_info(url)
        return self._server

    async def stream_replicas(self) -> int:
        """Replicas for streams by default: 3 when the server is in a cluster
        of 3 or more servers, else 1 (docs/cluster.md)."""
        from cbs.nats.cluster import cluster_replicas

        return cluster_replicas(await self.server())

    def on_reconnected(self, listener: ReconnectListener) -> Callable[[], None]:
        """Call ``await listener()`` after every reconnect; returns an undo."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def reconnected(self) -> None:
        """Run the listeners (the transport calls this)."""
        self._server = None
        for listener in list(self._listeners):
            await listener()
