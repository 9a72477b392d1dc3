"""What this plugin needs from others, as typed capabilities.

:class:`Scaler` is the contract a process pool (cbs-pool) provides so that
the spec's ``replicas`` and its autoscaling policies reach real processes: a
body offers one with ``body.capabilities.provide(MyScaler())``. Without it a
body serves one instance of each cell and logs that replicas need cbs-pool
(several instances of a cell in one process would share its one core), and
runs sidecars as its own child processes.

:class:`QueueDepth` tells how many durable requests of a verb wait; the
autoscaler reads it for the lag rule. The plugin offers one of its own on
NATS with JetStream (:class:`cbs.spec.signals.JetStreamDepth`); another
persistence plugin may offer its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from cbs.kernel import Capability

__all__ = ["Scaler", "QueueDepth"]


class Scaler(Capability):
    """Runs ``n`` instances of a service (or of a sidecar command).

    Contract: ``scale`` returns once the pool has started or stopped
    instances so that ``n`` serve (new instances subscribed, removed ones
    drained: no request may fail because of a scale); it is idempotent (the
    same ``n`` twice changes nothing) and may be called concurrently for
    different services. ``replicas`` is the number running now. A pool that
    cannot reach ``n`` raises ``cbs.kernel.ConfigError`` with one line.
    """

    provided_by = "a process pool (cbs-pool)"

    async def scale(self, service: str, n: int) -> int:
        """Make ``n`` instances of ``service`` serve; return how many do."""
        raise NotImplementedError

    def replicas(self, service: str) -> int:
        """How many instances of ``service`` serve now."""
        raise NotImplementedError

    async def scale_sidecar(self, name: str, command: Sequence[str], n: int) -> int:
        """Run ``n`` processes of ``command`` under ``name`` (0 stops them);
        a changed ``command`` replaces them (new ones first)."""
        raise NotImplementedError


class QueueDepth(Capability):
    """Durable requests waiting for a verb (JetStream consumer ``num_pending``)."""

    provided_by = "cbs-spec on NATS with cbs-jetstream"

    async def pending(self, service: str, verb: str) -> int | None:
        """Requests stored and not yet delivered; ``None`` when unknown."""
        raise NotImplementedError
