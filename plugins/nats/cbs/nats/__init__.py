"""NATS transport for CBS (``cbs-nats``).

The entry point (:mod:`cbs.nats.plugin`) imports nothing heavy; the NATS client
is imported only when a body actually connects. Other plugins use the
connection through the typed capability :class:`NatsConnection`.
"""

from cbs.nats.capability import NatsConnection

__all__ = ["NatsConnection"]
