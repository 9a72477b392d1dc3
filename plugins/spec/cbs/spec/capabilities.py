"""What this plugin needs from others, as typed capabilities.

:class:`~cbs.kernel.Scaler` (defined in the kernel, so that a process pool
provides it without knowing this plugin; re-exported here) makes the spec's
``replicas`` and its autoscaling policies reach real processes. Without it a
body serves one instance of each cell and logs that replicas need cbs-pool
(several instances of a cell in one process would share its one core), and
runs sidecars as its own child processes.

:class:`QueueDepth` tells how many durable requests of a verb wait; the
autoscaler reads it for the lag rule. The plugin offers one of its own on
NATS with JetStream (:class:`cbs.spec.signals.JetStreamDepth`); another
persistence plugin may offer its own.
"""

from __future__ import annotations

from cbs.kernel import Capability, Scaler

__all__ = ["Scaler", "QueueDepth"]


class QueueDepth(Capability):
    """Durable requests waiting for a verb (JetStream consumer ``num_pending``)."""

    provided_by = "cbs-spec on NATS with cbs-jetstream"

    async def pending(self, service: str, verb: str) -> int | None:
        """Requests stored and not yet delivered; ``None`` when unknown."""
        raise NotImplementedError
