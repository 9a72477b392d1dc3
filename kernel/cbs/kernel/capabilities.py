"""Typed capabilities: how plugins offer each other what they have.

A plugin never looks at another plugin's name, options or private modules.
The provider publishes an object whose class derives from :class:`Capability`
(a transport does so from ``Bus.capabilities()``, any plugin with
``body.capabilities.provide(obj)``); the consumer asks for it by class::

    conn = body.capabilities.require(NatsConnection, needed_by="cbs-jetstream")

and gets the object, or a :class:`~cbs.kernel.PluginError` that names what
is missing and which plugin provides it. An object is found under its own
class and under every ``Capability`` base class it has, so a consumer can ask
for the general kind (:class:`Directory`) or a specific one.

The kinds every body may have are defined here: :class:`TransportState`
(what any transport tells about its connection), :class:`Directory` (who
serves what on a shared bus), :class:`DurableSender` (what
``Body.send`` hands requests to), :class:`Runner` (what serves
``cbs run`` instead of this process), :class:`SpecServer` (what serves
``cbs run SPEC``) and :class:`Scaler` (worker processes of a service).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from cbs.kernel.errors import PluginError

if TYPE_CHECKING:
    import argparse

    from cbs.contracts import Envelope
    from cbs.kernel.body import Body

__all__ = [
    "Capability",
    "Capabilities",
    "TransportState",
    "Directory",
    "DurableSender",
    "Runner",
    "Scaler",
    "SpecServer",
]

C = TypeVar("C", bound="Capability")


class Capability:
    """Base of every capability class. ``provided_by`` says, for error
    messages, what provides it (a distribution, a transport)."""

    provided_by: ClassVar[str] = "a plugin"


class TransportState(Capability):
    """The state of the body's connection to its bus. Every transport offers
    one; the defaults fit a bus that cannot lose its connection."""

    provided_by = "the transport"

    @property
    def receiving(self) -> bool:
        """Whether messages reach this body right now (connected, reading)."""
        return True

    @property
    def wrong_replies(self) -> int:
        """Replies dropped because they answered no request waiting for them."""
        return 0

    @property
    def malformed_messages(self) -> int:
        """Inbound messages dropped because they could not be parsed."""
        return 0

    @property
    def refused_requests(self) -> int:
        """Requests answered ``Unavailable`` at once because their verb had
        ``max_pending`` requests (or ``max_pending_bytes``) waiting already."""
        return 0

    def may_subscribe(self, subject: str, queue: str | None = None) -> bool:
        """Whether the bus would let this body subscribe to ``subject`` (in
        ``queue``): false only when the transport knows its identity may not
        (NATS permissions), so that a plugin can skip an optional responder
        instead of being refused."""
        return True


class Directory(Capability):
    """Who serves what on a shared bus (for ``cbs cells`` and ``cbs call``)."""

    provided_by = "a transport with discovery (cbs-nats on a shared NATS)"

    async def list_cells(self) -> list[dict[str, Any]]:
        """Every cell served on the bus, one row per cell id (the keys of
        ``cbs cells --json``; extra keys become extra columns)."""
        raise NotImplementedError

    async def endpoint_schema(self, service: str, verb: str) -> str | None:
        """The request schema that a serving cell advertises for the verb."""
        raise NotImplementedError


class DurableSender(Capability):
    """Stores requests durably for ``Body.send``."""

    provided_by = "a persistence plugin (cbs-jetstream on NATS)"

    async def send(self, envelope: Envelope, headers: dict[str, str]) -> None:
        """Return once ``envelope`` is stored (delivered at least once later)."""
        raise NotImplementedError

    async def send_many(self, envelopes: Sequence[Envelope], headers: dict[str, str]) -> None:
        """Return once every envelope is stored. This default sends them one
        by one; a sender that can have several in flight overrides it."""
        for envelope in envelopes:
            await self.send(envelope, dict(headers))


class Runner(Capability):
    """Runs ``cbs run`` in place of this process serving the cells itself
    (a supervisor of worker processes: cbs-pool). Offered from
    ``cbs_configured`` when its plugin's settings ask for it; ``cbs run``
    hands over to it before starting the body."""

    provided_by = "a supervisor plugin (cbs-pool with --workers)"

    async def run(self, body: Body, args: argparse.Namespace) -> int:
        """Serve the cells ``cbs run`` was given (``args.cells``, ``None``: all;
        ``args`` is its parsed command line) until SIGINT/SIGTERM; the exit code."""
        raise NotImplementedError


class SpecServer(Capability):
    """Serves ``cbs run SPEC``: a body described in a file (a deployment
    plugin: cbs-spec), started and kept in line with the file."""

    provided_by = "a deployment plugin (cbs-spec)"

    async def serve(self, body: Body, path: str) -> int:
        """Serve the spec at ``path`` on ``body`` until SIGINT/SIGTERM; the
        exit code. A bad spec raises an error of one line."""
        raise NotImplementedError


class Scaler(Capability):
    """Runs worker processes of a service (or of a sidecar command) beside
    this body: a process pool (cbs-pool) offers it, a deployment plugin
    (cbs-spec: ``replicas``, autoscaling) uses it.

    Contract: ``scale`` returns once ``n`` instances serve ``service``,
    this body's own instance included when it serves the service (so ``n``
    = 3 is the body and two workers): new ones subscribed, removed ones
    drained, no request may fail because of a scale. It is idempotent (the
    same ``n`` twice changes nothing) and may be called concurrently for
    different services. ``replicas`` is the number serving now. A pool
    that cannot reach ``n`` raises :class:`~cbs.kernel.ConfigError` with
    one line.
    """

    provided_by = "a process pool (cbs-pool)"

    async def scale(self, service: str, n: int) -> int:
        """Make ``n`` instances serve ``service``; return how many do."""
        raise NotImplementedError

    def replicas(self, service: str) -> int:
        """How many instances serve ``service`` now (this body's included)."""
        raise NotImplementedError

    async def scale_sidecar(self, name: str, command: Sequence[str], n: int) -> int:
        """Run ``n`` processes of ``command`` under ``name`` (0 stops them);
        a changed ``command`` replaces them (new ones first)."""
        raise NotImplementedError


class Capabilities:
    """The capabilities offered on one body, by class."""

    def __init__(self) -> None:
        self._by_kind: dict[type[Capability], tuple[Capability, str]] = {}

    def provide(self, value: Capability, *, plugin: str = "") -> None:
        """Offer ``value`` under its class and its ``Capability`` bases.
        A later offer of the same kind replaces the earlier one."""
        if not isinstance(value, Capability):
            raise PluginError(f"plugin '{plugin}': {type(value).__name__} is not a Capability")
        for kind in type(value).__mro__:
            if isinstance(kind, type) and issubclass(kind, Capability) and kind is not Capability:
                self._by_kind[kind] = (value, plugin)

    def withdraw(self, value: Capability) -> None:
        """Take back every kind ``value`` was offered under."""
        for kind in [k for k, (v, _) in self._by_kind.items() if v is value]:
            del self._by_kind[kind]

    def get(self, kind: type[C]) -> C | None:
        found = self._by_kind.get(kind)
        return None if found is None else found[0]  # type: ignore[return-value]

    def require(self, kind: type[C], *, needed_by: str) -> C:
        found = self.get(kind)
        if found is None:
            raise PluginError(
                f"{needed_by} needs {kind.__name__}, provided by {kind.provided_by};"
                " it is not available on this body"
            )
        return found

    def __contains__(self, kind: object) -> bool:
        return kind in self._by_kind

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """``(kind name, providing plugin)`` pairs, for listings."""
        for kind, (_, plugin) in self._by_kind.items():
            yield kind.__name__, plugin
