"""JetStream persistence for CBS (``cbs-jetstream``): durable sends and cell
inboxes, deduplication, retries with backoff, dead letters and replay.

The entry point (:mod:`cbs.jetstream.plugin`) imports nothing heavy; nats-py is
imported only when a body on the NATS transport starts. See docs/jetstream.md.

Public: :data:`DURABLE`, the endpoint option a cell sets
(``@cell.verb("write", schema=..., durable=True)``), and the hook spec
``cbs_jetstream_dead_lettered`` (:mod:`cbs.jetstream.hookspecs`).
"""

from cbs.jetstream.settings import DURABLE

__all__ = ["DURABLE"]
