"""A flush that means what it says: every command before it has reached the server.

nats-py 2.16's ``flush()`` sends its PING straight to the socket
(``Client._send_ping`` writes to the transport), while commands queued just
before it (a SUB, an UNSUB, a PUB) wait in the client's pending buffer for the
flusher task. The PING can overtake them: the server answers PONG before it
has seen the SUB, ``flush()`` returns, and a message published right after by
another connection finds no interest. CBS relies on that flush (a cell is
served once ``serve`` returns); so did tests that saw, now and then, a
subscriber miss every message sent after its subscribe and flush.

:class:`OrderedPing` queues the PING behind what is pending, as the Go and
Java clients do, so the PONG comes after the server has handled all of it.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

__all__ = ["OrderedPing"]

_PING = b"PING\r\n"


class OrderedPing(Client):
    """nats-py's client whose PINGs (``flush``, ``rtt``, the keep-alive) are
    queued behind the commands already pending."""

    async def _send_ping(self, future: asyncio.Future[bool] | None = None) -> None:
        if future is None:
            future = asyncio.get_running_loop().create_future()
        self._pongs.append(future)
        await self._send_command(_PING)
        await self._flush_pending()
